"""The data path: load preference pairs in any common format, tokenize them safely, batch them.

    from amapo.data import PreferenceCollator, load_preference_dataset, tokenize_dataset
    pairs = load_preference_dataset("pairs.jsonl", split="train[:90%]")      # prompt / chosen / rejected
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=1024, max_prompt_length=512)
    batch = PreferenceCollator(tokenizer.pad_token_id)([tokenized[0], tokenized[1]])  # input_ids [4, T], ...

Modules: ``formats`` (format detection, column mapping), ``pairs`` (checks and conversions of one pair),
``loading`` (files, folders, Hub), ``chat`` (chat templates), ``tokenization`` (ids, seam, EOS, BOS),
``truncation`` (fitting max_length), ``collator`` (the [2B, T] batch), ``errors`` (DataError), ``reading``
(local JSON / JSONL rows, every error with file and line), ``json_table`` (those rows as a Dataset, typed from
every row), ``precheck`` (a file's rows checked before anything heavy loads).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use, so the light modules (pairs, reading, precheck) need no torch/datasets
_EXPORTS = {
    "TRUNCATION_MODES": "amapo.data.truncation",
    "DataError": "amapo.data.errors",
    "PreferenceCollator": "amapo.data.collator",
    "load_preference_dataset": "amapo.data.loading",
    "standardize_preference_dataset": "amapo.data.formats",
    "tokenize_dataset": "amapo.data.tokenization",
    "tokenize_pair": "amapo.data.tokenization",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'amapo.data' has no attribute {name!r}")
