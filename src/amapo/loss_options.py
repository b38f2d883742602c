"""The loss options of ``amapo train``'s command line, read from the loss classes themselves, without torch.

Every registered loss (``@register_loss`` in ``amapo/losses/*.py``) takes its options as ``__init__`` keywords with
a type and a default, and says what each means in its ``OPTION_HELP`` (``PreferenceLoss`` for the shared ones).
This module reads both from the source files with ``ast``, as ``hf_internals.training_argument_names`` reads
``TrainingArguments`` (importing the losses means importing torch, and ``amapo train`` checks its options before
that). So a new loss with a new option is one file: ``--its_option`` appears on the command line, in recipes and
in ``--help``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LOSSES_DIR = Path(__file__).resolve().parent / "losses"
TYPES = {"float": float, "int": int, "bool": bool, "str": str}
NOT_OPTIONS = {"self", "gather"}  # gather: which pairs the batch statistics see, set by the trainer


@dataclass(frozen=True)
class LossOption:
    name: str
    type: type
    help: str


def _registers_a_loss(node: ast.ClassDef) -> bool:
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "register_loss"
        for d in node.decorator_list
    )


def _option_help(node: ast.ClassDef) -> dict[str, str]:
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and getattr(item.target, "id", None) == "OPTION_HELP":
            return ast.literal_eval(item.value)
    return {}


def _init_options(node: ast.ClassDef, where: str) -> list[tuple[str, type]]:
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            options = []
            for arg in item.args.args + item.args.kwonlyargs:
                if arg.arg in NOT_OPTIONS:
                    continue
                annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if annotation not in TYPES:
                    raise TypeError(f"{where}: option {arg.arg!r} needs one of {', '.join(TYPES)} as its type")
                options.append((arg.arg, TYPES[annotation]))
            return options
    raise TypeError(f"{where}: a registered loss defines its options in __init__")


def scan_loss_options(losses_dir: Path = LOSSES_DIR) -> dict[str, LossOption]:
    """Every option any registered loss takes, with its type and help, in the order the files define them."""
    helps: dict[str, list[str]] = {}
    found: dict[str, type] = {}
    for path in sorted(losses_dir.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for name, text in _option_help(node).items():
                helps.setdefault(name, []).append(text)
            if _registers_a_loss(node):
                for name, kind in _init_options(node, f"{path.name}:{node.name}"):
                    if found.setdefault(name, kind) is not kind:
                        raise TypeError(f"{path.name}:{node.name}: option {name!r} has two types")
    missing = sorted(set(found) - set(helps))
    if missing:
        raise TypeError(f"loss option(s) {', '.join(missing)} have no OPTION_HELP entry in amapo/losses")
    return {name: LossOption(name, kind, " / ".join(dict.fromkeys(helps[name]))) for name, kind in found.items()}
