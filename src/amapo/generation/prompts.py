"""Asking the model: every question's conversation through the chat template, checked before the model loads, then
answered turn by turn.

A question's turn t is asked after the conversation so far (user 1, the model's answer 1, ..., user t), as FastChat's
fastchat/llm_judge/gen_model_answer.py asks MT-Bench's second turn (one conversation template, each answer appended
before the next user message); single-turn benchmarks are the case of one turn.
"""

from __future__ import annotations

from jinja2 import TemplateError

from amapo.errors import UserError
from amapo.generation.questions import Question, QuestionSet
from amapo.generation.settings import Sampling
from amapo.seeds import stream_seed

PLACEHOLDER_ANSWER = "(the model's answer)"  # renders later turns before any answer exists, to check the template


def render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_prompts(tokenizer, questions: QuestionSet) -> list[int]:
    """Render every question's whole conversation once (later turns after a placeholder answer), so a template that
    fails on a question fails now; return each first prompt's length in tokens."""
    lengths = []
    for question in questions.questions:
        messages: list[dict] = []
        try:
            for turn, text in enumerate(question.turns):
                messages.append({"role": "user", "content": text})
                rendered = render(tokenizer, messages)
                if turn == 0:
                    lengths.append(len(tokenizer(rendered, add_special_tokens=False)["input_ids"]))
                messages.append({"role": "assistant", "content": PLACEHOLDER_ANSWER})
        except TemplateError as err:
            raise UserError(
                f"{questions.path.name}:{question.line}: the chat template fails on this question ({err}); pass "
                "--chat_template with one that takes its messages"
            ) from None
    return lengths


def answer_batch(
    model, tokenizer, batch: list[Question], sampling: Sampling, stop_ids: list[int], decoding: str = "auto"
) -> list[list[str]]:
    """Every turn of every question of ``batch``: turn t of all questions together, each turn asked after the
    conversation so far (user 1, the model's answer 1, user 2, ...) through the chat template, as FastChat's
    gen_model_answer.py asks MT-Bench's second turn. Turn t of a question samples with its own seed
    (``stream_seed``: the question's seed and t), whatever else is in the batch."""
    temperatures = [sampling.temperature_of(q) for q in batch]
    conversations: list[list[dict]] = [[] for _ in batch]
    answers: list[list[str]] = [[] for _ in batch]
    for turn in range(max(len(q.turns) for q in batch)):
        active = [i for i, q in enumerate(batch) if turn < len(q.turns)]
        for i in active:
            conversations[i].append({"role": "user", "content": batch[i].turns[turn]})
        texts = generate_texts(
            model,
            tokenizer,
            [render(tokenizer, conversations[i]) for i in active],
            seeds=[stream_seed("amapo-generate", sampling.seed_of(batch[i]), turn) for i in active],
            decoding=decoding,
            temperatures=[temperatures[i] for i in active],
            max_new_tokens=sampling.max_new_tokens,
            top_p=sampling.top_p,
            stop_ids=stop_ids,
        )
        for i, text in zip(active, texts, strict=True):
            answers[i].append(text)
            conversations[i].append({"role": "assistant", "content": text})
    return answers


def generate_texts(*args, **kwargs):
    """``amapo.model.generate.generate_texts`` (imported on first use: it needs torch)."""
    from amapo.model.generate import generate_texts as generate

    return generate(*args, **kwargs)
