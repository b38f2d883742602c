"""Set-up only (``preference_step.py --rehearse``): an entry that cannot run on this machine (a GPU-only option or
framework, or liger-kernel missing) still runs its command line and set-up, so that no entry of a GPU plan reaches
the GPU untried.

The worker builds what it would build for a real run (the training config, the model, the data, the Trainer, its
optimizer and data loader, the first collated batch; for the Liger loop its batches, optimizer and loss module) and
stops at the first step, reporting "set-up ok". Two things are put in place of what this machine lacks, and the
result says which:

* liger-kernel, when it does not import: a stand-in package with the names amapo, transformers and the Liger loop
  import (``liger_kernel.ops.fused_linear_cross_entropy``, ``liger_kernel.chunked_loss``,
  ``liger_kernel.transformers._apply_liger_kernel_to_instance``) and liger-kernel 0.8.5's signatures (amapo checks
  the fused cross-entropy's parameters); its kernels raise if called, and applying its model kernels only records
  the call;
* the device amapo checks its kernels against (``--lm_head_kernel liger``, ``--use_liger_kernel``: Triton, CUDA
  only): amapo's own check runs as it would on CUDA, so that an option it would refuse on the GPU fails here too.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types


class SetupDone(Exception):
    """Raised at the first training step of a set-up-only worker: everything before it ran."""


def liger_imports() -> bool:
    try:
        import liger_kernel.chunked_loss
        import liger_kernel.ops.fused_linear_cross_entropy  # noqa: F401
    except Exception:  # ImportError, or a Triton that does not load without a GPU
        return False
    return True


def install_liger_stand_ins() -> str:
    """liger-kernel's names as stand-ins (module docstring), unless the real package imports. Returns which."""
    if liger_imports():
        return "liger-kernel (real)"
    for name in [n for n in sys.modules if n == "liger_kernel" or n.startswith("liger_kernel.")]:
        del sys.modules[name]  # a half-imported real package (Triton failed) must not shadow the stand-ins

    def unavailable(*args, **kwargs):
        raise RuntimeError("liger-kernel stand-in (set-up only): its kernels need liger-kernel and a GPU")

    # The signatures are liger-kernel 0.8.5's (the carried wheel's), so that a caller's arguments are checked as the
    # real package would check them: amapo reads the forward's parameters (amapo.model.lm_head.check_kernel).
    class LigerFusedLinearCrossEntropyFunction:
        @staticmethod
        def forward(ctx, _input, weight, target, bias=None, ce_weight=None, ignore_index=-100, lse_square_scale=0.0,
                    label_smoothing=0.0, reduction="mean", softcap=None, return_z_loss=False, accum_dtype=None,
                    use_token_scaling=False, return_token_accuracy=False, return_predicted_tokens=False,
                    ce_impl=None, ce_mode=None, chunk_mem_const=None):  # fmt: skip
            unavailable()

        apply = staticmethod(unavailable)

    class LigerFusedLinearSimPOLoss:  # the Liger loop builds one with SimPO's settings, then calls it per step
        def __init__(self, ignore_index=-100, beta=0.1, alpha=1.0, label_smoothing=0.0, compute_nll_loss=True,
                     compiled=True, gamma=0.5, chunk_size=1) -> None:  # fmt: skip
            self.compiled = compiled

        __call__ = unavailable

    def apply_to_instance(model, **config) -> None:  # what transformers' apply_liger_kernel calls
        model._liger_stand_in_config = dict(config)

    modules = {
        "liger_kernel": {},
        "liger_kernel.ops": {},
        "liger_kernel.ops.fused_linear_cross_entropy": {
            "LigerFusedLinearCrossEntropyFunction": LigerFusedLinearCrossEntropyFunction
        },
        "liger_kernel.chunked_loss": {"LigerFusedLinearSimPOLoss": LigerFusedLinearSimPOLoss},
        "liger_kernel.transformers": {"_apply_liger_kernel_to_instance": apply_to_instance},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)  # find_spec needs one
        module.__dict__.update(attributes)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    # transformers asks the installed package's version before applying Liger's model kernels
    import transformers.integrations.liger as hf_liger

    hf_liger.is_liger_kernel_available = lambda: True
    return "liger-kernel stand-in (not installed here)"


def check_amapo_kernels_as_on_cuda() -> None:
    """amapo's kernel check (``amapo.train.run.check_kernels``) run against a CUDA device, whatever this one is."""
    import torch

    import amapo.train.run as amapo_run

    check = amapo_run.check_kernels

    def as_on_cuda(config, model_config) -> None:
        on_cuda = types.SimpleNamespace(
            attn_implementation=config.attn_implementation,
            lm_head_kernel=config.lm_head_kernel,
            use_liger_kernel=config.use_liger_kernel,
            device=torch.device("cuda"),
        )
        check(on_cuda, model_config)

    amapo_run.check_kernels = as_on_cuda


def stop_at_first_step(result: dict):
    """A TrainerCallback that, when training begins (model, optimizer and data loader built), collates the first
    batch, records what it holds, and stops with ``SetupDone``."""
    from transformers import TrainerCallback

    from .measure import describe_batch

    class StopAtFirstStep(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, model=None, **kwargs):
            if train_dataloader is not None:
                result["first_batch"] = describe_batch(next(iter(train_dataloader)))
            if model is not None:
                result["liger_applied"] = getattr(model, "_liger_stand_in_config", None)
            raise SetupDone("set-up ok: stopped before the first step")

    return StopAtFirstStep()
