"""``load_reward``: the scorer of a ``RewardSpec``, its reward model loaded once ``check_reward``'s checks pass.

Loading: safetensors only (``use_safetensors=True``, as ``amapo.model.loading.load_model``: a pickled ``.bin``
can run code when loaded); custom model code only with ``trust_remote_code``; weights the checkpoint lacks (a
head that would be initialized at random) are an error; float32 on the CPU, the checkpoint's dtype on a GPU.
"""

from __future__ import annotations

from amapo.errors import UserError
from amapo.onpolicy.rewards.builtin import BuiltinReverseScorer
from amapo.onpolicy.rewards.checks import _check, _first_line
from amapo.onpolicy.rewards.classifier import PointwiseScorer, _ClassifierRunner
from amapo.onpolicy.rewards.pairwise import PairwiseScorer
from amapo.onpolicy.rewards.spec import FLAG, RewardScorer, RewardSpec


def load_reward(spec: RewardSpec, device=None) -> RewardScorer:
    """The scorer of ``spec`` (checked again first), its model on ``device`` (default: ``best_device()``)."""
    checked = _check(spec)
    if checked.path is None:
        return BuiltinReverseScorer()
    from amapo.model.loading import best_device

    device = str(device or best_device())
    model = _load_classifier(checked.path, spec, device)
    runner = _ClassifierRunner(model, checked.tokenizer, checked.index, spec, device)
    if spec.mode == "pairwise":
        return PairwiseScorer(runner, checked.chat_template, spec.pairwise_template)
    return PointwiseScorer(runner, checked.chat_template)


def _load_classifier(path: str, spec: RewardSpec, device: str):
    """``AutoModelForSequenceClassification`` from safetensors, in eval mode; float32 on CPU, "auto" on a GPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=torch.float32 if device == "cpu" else "auto",
            trust_remote_code=bool(spec.trust_remote_code),
            use_safetensors=True,  # a pickled .bin can run code when it is loaded
            output_loading_info=True,
        )
    except OSError as err:
        raise UserError(
            f"{FLAG['source']} {spec.source}: cannot load safetensors weights ({_first_line(err)}); amapo loads "
            "safetensors only (a pickled .bin can run code when loaded): convert the checkpoint to safetensors"
        ) from None
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise UserError(
            f"{FLAG['source']} {spec.source}: the checkpoint lacks {len(missing)} weights of its classifier (e.g. "
            f"{missing[0]}), which would be random: give a trained reward model"
        )
    return model.to(device).eval()
