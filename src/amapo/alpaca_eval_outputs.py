"""AlpacaEval's model-outputs file: one row per instruction, and the file (a JSON list) written whole.

``alpaca_eval --model_outputs`` reads ``instruction`` and ``output``, and ``generator`` for the model's name;
``dataset`` is the column alpaca_eval's ``evaluate_from_model`` keeps beside them (tatsu-lab/alpaca_eval,
src/alpaca_eval/main.py, ``columns_to_keep``). Both ``amapo generate`` and ``amapo eval --generate`` write this
file, so it sits in the library layer, below both commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from amapo.files import write_atomically


def alpaca_eval_row(instruction: str, output: str, generator: str, dataset: str | None = None) -> dict:
    """One AlpacaEval model output: ``dataset`` (when known), ``instruction``, ``output``, ``generator``."""
    row = {} if dataset is None else {"dataset": dataset}
    return {**row, "instruction": instruction, "output": output, "generator": generator}


def write_json_list(path: Path, rows: list[dict]) -> None:
    """A JSON list answer file (AlpacaEval's model outputs), written whole: a kill leaves the old list or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
