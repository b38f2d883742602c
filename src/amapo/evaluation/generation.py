"""Sample answers with ``model.generate`` and export them for external judges (AlpacaEval's JSON format)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def render_prompt(tokenizer, prompt) -> tuple[str, bool]:
    """(text to feed the model, whether it already holds special tokens): chat messages go through the template."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
    return prompt, False


@torch.no_grad()
def generate_responses(
    model,
    tokenizer,
    prompts: list,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
) -> list[str]:
    """One answer per prompt (a string, or a list of chat messages); greedy when temperature is 0.

    Prompts are left-padded so every row's answer starts right after its prompt; the answer is decoded
    without special tokens and stops at EOS.
    """
    torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rendered = [render_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
            templated = rendered[0][1]
            batch = tokenizer(
                [text for text, _ in rendered], return_tensors="pt", padding=True, add_special_tokens=not templated
            ).to(device)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **(sampling or {"do_sample": False}),
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
    return answers


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
