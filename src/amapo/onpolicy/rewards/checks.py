"""Checks of a ``RewardSpec`` that need no weights, before any generation: ``check_reward`` reads the options, the
reward model's config, its classifier class (custom code imported, only if trusted), its outputs and tokenizer;
``load_reward`` (``amapo.onpolicy.rewards.loading``) loads from what it found (``_Checked``).

ArmoRM (``RLHFlow/ArmoRM-Llama3-8B-v0.1``), as found (2026-11): its ``config.json`` (huggingface.co, blob/main)
has ``model_type: llama``, ``architectures: [LlamaForRewardModelWithGating]``, ``auto_map`` sending
``AutoModelForSequenceClassification`` to ``modeling_custom.LlamaForRewardModelWithGating``, ONE label in
``id2label`` (``num_labels`` is 1, not 19: the 19 is its own ``num_objectives`` field), ``pad_token_id`` 128256,
``torch_dtype`` float32. Its ``modeling_custom.py`` (7.5 kB, read from a public copy of the file) returns
``CustomOutput(rewards, hidden_state, prompt_embedding, gating_output, score, logits)``: ``rewards`` are the 19
objectives (batch, 19), ``score = sum(gating_output * (rewards @ reward_transform_matrix), dim=1)`` of shape
(batch,), and ``logits`` is the same 1-D ``score``. It pools the hidden state just before the first pad token, and
its gating reads the last ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`` of the row (its own
Llama-3 chat template; it raises when truncation or another template removes it). SimPO's annotate script and
the model card load it with ``trust_remote_code=True`` and read ``output.score``. So: ``--trust_remote_code true
--reward_index score`` (its 1-D logits are accepted too and hold the same value). Without trust_remote_code,
transformers would silently build a plain ``LlamaForSequenceClassification`` with a random head (``model_type`` is
llama), so any ``auto_map`` classifier is refused without it. Its code imports ``LLAMA_INPUTS_DOCSTRING`` from
``transformers.models.llama.modeling_llama``, which transformers 5.x no longer has: the import fails under the
transformers amapo supports; ``check_reward`` imports the class (no weights) and says so before any generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amapo.errors import UserError
from amapo.onpolicy.rewards.spec import (
    BUILTIN_REWARDS,
    FLAG,
    MODES,
    PLACEHOLDERS,
    PLAIN,
    REWARD_EXAMPLE,
    SCORE,
    RewardSpec,
)


@dataclass
class _Checked:
    """What ``check_reward`` found: enough to load without reading anything twice."""

    description: str
    path: str | None = None  # local folder or Hub id; None for the built-in reward
    tokenizer: Any = None
    index: int | str = 0  # an output number, or SCORE
    chat_template: str | None = None


def check_reward(spec: RewardSpec) -> str:
    """Check ``spec`` without loading weights; a one-line description for the log, or UserError (what, where, fix)."""
    return _check(spec).description


def _check(spec: RewardSpec) -> _Checked:
    _check_options(spec)
    if spec.source.startswith("builtin:"):
        return _check_builtin(spec)
    path = _model_path(spec.source)
    config = _read_config(path, spec)
    architecture = _check_classifier(path, config, spec)
    index = _output_index(spec, config.num_labels)
    tokenizer, template = _read_tokenizer(path, spec)
    outputs = f"{config.num_labels} output{'s' if config.num_labels != 1 else ''}"
    reading = "" if spec.reward_index is None else f", reading {'.score' if index == SCORE else f'output {index}'}"
    if spec.mode == "pairwise":
        plain = (spec.pairwise_template or "").startswith(PLAIN)
        how = "plain comparison text" if plain else "comparison text through the chat template"
        description = f"pairwise reward model {spec.source} ({architecture}, {outputs}{reading}; {how})"
    else:
        description = f"reward model {spec.source} ({architecture}, {outputs}{reading})"
    return _Checked(description, path, tokenizer, index, template)


def _check_options(spec: RewardSpec) -> None:
    if spec.mode not in MODES:
        raise UserError(f"{FLAG['mode']} must be one of {', '.join(MODES)}, got {spec.mode!r}")
    for field in ("batch_size", "max_length"):
        value = getattr(spec, field)
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{FLAG[field]} must be an integer >= 1, got {value!r}")
    if spec.pairwise_template is not None:
        if spec.mode != "pairwise":
            raise UserError(f"{FLAG['pairwise_template']} is for {FLAG['mode']} pairwise: drop it, or add that")
        missing = [p for p in PLACEHOLDERS if p not in spec.pairwise_template]
        if missing:
            raise UserError(
                f"{FLAG['pairwise_template']} must hold the placeholders {', '.join(PLACEHOLDERS)}; missing "
                f"{', '.join(missing)} (start it with {PLAIN!r} to skip the chat template)"
            )


def _check_builtin(spec: RewardSpec) -> _Checked:
    if spec.source not in BUILTIN_REWARDS:
        raise UserError(f"{FLAG['source']} {spec.source}: unknown built-in reward; known: {', '.join(BUILTIN_REWARDS)}")
    if spec.mode == "pairwise":
        raise UserError(
            f"{FLAG['mode']} pairwise with {spec.source}: the true reward scores each answer alone, so comparing "
            f"pairs adds nothing: use {FLAG['mode']} pointwise"
        )
    for field in ("reward_index", "chat_template"):
        if getattr(spec, field) is not None:
            raise UserError(f"{FLAG[field]} is for a reward model, not {spec.source}: drop it")
    return _Checked(f"{spec.source} (the built-in task's true reward)")


def _model_path(source: str) -> str:
    """``source`` as a local folder that holds a config.json, or as a Hub id (left to transformers)."""
    from amapo.data.sources import looks_local

    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{FLAG['source']} {source} is a file: give the reward model's folder ({REWARD_EXAMPLE})")
        if not (path / "config.json").is_file():
            raise UserError(
                f"{FLAG['source']} {source} holds no model (no config.json): give a reward model's folder, e.g. one "
                "saved with save_pretrained"
            )
        return str(path)
    if looks_local(source):
        raise UserError(f"{FLAG['source']}: no such folder {source} (looked in {path.absolute()})")
    return source


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _read_config(path: str, spec: RewardSpec):
    from transformers import AutoConfig

    try:  # a bool, never None: None would make transformers ask on stdin
        return AutoConfig.from_pretrained(path, trust_remote_code=bool(spec.trust_remote_code))
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise UserError(
                f"{FLAG['source']} {spec.source}: its config needs the model's own code: read it, then pass "
                f"{FLAG['trust_remote_code']} true to run it"
            ) from None
        raise UserError(f"{FLAG['source']} {spec.source}: cannot read its config.json: {_first_line(err)}") from None
    except OSError as err:
        raise UserError(
            f"{FLAG['source']} {spec.source}: cannot read its config.json ({_first_line(err)}): give {REWARD_EXAMPLE}"
        ) from None


def _sequence_classifier_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as names

    flat = set()
    for value in names.values():
        flat.update(value if isinstance(value, list | tuple) else [value])
    return flat


def _check_classifier(path: str, config, spec: RewardSpec) -> str:
    """The class the model loads as; UserError unless it is a sequence classifier (custom code only if trusted)."""
    custom = (getattr(config, "auto_map", None) or {}).get("AutoModelForSequenceClassification")
    architectures = getattr(config, "architectures", None) or []
    if custom:
        if not spec.trust_remote_code:
            raise UserError(
                f"{FLAG['source']} {spec.source} brings its own classifier code ({custom}); without it transformers "
                f"would build a stock model with a random head: read the code, then pass {FLAG['trust_remote_code']} "
                "true"
            )
        return _import_custom_class(custom, path, spec)
    if architectures:
        name = architectures[0]
        if name not in _sequence_classifier_names():
            raise UserError(
                f"{FLAG['source']} {spec.source} is a {name}, not a sequence classifier (a reward model outputs "
                f"scores): give {REWARD_EXAMPLE}"
            )
        return name
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as names

    if config.model_type not in names:
        raise UserError(f"{FLAG['source']} {spec.source}: model type {config.model_type} has no sequence classifier")
    return f"{names[config.model_type]} (config.json names no architecture)"


def _import_custom_class(reference: str, path: str, spec: RewardSpec) -> str:
    """Import the model's own classifier class (its code, no weights): code that fails to import fails here."""
    from transformers import __version__
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        return get_class_from_dynamic_module(reference, path).__name__
    except (ImportError, AttributeError, SyntaxError) as err:
        raise UserError(
            f"{FLAG['source']} {spec.source}: its own code ({reference}) fails to import under transformers "
            f"{__version__}: {_first_line(err)}; use a copy of the model whose code works with this transformers"
        ) from None


def _output_index(spec: RewardSpec, num_labels: int) -> int | str:
    """The output to read: ``reward_index`` as an int in 0..num_labels-1, SCORE, or 0 for a one-output model."""
    flag, value = FLAG["reward_index"], spec.reward_index
    if value is None:
        if num_labels > 1:
            raise UserError(
                f"reward model {spec.source} has {num_labels} outputs: pass {flag} I (0..{num_labels - 1}), or "
                f"{flag} score for a model that returns a score, e.g. ArmoRM"
            )
        return 0
    if str(value).strip() == SCORE:
        return SCORE
    if not re.fullmatch(r"\d+", str(value).strip()):
        raise UserError(f"{flag} must be an output number (0..{num_labels - 1}) or 'score', got {value!r}")
    index = int(value)
    if index >= num_labels:
        raise UserError(f"{flag} {index} is out of range: reward model {spec.source} has {num_labels} outputs "
                        f"(0..{num_labels - 1})")  # fmt: skip
    return index


def _read_tokenizer(path: str, spec: RewardSpec):
    """(the reward tokenizer, the template to render with: None for the tokenizer's own)."""
    from amapo.data.chat import read_chat_template
    from amapo.model.loading import load_tokenizer

    try:
        tokenizer = load_tokenizer(path, trust_remote_code=bool(spec.trust_remote_code))
    except (OSError, ValueError) as err:
        raise UserError(f"{FLAG['source']} {spec.source}: cannot load its tokenizer: {_first_line(err)}") from None
    try:
        template = read_chat_template(spec.chat_template) if spec.chat_template else None
    except FileNotFoundError as err:
        raise UserError(f"{FLAG['chat_template']}: {err}") from None
    plain = spec.mode == "pairwise" and (spec.pairwise_template or "").startswith(PLAIN)
    if template is None and not getattr(tokenizer, "chat_template", None) and not plain:
        raise UserError(
            f"reward model {spec.source}: its tokenizer has no chat template: pass {FLAG['chat_template']} "
            "(Jinja text or a .jinja file) in the format the reward model was trained on"
        )
    return tokenizer, template
