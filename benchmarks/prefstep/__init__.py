"""The pieces of ``benchmarks/preference_step.py``, the preference-step benchmark (amapo vs TRL vs Liger).

What runs and every measurement rule are in ``preference_step.py``'s docstring; that file also keeps the command
line and the parent loop. Here, in the order a run uses them:

* ``common``: the constants every part shares (frameworks, loss settings, model shape, paths), small helpers;
* ``data``: the work folder's tokenizer, model and preference pairs; token counts per step; model FLOPs;
* ``measure``: step timing, what each collated batch holds, RSS, the peak matmul throughput, the machine;
* ``frameworks``: one training run per implementation (amapo, TRL CPO / DPO, the Liger loop);
* ``workers``: a worker process: the loss check, the dispatch to a framework, the result line it prints;
* ``setup_only``: ``--rehearse``'s workers: an entry this machine cannot run, run up to its first step;
* ``runner``: the parent's side of that protocol: the worker command line, its environment, reading its result;
* ``plan``: which lengths, rounds and frameworks run in which order (``--plan``), and the time budget;
* ``report``: per-framework summaries (medians, peaks, MFU), the markdown tables, the memory headroom;
* ``profile``: ``torch.profiler`` around two steps and the trace cut into categories (``gpu_profile.py``).
"""
