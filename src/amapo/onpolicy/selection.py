"""From K scored answers to one preference pair: the highest-scoring answer chosen, the lowest rejected.

The rule of SimPO's on-policy data (princeton-nlp/SimPO, on_policy_data_gen/reward_model_annotate.py: ``argmax`` /
``argmin`` of the reward scores), which made the princeton-nlp ``*-armorm`` sets. Choices made here, each counted in
the run's summary so nothing is dropped silently:

* an empty answer (nothing but whitespace) is never chosen or rejected: ``amapo train`` refuses empty responses;
* nor is an answer cut at ``--max_new_tokens``: it is not an answer the policy gave, and training would append
  an EOS the policy never wrote (teaching it to stop mid-sentence, or, from the other side, never to stop);
* nor is an answer that is not valid UTF-8: a byte-level tokenizer lets a model end mid-character, and decoding
  puts U+FFFD (the replacement character) where the bytes were; such text is not what the policy wrote, and pairs
  made of it would teach the replacement character;
* a prompt whose remaining answers all score the same (a tie, including all answers identical) gives no pair;
* among equal best (or worst) scores the first answer is taken, as ``numpy.argmax`` does.

``reward_gap`` = score(chosen) - score(rejected) > 0 is written with each pair, for ODPO (``--method odpo
--offset_column reward_gap``), whose offset is such a score difference.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

DROP_TIED = "all answers scored the same"
DROP_EMPTY = "fewer than 2 usable answers (non-empty, valid UTF-8, ended before --max_new_tokens)"
REPLACEMENT = "\ufffd"  # what decoding writes for bytes that are not UTF-8


def is_valid_text(answer: str) -> bool:
    """Not decoded from invalid UTF-8 (no replacement character)."""
    return REPLACEMENT not in answer


def select_pair(
    prompt: Any, answers: list[str], scores: list[float], finished: list[bool] | None = None, keep_samples: bool = False
) -> dict | str:
    """The pair row for one prompt, or the reason it gives none (``DROP_*``); ``finished``: which answers ended by
    themselves (default: all)."""
    finished = finished if finished is not None else [True] * len(answers)
    usable = [i for i, answer in enumerate(answers) if answer.strip() and finished[i] and is_valid_text(answer)]
    if len(usable) < 2:
        return DROP_EMPTY
    best = max(usable, key=lambda i: (scores[i], -i))  # the first of equal best
    worst = min(usable, key=lambda i: (scores[i], i))  # the first of equal worst
    if scores[best] == scores[worst]:
        return DROP_TIED
    conversational = isinstance(prompt, list)

    def response(text: str):
        return [{"role": "assistant", "content": text}] if conversational else text

    row = {
        "prompt": prompt,
        "chosen": response(answers[best]),
        "rejected": response(answers[worst]),
        "score_chosen": scores[best],
        "score_rejected": scores[worst],
        "reward_gap": scores[best] - scores[worst],
    }
    if keep_samples:  # the columns of the princeton-nlp *-armorm sets
        row["all_generated_responses"] = list(answers)
        row["all_rm_scores"] = list(scores)
    return row


def select_pairs(scored: list[dict], keep_samples: bool = False) -> tuple[list[dict], Counter]:
    """Pairs of every scored prompt (rows ``{prompt, samples, scores[, finished]}``) in order, and the count of each
    drop reason."""
    pairs, dropped = [], Counter()
    for row in scored:
        result = select_pair(row["prompt"], row["samples"], row["scores"], row.get("finished"), keep_samples)
        if isinstance(result, str):
            dropped[result] += 1
        else:
            pairs.append(result)
    return pairs, dropped
