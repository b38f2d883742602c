"""Built-in assets for the default job: a byte tokenizer, a tiny Llama policy after SFT, a synthetic task.

Sources named ``builtin:...`` in a config resolve to local paths here, so the rest of the pipeline sees an
ordinary model folder and ordinary JSONL files:

* ``builtin:tiny-llama``: the cached model folder;
* ``builtin:reverse``: the task's training pairs; ``builtin:reverse/<set>``: a held-out set
  (``in_distribution``, ``prompt_ood``, ``response_ood``, ``mutual_ood``; a pool of 8192 pairs, which recipes
  read a prefix of, e.g. ``@train[:256]``);
* ``builtin:reverse-lengths`` and ``builtin:reverse-lengths/<set>``: the same for the variant whose answers
  differ in length (``amapo.builtin.task``).
"""

from __future__ import annotations

from typing import Any

from amapo.builtin.task import EVAL_SETS, VARIANTS
from amapo.errors import UserError

PREFIX = "builtin:"


def is_builtin(source: str | None) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def resolve_source(source: str) -> str:
    """A local path for a ``builtin:`` source (building the assets on first use); other sources unchanged."""
    if not is_builtin(source):
        return source
    from amapo.builtin.assets import prepare_builtin  # torch and transformers: only once an asset is needed

    name = source.removeprefix(PREFIX)
    assets = prepare_builtin()
    if name == "tiny-llama":
        return str(assets.model_dir)
    variant, _, eval_set = name.partition("/")
    if variant in VARIANTS and not eval_set:
        return str(assets.train_file_of(variant))
    if variant in VARIANTS and eval_set in EVAL_SETS:
        return str(assets.eval_files(variant)[eval_set])
    known = ["builtin:tiny-llama"]
    for variant in VARIANTS:
        known += [f"builtin:{variant}", *(f"builtin:{variant}/{s}" for s in EVAL_SETS)]
    raise UserError(f"unknown built-in source {source!r}; known: {', '.join(known)}")


__all__ = ["EVAL_SETS", "is_builtin", "prepare_builtin", "resolve_source"]


def __getattr__(name: str) -> Any:
    if name == "prepare_builtin":
        from amapo.builtin.assets import prepare_builtin

        return prepare_builtin
    raise AttributeError(f"module 'amapo.builtin' has no attribute {name!r}")
