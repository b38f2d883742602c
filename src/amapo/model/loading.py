"""Loading a causal LM and its tokenizer: one function each, for training, evaluation and comparison.

Weights load from safetensors only: a pickled ``.bin`` checkpoint can run code when it is loaded. A local folder's
safetensors files are checked before anything large loads (``check_weights``: headers only, no tensor data), so a
truncated download is one line naming the file, not a traceback after minutes of tokenizing.
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
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except SafetensorError as err:  # a file check_weights could not see (a Hub download): still one line
        raise UserError(f"{path}: cannot read its weights ({first_line(err)}): {WEIGHTS_FIX}") from None
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
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"{named or path}: not a model transformers reads ({first_line(err)})") from None
    check_weights(path, named=named)
    return config


WEIGHTS_FIX = "download the model again, or save it again (model.save_pretrained(folder))"
SAFETENSORS_INDEX = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit: a larger "header length" is not a header


def check_weights(path: str, *, named: str | None = None) -> None:
    """The safetensors files that loading a local model folder reads are whole and readable, read from their
    headers only (cheap, whatever the model's size): ``model.safetensors``, else every shard that
    ``model.safetensors.index.json`` lists; a LoRA adapter's ``adapter_model.safetensors`` and, where it is a local
    folder, its base model's. A problem is a ``UserError`` naming the file, prefixed by ``named`` if given. Not a
    local folder (a Hub id): left to loading."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return
    prefix = f"{named}: " if named else ""
    files = []
    if (folder / "model.safetensors").exists():  # what transformers loads when both are there
        files.append(folder / "model.safetensors")
    elif (folder / SAFETENSORS_INDEX).exists():
        files += index_shards(folder / SAFETENSORS_INDEX, prefix)
    adapter = (folder / "adapter_config.json").is_file()
    if adapter and (folder / "adapter_model.safetensors").exists():
        files.append(folder / "adapter_model.safetensors")
    for file in files:
        problem = safetensors_problem(file)
        if problem:
            raise UserError(f"{prefix}{file}: {problem}: {WEIGHTS_FIX}")
    base = adapter_base(folder / "adapter_config.json") if adapter else None
    if base and Path(base).expanduser().is_dir() and Path(base).expanduser().resolve() != folder.resolve():
        check_weights(base, named=f"the base model {base} of the adapter {folder}")


def index_shards(index: Path, prefix: str) -> list[Path]:
    """The shard files ``index`` (a ``model.safetensors.index.json``) lists, each checked to exist."""
    import json

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        problem = f"no weight_map ({err})" if isinstance(err, KeyError) else first_line(err)
        raise UserError(f"{prefix}{index}: not a safetensors index transformers can read ({problem}): "
                        f"{WEIGHTS_FIX}") from None  # fmt: skip
    for shard in shards:
        if not (index.parent / shard).is_file():
            raise UserError(
                f"{prefix}{index} lists the shard {shard}, which is not in {index.parent} (a download cut short?): "
                f"{WEIGHTS_FIX}"
            )
    return [index.parent / shard for shard in shards]


def adapter_base(adapter_config: Path) -> str | None:
    """The ``base_model_name_or_path`` of a LoRA adapter's config (None where it cannot be read: loading says why)."""
    import json

    try:
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return base if isinstance(base, str) else None


def safetensors_problem(file: Path) -> str | None:
    """What is wrong with the safetensors ``file``, read from its header alone, or None.

    A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (each tensor's dtype, shape and
    ``data_offsets`` into the data), then the data: a whole file is exactly 8 + N + the largest offset long, so a
    file cut short shows in its size without reading any tensor.
    """
    import json

    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8:
                return f"{size} bytes, too short for a safetensors file (truncated, or empty)"
            if length > min(size - 8, MAX_HEADER_BYTES):
                return (
                    f"truncated or not a safetensors file: its first 8 bytes give a header of {length} bytes, and the "
                    f"file holds {size - 8} after them"
                )
            header = json.loads(f.read(length))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, ValueError) as err:
        return f"its header is not JSON, so not a safetensors file ({first_line(err)})"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    try:
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "its header does not describe tensors (no data_offsets), so not a safetensors file"
    data = size - 8 - length
    if end > data:
        return f"truncated: its header describes {end} bytes of tensor data, the file holds {data}"
    if end < data:
        return f"{data - end} bytes more than its header describes ({end} bytes of tensor data): not a whole file"
    from safetensors import SafetensorError, safe_open  # the rest of the header (dtypes, shapes, overlaps)

    try:
        with safe_open(str(file), framework="numpy"):
            pass
    except SafetensorError as err:
        return f"not a safetensors file transformers can read ({first_line(err)})"
    return None


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
