"""One registry of loss methods: a name maps to a loss class and the preset options that define it.

Adding a method is one decorated class (or one more decorator on an existing class, for a variant such as
an ablation); nothing else in the project lists methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from amapo.losses.base import PreferenceLoss

LossClass = TypeVar("LossClass", bound=type[PreferenceLoss])


@dataclass(frozen=True)
class LossSpec:
    """A registered method: its class, the options fixed by its name, and a one-line formula."""

    name: str
    cls: type[PreferenceLoss]
    summary: str
    preset: dict[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """Every option of the method with its default value (preset options included)."""
        params = inspect.signature(self.cls.__init__).parameters
        values = {
            name: p.default
            for name, p in params.items()
            if name != "self" and p.default is not inspect.Parameter.empty and name != "gather"
        }
        values.update(self.preset)
        return values


_REGISTRY: dict[str, LossSpec] = {}


def register_loss(name: str, summary: str, **preset: Any) -> Callable[[LossClass], LossClass]:
    """Class decorator: register ``cls`` under ``name``, with ``preset`` options fixed by that name."""

    def decorator(cls: LossClass) -> LossClass:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        _REGISTRY[name] = LossSpec(name=name, cls=cls, summary=summary, preset=dict(preset))
        return cls

    return decorator


def available_losses() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_REGISTRY)


def loss_spec(name: str) -> LossSpec:
    """The registered spec of ``name``; a clear error lists the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(available_losses())}") from None


def build_loss(name: str, **options: Any) -> PreferenceLoss:
    """Instantiate method ``name`` with its paper defaults, overridden by ``options``.

    Options fixed by the name (e.g. ``znorm=False`` for ``amapo-no-znorm``) cannot be overridden: pass the
    base name with the option instead.
    """
    spec = loss_spec(name)
    accepted = set(inspect.signature(spec.cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"loss {name!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(sorted(accepted))}"
        )
    fixed = sorted(k for k in options if k in spec.preset and options[k] != spec.preset[k])
    if fixed:
        raise ValueError(f"option {', '.join(map(repr, fixed))} is fixed by the name {name!r}")
    return spec.cls(**{**spec.preset, **options})
