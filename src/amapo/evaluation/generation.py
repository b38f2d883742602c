"""Export sampled answers for external judges: AlpacaEval's model-outputs format (``amapo eval --generate``), in the
rows and the writer ``amapo generate`` uses (``amapo.alpaca_eval_outputs``)."""

from __future__ import annotations

from pathlib import Path

from amapo.alpaca_eval_outputs import alpaca_eval_row, write_json_list


def prompt_text(prompt) -> str:
    """The instruction as a judge reads it: the last user message of a chat, or the prompt string."""
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        return users[-1] if users else prompt[-1]["content"]
    return prompt


def write_alpacaeval(path: Path, prompts: list, outputs: list[str], generator: str, dataset: str) -> None:
    """AlpacaEval's model-outputs file: a JSON list of {dataset, instruction, output, generator}."""
    rows = [alpaca_eval_row(prompt_text(p), o, generator, dataset) for p, o in zip(prompts, outputs, strict=True)]
    write_json_list(path, rows)
