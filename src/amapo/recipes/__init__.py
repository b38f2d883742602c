"""Packaged recipes: YAML configs for ``amapo train --config NAME`` and accelerate configs for multi-GPU runs."""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).parent
ACCELERATE_DIR = RECIPES_DIR / "accelerate"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """A YAML path as given, or the packaged recipe of that name (``builtin``, ``llama3-8b-base-amapo``, ...)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    packaged = RECIPES_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if packaged.exists():
        return packaged
    raise FileNotFoundError(
        f"no config file {name_or_path!r} and no packaged recipe of that name; "
        f"packaged: {', '.join(available_recipes())}"
    )
