"""``amapo make-pairs``: on-policy preference pairs, as SimPO's and the paper's Instruct settings train on.

* ``prompts``: the prompts of any source ``amapo train`` reads, deduplicated, in the form training renders them;
* ``sampling``: K answers per prompt from the policy (``transformers`` or vLLM), one seeded stream per answer;
* ``rewards``: a score per answer: a sequence-classification reward model, pairwise comparisons, or the built-in
  task's true reward;
* ``selection``: best answer chosen, worst rejected; ties and empty answers give no pair (counted);
* ``shards``: the run's work in shards beside the output, so a rerun continues it;
* ``run``: the command's options (``MakePairsConfig``) and ``run_make_pairs``.
"""
