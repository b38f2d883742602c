"""No import runs back up a floor: every part of ``amapo`` sits on one floor of ``FLOORS``, lowest first.

* ``library``: what commands stand on (losses, data, model, the built-in assets, the small top-level modules);
* ``application``: one command each (``amapo train``, ``eval``/``analyze``, ``generate``, ``make-pairs``);
* ``composite``: a command made of other commands (``amapo compare`` trains with ``amapo.train`` and scores with
  ``amapo.evaluation``);
* ``cli``: the command line that dispatches to them.

The rule: a module imports only from its own floor or the floors below, and an application package imports no
other application package (what two commands share moves down into a library module). Every import counts: at the
top of a module, inside a function, under ``if TYPE_CHECKING``. Every top-level module and package of ``amapo``
must be placed in ``LAYERS`` (a new one fails until it is given a floor).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "amapo"
FLOORS = ("library", "application", "composite", "cli")

LAYERS = {
    # library: no command of its own; anything above may use it
    "amapo": "library",  # the package root: __version__ and the lazily imported loss API
    "amapo.losses": "library",
    "amapo.loss_options": "library",
    "amapo.data": "library",
    "amapo.model": "library",
    "amapo.builtin": "library",
    "amapo.recipes": "library",
    "amapo.alpaca_eval_outputs": "library",
    "amapo.attention_names": "library",
    "amapo.console": "library",
    "amapo.cpu_memory": "library",
    "amapo.disk_space": "library",
    "amapo.distributed": "library",
    "amapo.errors": "library",
    "amapo.files": "library",
    "amapo.hf_internals": "library",
    "amapo.option_checks": "library",
    "amapo.options_json": "library",
    "amapo.output_folder": "library",
    "amapo.run_files": "library",
    "amapo.seeds": "library",
    # application: one command each
    "amapo.train": "application",
    "amapo.evaluation": "application",
    "amapo.generation": "application",
    "amapo.onpolicy": "application",
    # composite: a command built from other commands
    "amapo.compare": "composite",
    # the command line
    "amapo.cli": "cli",
    "amapo.__main__": "cli",
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``amapo.data.chat`` for ``package/data/chat.py``, ``amapo.data`` for its ``__init__.py``."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The entry of ``LAYERS`` a module belongs to: its top-level module or package (``amapo.data.chat`` ->
    ``amapo.data``), or the package root."""
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) for every ``amapo`` import in ``path``, wherever it stands; ``from amapo import data`` names
    ``amapo.data``, and relative imports are resolved."""
    module = module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base == "amapo":
                found += [(node.lineno, f"amapo.{a.name}" if f"amapo.{a.name}" in LAYERS else base) for a in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name == "amapo" or name.startswith("amapo.")]


def every_import() -> list[tuple[str, int, str]]:
    """(importing file relative to the repository, line, imported module) for every module of the package."""
    root = PACKAGE.parents[1]
    return [
        (str(path.relative_to(root)), line, imported)
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, imported in imported_modules(path)
    ]


def floor_of(module: str) -> int:
    return FLOORS.index(LAYERS[part_of(module)])


def test_every_module_is_placed_on_a_floor():
    unplaced = [
        f"{path.relative_to(PACKAGE.parents[1])}: {part_of(module_name(path))} is in no layer"
        for path in sorted(PACKAGE.rglob("*.py"))
        if part_of(module_name(path)) not in LAYERS
    ]
    assert not unplaced, "give each a floor in LAYERS (tests/test_import_layers.py):\n" + "\n".join(unplaced)


def test_no_import_runs_up_a_floor():
    upward = []
    for file, line, imported in every_import():
        importer = module_name(PACKAGE.parents[1] / file)
        if part_of(imported) not in LAYERS or part_of(importer) not in LAYERS:
            continue  # test_every_module_is_placed_on_a_floor says so
        if floor_of(imported) > floor_of(importer):
            upward.append(
                f"{file}:{line}: {importer} ({LAYERS[part_of(importer)]}) imports {imported} "
                f"({LAYERS[part_of(imported)]})"
            )
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_no_application_imports_another():
    across = []
    for file, line, imported in every_import():
        importer = module_name(PACKAGE.parents[1] / file)
        mine, theirs = part_of(importer), part_of(imported)
        if mine != theirs and LAYERS.get(mine) == LAYERS.get(theirs) == "application":
            across.append(f"{file}:{line}: {importer} imports {imported} (another application: move it to a library)")
    assert not across, "imports between two application packages:\n" + "\n".join(across)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from amapo.evaluation.checks import check_number\n", "amapo.evaluation.checks"),
        ("def f():\n    import amapo.onpolicy.sampling\n", "amapo.onpolicy.sampling"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from amapo.train import run\n", "amapo.train"),
        ("from amapo import compare\n", "amapo.compare"),
        ("from ..evaluation import sets\n", "amapo.evaluation"),
    ],
)
def test_every_kind_of_import_is_seen(tmp_path, source, expected):
    """Imports inside functions, under TYPE_CHECKING, of a subpackage by name and relative ones are all read."""
    package = tmp_path / "amapo"
    (package / "generation").mkdir(parents=True)
    module = package / "generation" / "example.py"
    module.write_text(source)
    assert [name for _, name in imported_modules(module, package)] == [expected]
