"""Batch tokenized pairs so that chosen and rejected go through one forward pass, in one of three layouts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

LAYOUTS = ("padded", "shared_prompt", "packed")


class PreferenceCollator:
    """B tokenized pairs -> one batch that gives all 2B sequences' response log-probs in one forward pass.

    Sequences are numbered 0..B-1 (prompt + chosen of pair i) and B..2B-1 (prompt + rejected of pair i). Every
    layout returns

    * ``input_ids`` and ``position_ids`` (long [R, T]);
    * the response-token table, the only thing the log-prob step reads besides the model's hidden states:
      ``target_positions`` (long [M]: flat index r * T + t of the hidden state that predicts the token),
      ``target_ids`` (long [M]: the token) and ``target_owner`` (long [M]: its sequence, 0..2B-1), one entry per
      response token (EOS included), never a prompt or padding token;
    * ``response_lengths`` (long [2B]): response tokens per sequence;
    * one float32 [B] tensor per name in ``extra_columns`` (e.g. ``offset``, ``ref_chosen_logps``).

    Layouts (``layout``):

    * ``padded``: R = 2B rows, prompt + response, right-padded; ``attention_mask`` (long [2B, T], 1 = token) and
      ``response_mask`` (bool [2B, T]). Works with every attention implementation.
    * ``shared_prompt``: R = B rows, prompt + chosen + rejected, so the prompt is computed once per pair.
      ``segment_ids`` (long [B, T]: 0 pad, 1 prompt, 2 chosen, 3 rejected) tell the step which mask to build:
      causal, except that rejected tokens do not see chosen ones. Rejected positions restart after the prompt,
      and the first rejected token is predicted from the last prompt token, so every log-prob equals the
      padded layout's (tested). Needs an attention that takes a custom 4D mask (eager, sdpa).
    * ``packed``: the 2B sequences back to back; ``position_ids`` restart at 0 per sequence, which
      flash-attention's varlen kernels (and transformers' packed-sequence masks) read as sequence boundaries.
      ``packed_rows="one"``: R = 1 row, no padding (flash-attention's varlen kernels take one row);
      ``"longest"``: the sequences packed first-fit, longest first, into rows as wide as the longest one, the
      rest of a row padded (its positions restart at 0: a sequence of its own, never read), so that an attention
      that masks densely (eager, sdpa) gets rows x longest^2, not (all tokens)^2.

    ``choose_layout``: called with the batch's (prompt, chosen, rejected) token counts, it names the layout of
    this batch (``amapo.model.layouts.LayoutChoice``: shared_prompt or padded by their memory on eager);
    ``layout="auto"`` needs it. The model side reads the layout off the batch's keys.

    The pad id only fills positions that no mask lets through; any id the embedding accepts would do.
    """

    def __init__(
        self,
        pad_token_id: int,
        extra_columns: Sequence[str] = (),
        layout: str = "padded",
        choose_layout: Callable[[list[tuple[int, int, int]]], str] | None = None,
        packed_rows: str = "one",
    ) -> None:
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: set tokenizer.pad_token (e.g. to tokenizer.eos_token)")
        if layout not in LAYOUTS and not (layout == "auto" and choose_layout is not None):
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (or auto with choose_layout), got {layout!r}")
        if packed_rows not in ("one", "longest"):
            raise ValueError(f"packed_rows must be one or longest, got {packed_rows!r}")
        self.pad_token_id = int(pad_token_id)
        self.extra_columns = tuple(extra_columns)
        self.layout = layout
        self.choose_layout = choose_layout
        self.packed_rows = packed_rows

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("PreferenceCollator got an empty batch")
        pairs = [
            (list(f["prompt_input_ids"]), list(f["chosen_input_ids"]), list(f["rejected_input_ids"])) for f in features
        ]
        layout = self.layout
        if self.choose_layout is not None:
            layout = self.choose_layout([(len(p), len(c), len(r)) for p, c, r in pairs])
        if layout == "packed" and self.packed_rows == "longest":
            batch = packed_rows_of_longest(pairs, self.pad_token_id)
        else:
            arrange = {"padded": padded_rows, "shared_prompt": shared_prompt_rows, "packed": packed_row}[layout]
            batch = arrange(pairs, self.pad_token_id)
        for name in self.extra_columns:
            missing = [i for i, feature in enumerate(features) if feature.get(name) is None]
            if missing:
                raise KeyError(f"extra column {name!r} is missing (or None) in batch rows {missing}")
            batch[name] = torch.tensor([float(feature[name]) for feature in features], dtype=torch.float32)
        return batch


def row_length(layout: str, prompt: int, chosen: int, rejected: int) -> int:
    """Tokens per row of a pair in ``layout``: what length-grouped batching groups by (auto: shared_prompt's)."""
    if layout in ("shared_prompt", "auto"):
        return prompt + chosen + rejected
    if layout == "packed":
        return 2 * prompt + chosen + rejected
    return prompt + max(chosen, rejected)


class _Table:
    """The response-token table, filled row by row."""

    def __init__(self, sequences: int) -> None:
        self.positions: list[int] = []
        self.ids: list[int] = []
        self.owner: list[int] = []
        self.lengths = [0] * sequences

    def add(self, owner: int, predictors: Sequence[int], tokens: Sequence[int]) -> None:
        self.positions.extend(predictors)
        self.ids.extend(tokens)
        self.owner.extend([owner] * len(tokens))
        self.lengths[owner] += len(tokens)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "target_positions": torch.tensor(self.positions, dtype=torch.long),
            "target_ids": torch.tensor(self.ids, dtype=torch.long),
            "target_owner": torch.tensor(self.owner, dtype=torch.long),
            "response_lengths": torch.tensor(self.lengths, dtype=torch.long),
        }


def _sequences(pairs):
    """The 2B (owner, prompt, response) sequences: all chosen, then all rejected."""
    n = len(pairs)
    yield from ((i, prompt, chosen) for i, (prompt, chosen, _) in enumerate(pairs))
    yield from ((n + i, prompt, rejected) for i, (prompt, _, rejected) in enumerate(pairs))


def padded_rows(pairs, pad_token_id: int) -> dict[str, torch.Tensor]:
    sequences = list(_sequences(pairs))
    width = max(len(prompt) + len(response) for _, prompt, response in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    response_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    table = _Table(len(sequences))
    for row, (owner, prompt, response) in enumerate(sequences):
        p, end = len(prompt), len(prompt) + len(response)
        input_ids[row, :end] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[row, :end] = 1
        response_mask[row, p:end] = True
        table.add(owner, range(row * width + p - 1, row * width + end - 1), response)  # h[t-1] predicts token t
    position_ids = torch.arange(width).expand(len(sequences), width).clone()
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        **table.tensors(),
    }


def shared_prompt_rows(pairs, pad_token_id: int) -> dict[str, torch.Tensor]:
    n = len(pairs)
    width = max(len(p) + len(c) + len(r) for p, c, r in pairs)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segment_ids = torch.zeros((n, width), dtype=torch.long)
    table = _Table(2 * n)
    for row, (prompt, chosen, rejected) in enumerate(pairs):
        p, c, r = len(prompt), len(chosen), len(rejected)
        base = row * width
        input_ids[row, : p + c + r] = torch.tensor(prompt + chosen + rejected, dtype=torch.long)
        position_ids[row, : p + c] = torch.arange(p + c)
        position_ids[row, p + c : p + c + r] = torch.arange(p, p + r)  # rejected continues the prompt
        segment_ids[row, :p], segment_ids[row, p : p + c], segment_ids[row, p + c : p + c + r] = 1, 2, 3
        table.add(row, range(base + p - 1, base + p + c - 1), chosen)
        # the first rejected token is predicted by the last prompt token, the others by their left neighbour
        table.add(n + row, [base + p - 1, *range(base + p + c, base + p + c + r - 1)], rejected)
    return {"input_ids": input_ids, "position_ids": position_ids, "segment_ids": segment_ids, **table.tensors()}


def packed_row(pairs, pad_token_id: int) -> dict[str, torch.Tensor]:
    sequences = list(_sequences(pairs))
    ids, positions = [], []
    table = _Table(len(sequences))
    for owner, prompt, response in sequences:
        start, p = len(ids), len(prompt)
        ids.extend(prompt + response)
        positions.extend(range(p + len(response)))
        table.add(owner, range(start + p - 1, start + p + len(response) - 1), response)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        **table.tensors(),
    }


def packed_rows_of_longest(pairs, pad_token_id: int) -> dict[str, torch.Tensor]:
    """The packed layout in rows as wide as the longest sequence: first-fit, longest sequence first."""
    sequences = sorted(_sequences(pairs), key=lambda s: -(len(s[1]) + len(s[2])))  # stable: ties keep their order
    width = len(sequences[0][1]) + len(sequences[0][2])
    rows: list[list] = []
    used: list[int] = []  # tokens in each row
    for sequence in sequences:
        size = len(sequence[1]) + len(sequence[2])
        index = next((i for i, tokens in enumerate(used) if tokens + size <= width), len(rows))
        if index == len(rows):
            rows.append([])
            used.append(0)
        rows[index].append(sequence)
        used[index] += size
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    table = _Table(len(sequences))
    for index, row in enumerate(rows):
        start = 0
        for owner, prompt, response in row:
            p, end = len(prompt), start + len(prompt) + len(response)
            input_ids[index, start:end] = torch.tensor(prompt + response, dtype=torch.long)
            position_ids[index, start:end] = torch.arange(end - start)
            base = index * width + start
            table.add(owner, range(base + p - 1, base + p + len(response) - 1), response)
            start = end
    return {"input_ids": input_ids, "position_ids": position_ids, **table.tensors()}


def device_batches(dataset, collator, batch_size: int, device) -> Iterator[dict[str, torch.Tensor]]:
    """The dataset's rows in order, ``batch_size`` at a time, collated and moved to ``device`` (scoring loops)."""
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield {k: v.to(device) for k, v in batch.items()}
