"""Sample answers with ``model.generate``: batched, left-padded, one sampling step per token for the whole batch.

Decoding is exactly what the arguments say: greedy, or sampling with a temperature and nucleus (top-p) filtering;
the sampling defaults in a model's ``generation_config.json`` (top_k, repetition_penalty, ...) are not applied, so
the settings a caller records are all that shaped the answers. From the model's generation config only the stop
tokens are taken.

Each row's draws are its own: the uniform number that picks the token at step t of row r is a counter-based hash
of (the row's seed, t) (``uniforms``), not the next number of a stream shared by the batch or kept per row. So an
answer depends on its prompt and its seed only, not on which prompts share its batch, the batch size, the number of
processes or a resume (up to floating-point noise of different padding), and a step is one vectorized draw for the
whole batch: temperature, nucleus filtering and an inverse-CDF draw (``CounterSampler``). Until issue 28 each row
drew with its own ``torch.Generator``, one ``multinomial`` call per row per token; answers sampled since are
different once, and fixed after (``amapo.seeds.SAMPLER``, recorded with them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from amapo.model.decodings import DECODINGS
from amapo.seeds import stream_seed

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


# splitmix64 (Steele, Lea, Flood 2014, "Fast splittable pseudorandom number generators"; Vigna's reference
# constants), on int64 tensors: a multiplication wraps modulo 2^64 as in C, and the right shifts are made logical by
# masking off the sign bits an arithmetic shift brings in.
GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
MIX_1, MIX_2 = -4658895280553007687, -7723592293110705685  # 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    x = x + GOLDEN
    x = (x ^ _shift_right(x, 30)) * MIX_1
    x = (x ^ _shift_right(x, 27)) * MIX_2
    return x ^ _shift_right(x, 31)


def uniforms(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform number in [0, 1) per row (float64), a function of the row's 63-bit seed and the step alone:
    splitmix64 of the seed mixed with the step, its top 53 bits as the fraction. The same on every device."""
    mixed = splitmix64(splitmix64(seeds) ^ splitmix64(torch.full_like(seeds, step)))
    return _shift_right(mixed, 11).to(torch.float64) * 2.0**-53


class CounterSampler(LogitsProcessor):
    """Sampling as a logits processor for greedy ``generate``: every row's token of a step drawn at once.

    Per row: logits / temperature (the row's own; rows below ``GREEDY_BELOW`` take the argmax), then nucleus
    filtering (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration": the smallest set of most
    probable tokens whose probability reaches ``top_p``, ties in token order), then the token whose cumulative
    probability first exceeds the row's uniform number (``uniforms``: its seed and the step). The returned scores
    keep only the drawn token, so greedy decoding emits it. Finished rows draw too (the numbers are not a stream:
    nothing is consumed); ``generate`` pads them.
    """

    def __init__(self, seeds: Sequence[int], temperatures: Sequence[float], top_p: float, prompt_width: int) -> None:
        self.seeds = torch.tensor([int(s) for s in seeds], dtype=torch.int64)
        self.temperatures = torch.tensor([float(t) for t in temperatures], dtype=torch.float32)
        self.top_p = float(top_p)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.seeds.device != scores.device:  # once: the model's device
            self.seeds, self.temperatures = self.seeds.to(scores.device), self.temperatures.to(scores.device)
        step = input_ids.shape[1] - self.prompt_width
        tokens = draw(scores, self.temperatures, self.top_p, uniforms(self.seeds, step))
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens[:, None], 0.0)


def draw(scores: torch.Tensor, temperatures: torch.Tensor, top_p: float, uniform: torch.Tensor) -> torch.Tensor:
    """The token of each row [B] for logits ``scores`` [B, V]: the argmax where the temperature is below
    ``GREEDY_BELOW``, else the inverse-CDF draw at ``uniform`` [B] from softmax(scores / temperature) kept to the
    nucleus ``top_p`` (sorted by probability, then token id, so ties are ordered the same everywhere)."""
    greedy = temperatures < GREEDY_BELOW
    logits = scores.float() / torch.where(greedy, 1.0, temperatures)[:, None]
    sorted_p, order = logits.softmax(dim=-1).sort(dim=-1, descending=True, stable=True)
    if top_p < 1.0:  # keep a token while the mass before it is below top_p: the smallest set that reaches it
        before = sorted_p.cumsum(dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    cumulative = sorted_p.double().cumsum(dim=-1)
    target = uniform[:, None] * cumulative[:, -1:]
    position = (cumulative <= target).sum(dim=-1).clamp_(max=sorted_p.shape[-1] - 1)
    sampled = order.gather(-1, position[:, None]).squeeze(-1)
    return torch.where(greedy, scores.argmax(dim=-1), sampled)


def cache_options(decoding: str, device) -> dict:
    """``generate``'s cache for ``decoding``: ``static`` a static KV cache, for which transformers compiles the
    forward on a GPU (one graph for every decoding step: no per-step launch overhead, after seconds of start-up);
    ``dynamic`` the growing cache; ``auto`` static on CUDA, dynamic elsewhere (on a CPU compiling costs more than it
    saves)."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    static = decoding == "static" or (decoding == "auto" and torch.device(device).type == "cuda")
    return {"cache_implementation": "static"} if static else {}


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
    seeds: Sequence[int],
    temperatures: Sequence[float],
    max_new_tokens: int,
    top_p: float = 1.0,
    stop_ids: Sequence[int] | None = None,
    templated: bool = True,
    strip: bool = True,
    decoding: str = "auto",
) -> list[Answer]:
    """One answer per prompt text of one batch: left-padded, stopped at any of ``stop_ids`` (default: the model's
    and tokenizer's EOS, ``stop_token_ids``), decoded without special tokens and, with ``strip``, stripped of
    surrounding whitespace (as AlpacaEval's ``evaluate_from_model`` with ``is_strip_output=True`` and FastChat's
    gen_model_answer.py do); ``finished`` says whether it stopped by itself or was cut at ``max_new_tokens``.

    ``seeds``: each row's 63-bit seed (``CounterSampler``). ``templated``: the texts come from a chat template,
    which writes the BOS itself (no second one is added). ``decoding``: the KV cache (``cache_options``).
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
        processors = LogitsProcessorList([CounterSampler(seeds, temperatures, top_p, width)])
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,  # CounterSampler draws; greedy decoding then emits the drawn token
        **cache_options(decoding, device),
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

    Prompt ``i`` samples with its own seed (``stream_seed("amapo-answers", seed, i)``, ``CounterSampler``), so
    the answers do not depend on ``batch_size``.
    """
    model.eval()
    stop_ids = stop_token_ids(model, tokenizer)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rendered = [render_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
        answers += generate_texts(
            model,
            tokenizer,
            [text for text, _ in rendered],
            seeds=[stream_seed("amapo-answers", seed, i) for i in range(start, start + len(rendered))],
            temperatures=[temperature] * len(rendered),
            max_new_tokens=max_new_tokens,
            top_p=top_p,
            stop_ids=stop_ids,
            templated=rendered[0][1],
            strip=False,  # `amapo eval` and `compare` measure the answer as generated
        )
    return answers
