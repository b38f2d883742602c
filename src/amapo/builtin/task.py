"""The built-in synthetic preference task: reverse a word, with a known true reward for any answer.

A prompt is ``"reverse: kdaf ="`` and the ideal answer is the reversed word ``"fadk"``. The true reward of any
answer y against the target t is the share of positions it gets right, normalized by the longer of the two:

    R(y) = #{i < min(|y|, |t|) : y_i = t_i} / max(|y|, |t|)          in [0, 1]

so it is defined for every generated string, not only for dataset answers. A preference pair is two corrupted
answers to the same prompt with different true rewards; the chosen one has the higher. Pairs vary in difficulty:
reward gaps from one letter (nearly tied) to several.

Held-out sets follow the paper's out-of-distribution settings (AMaPO, Sec. 5, after the rm-robustness sets):

* in-distribution: unseen words of the training lengths (4-7), answers corrupted by letter substitutions;
* prompt-OOD: longer words (8-10), which no training prompt has, same corruption;
* response-OOD: training-length words, answers from a different generator (adjacent swaps, deletions, repeats);
* mutual-OOD: both shifts at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ALPHABET = "abcdefghijklmnop"
TRAIN_LENGTHS = (4, 7)
LONG_LENGTHS = (8, 10)
EVAL_SETS = ("in_distribution", "prompt_ood", "response_ood", "mutual_ood")


def make_prompt(word: str) -> str:
    return f"reverse: {word} ="


def target_of(prompt: str) -> str:
    """The ideal answer to a prompt made by ``make_prompt``."""
    word = prompt.removeprefix("reverse: ").removesuffix(" =")
    return word[::-1]


def true_reward(prompt: str, answer: str) -> float:
    """R(y): the share of positions of the reversed word that the answer gets right (see module docstring)."""
    target, answer = target_of(prompt), answer.strip()
    if not target and not answer:
        return 1.0
    hits = sum(a == b for a, b in zip(answer, target, strict=False))
    return hits / max(len(answer), len(target))


def substitute(target: str, errors: int, rng: random.Random) -> str:
    """In-distribution generator: replace ``errors`` distinct positions by a different letter."""
    letters = list(target)
    for i in rng.sample(range(len(letters)), min(errors, len(letters))):
        letters[i] = rng.choice([c for c in ALPHABET if c != letters[i]])
    return "".join(letters)


def edit(target: str, errors: int, rng: random.Random) -> str:
    """Response-OOD generator: adjacent swaps, deletions and repeats instead of substitutions."""
    letters = list(target)
    for _ in range(errors):
        kind = rng.choice(("swap", "delete", "repeat"))
        i = rng.randrange(len(letters))
        if kind == "swap" and len(letters) > 1:
            j = min(i + 1, len(letters) - 1) if i + 1 < len(letters) else i - 1
            letters[i], letters[j] = letters[j], letters[i]
        elif kind == "delete" and len(letters) > 2:
            del letters[i]
        else:
            letters.insert(i, letters[i])
    return "".join(letters)


@dataclass(frozen=True)
class TaskSpec:
    """Sizes of the generated splits; the defaults fit the 3-minute CPU budget of ``amapo train``."""

    train_pairs: int = 2048
    eval_pairs: int = 256
    sft_examples: int = 4096
    seed: int = 0


def _random_word(rng: random.Random, lengths: tuple[int, int]) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(*lengths)))


def _pair(word: str, generator, rng: random.Random) -> dict:
    """Two answers with different true rewards; the number of errors sets the difficulty."""
    prompt, target = make_prompt(word), word[::-1]
    for _ in range(100):
        a = generator(target, rng.randint(0, max(1, len(target) // 2)), rng)
        b = generator(target, rng.randint(1, len(target) - 1), rng)
        ra, rb = true_reward(prompt, a), true_reward(prompt, b)
        if ra != rb:
            (chosen, rc), (rejected, rr) = sorted([(a, ra), (b, rb)], key=lambda p: -p[1])
            return {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "chosen_reward": rc,
                "rejected_reward": rr,
            }
    raise RuntimeError(f"could not draw two answers with different rewards for {word!r}")


def generate_task(spec: TaskSpec | None = None) -> dict[str, list[dict]]:
    """All splits, seeded: ``sft`` (prompt, target), ``train`` pairs, and the four held-out pair sets.

    Words never repeat across splits, so every held-out prompt is unseen in training.
    """
    spec = spec or TaskSpec()
    rng = random.Random(spec.seed)
    seen: set[str] = set()

    def fresh_word(lengths: tuple[int, int]) -> str:
        while True:
            word = _random_word(rng, lengths)
            if word not in seen:
                seen.add(word)
                return word

    sft = []
    for _ in range(spec.sft_examples):
        word = fresh_word(TRAIN_LENGTHS)
        sft.append({"prompt": make_prompt(word), "completion": word[::-1]})
    splits = {"sft": sft, "train": [_pair(fresh_word(TRAIN_LENGTHS), substitute, rng) for _ in range(spec.train_pairs)]}
    for name, lengths, generator in (
        ("in_distribution", TRAIN_LENGTHS, substitute),
        ("prompt_ood", LONG_LENGTHS, substitute),
        ("response_ood", TRAIN_LENGTHS, edit),
        ("mutual_ood", LONG_LENGTHS, edit),
    ):
        splits[name] = [_pair(fresh_word(lengths), generator, rng) for _ in range(spec.eval_pairs)]
    return splits
