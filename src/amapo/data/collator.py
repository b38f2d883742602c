"""Batch tokenized pairs so that chosen and rejected go through one forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class PreferenceCollator:
    """B tokenized pairs -> one [2B, T] batch: rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected.

    Returns

    * ``input_ids`` (long [2B, T]): right-padded with ``pad_token_id`` to the longest of the 2B rows;
    * ``attention_mask`` (long [2B, T]): 1 on real tokens, 0 on padding;
    * ``response_mask`` (bool [2B, T]): True exactly where ``input_ids`` holds a response token (EOS
      included), i.e. the tokens whose log-probs the loss sums. The trainer shifts: ``logits[:, t - 1]``
      predicts ``input_ids[:, t]``; a response never starts at t = 0 because every prompt has a token;
    * one float32 [B] tensor per name in ``extra_columns`` (e.g. ``offset``, ``ref_chosen_logps``).

    The pad id only fills positions that the masks exclude; any id the embedding accepts would do.
    """

    def __init__(self, pad_token_id: int, extra_columns: Sequence[str] = ()) -> None:
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: set tokenizer.pad_token (e.g. to tokenizer.eos_token)")
        self.pad_token_id = int(pad_token_id)
        self.extra_columns = tuple(extra_columns)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("PreferenceCollator got an empty batch")
        sequences, prompt_lengths = [], []
        for response in ("chosen_input_ids", "rejected_input_ids"):
            for feature in features:
                prompt = list(feature["prompt_input_ids"])
                sequences.append(prompt + list(feature[response]))
                prompt_lengths.append(len(prompt))
        width = max(len(seq) for seq in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        response_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for i, (seq, prompt_length) in enumerate(zip(sequences, prompt_lengths, strict=True)):
            input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[i, : len(seq)] = 1
            response_mask[i, prompt_length : len(seq)] = True
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
        for name in self.extra_columns:
            missing = [i for i, feature in enumerate(features) if feature.get(name) is None]
            if missing:
                raise KeyError(f"extra column {name!r} is missing (or None) in batch rows {missing}")
            batch[name] = torch.tensor([float(feature[name]) for feature in features], dtype=torch.float32)
        return batch
