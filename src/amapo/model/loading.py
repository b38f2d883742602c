"""Loading a causal LM and its tokenizer: one function each, for training, evaluation and comparison.

Weights load from safetensors only: a pickled ``.bin`` checkpoint can run code when it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from amapo.data.chat import read_chat_template
from amapo.errors import UserError


def load_tokenizer(path: str, *, trust_remote_code: bool = False, chat_template: str | None = None):
    """The tokenizer of ``path``, padding with EOS where it has no pad token (padding is masked out everywhere),
    and ``chat_template`` (Jinja text or a file) in place of its own if given."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # a folder without tokenizer files, a Hub id that is not there, ...
        raise UserError(f"{path}: {_tokenizer_problem(path, err)}") from None
    if tokenizer.pad_token is None:  # common for base models
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = read_chat_template(chat_template)
    return tokenizer


def load_model(
    path: str,
    *,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
):
    """``AutoModelForCausalLM`` from safetensors; ``dtype`` a torch dtype name or "auto"; on ``device`` if given."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {
        "dtype": dtype if dtype == "auto" else getattr(torch, dtype),
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:  # no safetensors weights, not a causal LM, a config without model_type, ...
        if Path(path).is_dir() and not any(Path(path).glob("*.safetensors")) and any(Path(path).glob("*.bin")):
            raise UserError(
                f"{path}: holds pickled weights (.bin) and no safetensors; amapo loads safetensors only (a pickled "
                "file can run code when loaded): convert them, e.g. AutoModelForCausalLM.from_pretrained(folder)"
                ".save_pretrained(new_folder)"
            ) from None
        raise UserError(f"{path}: not a causal language model transformers can load ({first_line(err)})") from None
    return model.to(device) if device else model


def load_model_config(path: str, *, trust_remote_code: bool = False, named: str | None = None):
    """The transformers config of ``path`` (cheap: read before anything large loads); one that cannot be read is the
    user's to fix, named as ``named`` (default: the path)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"{named or path}: not a model transformers reads ({first_line(err)})") from None


def first_line(err: Exception) -> str:
    """The first non-empty line of ``err``'s message (transformers' messages go on with generic advice)."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _tokenizer_problem(path: str, err: Exception) -> str:
    """Why ``path`` gave no tokenizer: a local folder without tokenizer files is said plainly."""
    if Path(path).is_dir() and not any((Path(path) / name).exists() for name in TOKENIZER_FILES):
        return (
            f"the folder holds no tokenizer ({', '.join(TOKENIZER_FILES)}): save the tokenizer beside the model "
            "(tokenizer.save_pretrained(folder))"
        )
    return f"no tokenizer transformers can load ({first_line(err)})"


def best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_positions(path: str) -> int | None:
    """The model's ``max_position_embeddings``, read from its config (cheap); None where it has none or the config
    cannot be read (loading the model then says why)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None
    return getattr(config.get_text_config(), "max_position_embeddings", None)


def check_positions(max_length: int, model_config, model_name: str) -> None:
    """``max_length`` must fit the model's positions: beyond them a model gives garbage or fails mid-run."""
    positions = getattr(model_config.get_text_config(), "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise UserError(
            f"--max_length {max_length} exceeds the {positions} positions of {model_name} "
            f"(max_position_embeddings): use --max_length {positions} or less"
        )
