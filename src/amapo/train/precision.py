"""Where trained weights live: full-parameter training on bf16/fp16 weights without an fp32 master copy is refused.

AdamW moves each weight by about the learning rate per step (lr * m / (sqrt(v) + eps), |m / sqrt(v)| <= 1). A bf16
number keeps 8 significant bits, so an update smaller than 2^-9 of the weight's magnitude (fp16: 2^-12) rounds
back to the same weight. At the paper's learning rates (4e-7 to 1e-6) and weights of magnitude 1e-2, updates are
about 1e-4 of the weight: most of them are lost, and the run looks fine while barely training. Mixed precision
keeps the weights in fp32 (load float32, ``--bf16 true`` computes in bf16), as AMaPO's release did; DeepSpeed keeps
an fp32 master copy of bf16/fp16 weights itself; LoRA trains fp32 adapters (PEFT upcasts them) over a frozen base.
"""

from __future__ import annotations

import torch

from amapo.errors import UserError

LOW_PRECISION = (torch.bfloat16, torch.float16)


def _as_dtype(value) -> torch.dtype | None:
    if isinstance(value, torch.dtype):
        return value
    return getattr(torch, value, None) if isinstance(value, str) and value != "auto" else None


def master_copy_kept(config) -> bool:
    """Whether low-precision weights are fine for this run: LoRA, DeepSpeed (fp32 master weights) or an opt-in."""
    return config.use_peft or config.deepspeed_plugin is not None or config.allow_low_precision_weights


def refusal(dtype: torch.dtype, where: str) -> UserError:
    name = str(dtype).removeprefix("torch.")
    return UserError(
        f"{where} {name} weights, and full-parameter training would update them in {name} with no fp32 master copy "
        "(small AdamW updates round to nothing): load float32 weights (--torch_dtype float32) and train with "
        "--bf16 true, or use LoRA (--use_peft true) or DeepSpeed, or pass --allow_low_precision_weights true"
    )


def check_weight_dtype(config, model_config) -> None:
    """Before loading: the dtype ``config`` will load the weights in (``auto``: the checkpoint's config says)."""
    if master_copy_kept(config):
        return
    requested = config.load_dtype()
    if requested == "auto":
        dtype = _as_dtype(getattr(model_config, "dtype", None) or getattr(model_config, "torch_dtype", None))
        where = f"--torch_dtype auto loads {config.model_name_or_path}'s"
    else:
        dtype, where = _as_dtype(requested), f"--torch_dtype {requested} loads"
    if dtype in LOW_PRECISION:
        raise refusal(dtype, where)


def check_trained_weights(model, config) -> None:
    """After loading: the weights that will be trained are not bf16/fp16 (for checkpoints whose config is silent)."""
    if master_copy_kept(config):
        return
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and parameter.dtype in LOW_PRECISION:
            raise refusal(parameter.dtype, f"the loaded model holds (e.g. {name})")
