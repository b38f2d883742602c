"""The decoding modes of ``amapo.model.generate`` (its KV cache: ``cache_options``), as names only.

Torch-free, so the options of ``amapo generate`` and ``amapo make-pairs`` list and check them before torch loads;
in the model library, below every command, so neither command imports the other's package for them.
"""

DECODINGS = ("auto", "static", "dynamic")
