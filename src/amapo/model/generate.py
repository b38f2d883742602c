"""Sample answers with ``model.generate``: batched, left-padded, one random stream per prompt.

Decoding is exactly what the arguments say: greedy, or sampling with a temperature and nucleus (top-p) filtering;
the sampling defaults in a model's ``generation_config.json`` (top_k, repetition_penalty, ...) are not applied, so
the settings a caller records are all that shaped the answers. From the model's generation config only the stop
tokens are taken.

Each prompt draws from its own ``torch.Generator`` (``PerRowSampler``), and only while its own answer is being
written, so an answer depends on its prompt and its seed, not on which prompts share its batch: a resumed run
answers the remaining prompts as one uninterrupted run would (up to floating-point noise of different padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

# FastChat's gen_model_answer.py (lm-sys/FastChat, fastchat/llm_judge) decodes greedily below this temperature.
GREEDY_BELOW = 1e-4


def is_greedy(temperature: float) -> bool:
    return temperature < GREEDY_BELOW


def render_prompt(tokenizer, prompt) -> tuple[str, bool]:
    """(text to feed the model, whether it already holds special tokens): chat messages go through the template."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
    return prompt, False


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends an answer: the model's ``generation_config.eos_token_id`` (an int or a list; Llama-3
    Instruct lists 128001 <|end_of_text|> and 128009 <|eot_id|>, the ``stop_token_ids`` of the AMaPO release's
    AlpacaEval configs, eval/alpacaeval2/configs/Llama-3-*.yaml) and the tokenizer's EOS."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list | tuple) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def row_generators(seeds: Sequence[int], device) -> list[torch.Generator]:
    """One generator per prompt, seeded with its own seed, on the device the logits live on."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


class PerRowSampler(LogitsProcessor):
    """Sampling with one random stream per row, as a logits processor for greedy ``generate``.

    For each row still writing its answer: logits / temperature (the row's own; greedy rows are left alone), then
    nucleus filtering (keep the most probable tokens whose cumulative probability reaches ``top_p``; Holtzman et al.
    2020, "The Curious Case of Neural Text Degeneration", via transformers' public ``TopPLogitsWarper``), then one
    token drawn from the softmax with the row's generator. The returned scores keep only the drawn token, so greedy
    decoding emits it. A row whose generated part holds a stop token is finished and draws nothing: a stream is
    used only for its own answer's tokens, whatever the rest of the batch does.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        temperatures: Sequence[float],
        top_p: float,
        stop_ids: Sequence[int],
        prompt_width: int,
    ) -> None:
        self.generators = list(generators)
        self.temperatures = list(temperatures)
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None
        self.stop_ids = torch.tensor(list(stop_ids))
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width :]
        finished = torch.isin(generated, self.stop_ids.to(generated.device)).any(dim=1).tolist()
        rows = [r for r, t in enumerate(self.temperatures) if not (is_greedy(t) or finished[r])]
        if not rows:
            return scores
        # the filtering is row by row whatever the batch, so it runs on all drawing rows at once; only the draws,
        # each from its row's generator, are one call per row
        temperatures = torch.tensor([self.temperatures[r] for r in rows], device=scores.device, dtype=scores.dtype)
        logits = scores[rows] / temperatures[:, None]
        if self.top_p is not None:
            logits = self.top_p(input_ids[rows], logits)
        probabilities = logits.float().softmax(dim=-1)
        drawn = scores.clone()
        for position, row in enumerate(rows):
            token = torch.multinomial(probabilities[position], 1, generator=self.generators[row])
            drawn[row] = float("-inf")
            drawn[row, token] = 0.0
        return drawn


class Answer(NamedTuple):
    text: str
    finished: bool  # it ended at a stop token, not at max_new_tokens


def generate_texts(model, tokenizer, texts: Sequence[str], **options) -> list[str]:
    """The answers of ``generate_answers``, as text."""
    return [answer.text for answer in generate_answers(model, tokenizer, texts, **options)]


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    generators: Sequence[torch.Generator],
    temperatures: Sequence[float],
    max_new_tokens: int,
    top_p: float = 1.0,
    stop_ids: Sequence[int] | None = None,
    templated: bool = True,
    strip: bool = True,
) -> list[Answer]:
    """One answer per prompt text of one batch: left-padded, stopped at any of ``stop_ids`` (default: the model's
    and tokenizer's EOS, ``stop_token_ids``), decoded without special tokens and, with ``strip``, stripped of
    surrounding whitespace (as AlpacaEval's ``evaluate_from_model`` with ``is_strip_output=True`` and FastChat's
    gen_model_answer.py do); ``finished`` says whether it stopped by itself or was cut at ``max_new_tokens``.

    ``templated``: the texts come from a chat template, which writes the BOS itself (no second one is added).
    """
    stop_ids = list(stop_ids) if stop_ids is not None else stop_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=not templated)
    finally:
        tokenizer.padding_side = padding_side
    batch = batch.to(device)
    width = batch["input_ids"].shape[1]
    processors = None
    if not all(is_greedy(t) for t in temperatures):
        processors = LogitsProcessorList([PerRowSampler(generators, temperatures, top_p, stop_ids, width)])
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,  # PerRowSampler draws; greedy decoding then emits the drawn token
        logits_processor=processors,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
        # the model's generation_config may ask for these; the answers follow our arguments only
        temperature=1.0,
        top_p=1.0,
        top_k=None,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    )
    answers = []
    for row in output[:, width:].tolist():
        ends = [i for i, token in enumerate(row) if token in stop_ids]
        text = tokenizer.decode(row[: ends[0]] if ends else row, skip_special_tokens=True)
        answers.append(Answer(text.strip() if strip else text, finished=bool(ends)))
    return answers


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

    Prompt ``i`` samples with its own generator seeded ``seed + i`` (``PerRowSampler``), so the answers do not
    depend on ``batch_size``.
    """
    model.eval()
    device = next(model.parameters()).device
    stop_ids = stop_token_ids(model, tokenizer)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rendered = [render_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
        answers += generate_texts(
            model,
            tokenizer,
            [text for text, _ in rendered],
            generators=row_generators(range(seed + start, seed + start + len(rendered)), device),
            temperatures=[temperature] * len(rendered),
            max_new_tokens=max_new_tokens,
            top_p=top_p,
            stop_ids=stop_ids,
            templated=rendered[0][1],
            strip=False,  # `amapo eval` and `compare` measure the answer as generated
        )
    return answers
