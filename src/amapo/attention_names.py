"""The attention kernels ``--attn_implementation`` takes (``amapo train`` and ``amapo eval``): a misspelt name is
refused while the options are parsed, a flash-attention build that is not installed before a model loads; each is
one line, not the traceback transformers raises while loading the model."""

from __future__ import annotations

from importlib.util import find_spec

from amapo.errors import UserError

# transformers' own names (ALL_ATTENTION_FUNCTIONS and "eager"); "paged|..." and Hub kernels ("org/name", through
# the `kernels` package) are passed on as they are
ATTENTION_IMPLEMENTATIONS = (
    "eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3", "flash_attention_4"
)  # fmt: skip
# the module each flash-attention version imports (transformers.utils.import_utils.is_flash_attn_*_available).
# Without it transformers tries a Hub build through the `kernels` package, which needs the Hub and a GPU, and fails
# with a traceback while loading the model; naming that build (org/name) asks for it plainly.
FLASH_ATTENTION_MODULES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface",
                           "flash_attention_4": "flash_attn"}  # fmt: skip


def check_attn_implementation(value: str | None) -> None:
    """``value`` (None: transformers' default) names an attention kernel transformers has (option parsing: a recipe
    for a GPU machine parses anywhere)."""
    if value is None or value.startswith("paged|") or "/" in value or value in ATTENTION_IMPLEMENTATIONS:
        return
    raise UserError(
        f"--attn_implementation must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)} or a Hub kernel (org/name), "
        f"got {value!r}"
    )


def check_attention_installed(value: str | None) -> None:
    """The flash-attention build ``value`` names is installed here (before a model loads)."""
    module = FLASH_ATTENTION_MODULES.get(value or "")
    if module and find_spec(module) is None:
        raise UserError(
            f"--attn_implementation {value} needs the {module} package (flash-attention, on a CUDA GPU), which is "
            "not installed: install it, name a Hub build of it (e.g. kernels-community/flash-attn2), or use sdpa or "
            "flex_attention"
        )
