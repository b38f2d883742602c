"""``amapo generate``: a model's answers to AlpacaEval 2, Arena-Hard or MT-Bench questions, written in the format
each benchmark's own judge reads, unchanged.

* ``questions``: read a question file in its published schema and tell the benchmark from it;
* ``formats``: one answer row per question, as each benchmark's answer generator writes it;
* ``prompts``: each conversation through the chat template, checked before the model loads, answered turn by turn;
* ``answers``: the answer file: what it already holds (a rerun resumes) and writing a batch so a kill loses at most
  that batch;
* ``settings``: the sampling defaults of each benchmark and the settings file recorded beside the answers;
* ``judges``: the judge's commands to run next;
* ``run``: the command's options (``GenerateConfig``) and ``run_generate``.

Judging calls a paid API (OpenAI) and stays outside amapo.
"""
