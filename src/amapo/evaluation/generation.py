"""Export sampled answers for external judges: AlpacaEval's model-outputs format (``amapo eval --generate``)."""

from __future__ import annotations

import json
from pathlib import Path


def prompt_text(prompt) -> str:
    """The instruction as a judge reads it: the last user message of a chat, or the prompt string."""
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        return users[-1] if users else prompt[-1]["content"]
    return prompt


def write_alpacaeval(path: Path, prompts: list, outputs: list[str], generator: str, dataset: str) -> None:
    """AlpacaEval's model-outputs file: a JSON list of {instruction, output, generator, dataset}."""
    rows = [
        {"instruction": prompt_text(p), "output": o, "generator": generator, "dataset": dataset}
        for p, o in zip(prompts, outputs, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
