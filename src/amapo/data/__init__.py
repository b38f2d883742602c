"""The data path: load preference pairs in any common format, tokenize them safely, batch them.

    from amapo.data import PreferenceCollator, load_preference_dataset, tokenize_dataset
    pairs = load_preference_dataset("pairs.jsonl", split="train[:90%]")      # prompt / chosen / rejected
    tokenized = tokenize_dataset(pairs, tokenizer, max_length=1024, max_prompt_length=512)
    batch = PreferenceCollator(tokenizer.pad_token_id)([tokenized[0], tokenized[1]])  # input_ids [4, T], ...

Modules: ``formats`` (format detection, column mapping), ``pairs`` (checks and conversions of one pair),
``loading`` (files, folders, Hub), ``chat`` (chat templates), ``tokenization`` (ids, seam, EOS, BOS),
``truncation`` (fitting max_length), ``collator`` (the [2B, T] batch), ``errors`` (DataError).
"""

from amapo.data.collator import PreferenceCollator
from amapo.data.errors import DataError
from amapo.data.formats import standardize_preference_dataset
from amapo.data.loading import load_preference_dataset
from amapo.data.tokenization import tokenize_dataset, tokenize_pair
from amapo.data.truncation import TRUNCATION_MODES

__all__ = [
    "TRUNCATION_MODES",
    "DataError",
    "PreferenceCollator",
    "load_preference_dataset",
    "standardize_preference_dataset",
    "tokenize_dataset",
    "tokenize_pair",
]
