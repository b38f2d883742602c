"""Response log-probabilities from a causal LM's logits: the only model-specific input the losses need."""

from __future__ import annotations

import torch


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position, in fp32.

    Row by row, so the fp32 copy of the logits exists for one sequence at a time, never for the whole [N, T, V]
    batch (log-softmax in bf16 is unstable, FIELD-NOTES; the full fp32 copy is what dominates memory).
    """
    rows = []
    for row_logits, row_targets in zip(logits, targets, strict=True):
        row = row_logits.float()
        rows.append(row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1) - row.logsumexp(-1))
    return torch.stack(rows)


def response_logps(
    logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log pi(y|x) over each row's response tokens, and the number of those tokens.

    logits[:, t] predicts input_ids[:, t + 1], so the targets are input_ids shifted left and the mask is the
    response mask of the targets. Returns (summed log-probs [N] fp32, token counts [N]).
    """
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(torch.float32)
    per_token = token_logps(logits[:, :-1], targets)
    return (per_token * mask).sum(-1), mask.sum(-1)
