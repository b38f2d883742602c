"""The transformers model inside the wrappers that training puts around it."""

from __future__ import annotations

import torch


def causal_lm_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside DDP / FSDP (``.module``), ``torch.compile`` (``._orig_mod``) and PEFT
    (``get_base_model``) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = model.__dict__.get("_modules", {}).get("_orig_mod")  # torch.compile's OptimizedModule
        if not isinstance(inner, torch.nn.Module):
            break
        model = inner
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model
