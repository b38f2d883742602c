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

Two variants share the prompts, the true reward and the SFT policy (``VARIANTS``):

* ``reverse``: answers corrupted by substitutions only, so chosen and rejected always have the same length. It
  exercises pairs ranked right against wrong and near-ties against clear pairs, but never length.
* ``reverse-lengths``: training and in-distribution answers come from substitutions or edits (adjacent swaps,
  deletions, repeats), so most pairs differ in length, and a reward that ignores length (DPO's summed log-ratio)
  meets a real length difference; response-OOD answers are right but padded or cut at the end (only their length
  is wrong), the case a length-exploiting reward gets backwards.

Each held-out set is a pool of ``TaskSpec.eval_pool`` pairs; recipes read a prefix (``@train[:256]``), so a larger
set is a superset of a smaller one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
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


def pad_or_cut(target: str, errors: int, rng: random.Random) -> str:
    """``reverse-lengths`` response-OOD generator: the right letters, then ``errors`` extra ones or ``errors`` cut."""
    if rng.random() < 0.5 and errors < len(target):
        return target[: len(target) - errors]
    return target + "".join(rng.choice(ALPHABET) for _ in range(errors))


def substitute_or_edit(target: str, errors: int, rng: random.Random) -> str:
    """``reverse-lengths`` training generator: substitutions or edits, one of the two per answer at random."""
    return (substitute if rng.random() < 0.5 else edit)(target, errors, rng)


@dataclass(frozen=True)
class Variant:
    """A task variant: how answers are corrupted in training (and in distribution) and for response-OOD."""

    name: str
    train_generator: Callable[[str, int, random.Random], str]
    ood_generator: Callable[[str, int, random.Random], str]


VARIANTS = {
    "reverse": Variant("reverse", substitute, edit),
    "reverse-lengths": Variant("reverse-lengths", substitute_or_edit, pad_or_cut),
}


@dataclass(frozen=True)
class TaskSpec:
    """Sizes of the generated splits; the defaults fit the 3-minute CPU budget of ``amapo train``."""

    train_pairs: int = 2048
    eval_pairs: int = 256  # drawn first, as before pools existed: the recipes' @train[:256] prefix
    eval_pool: int = 8192  # pairs per held-out set in all (``amapo compare --eval_pairs`` reads up to this many)
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


def generate_task(spec: TaskSpec | None = None) -> dict[str, dict[str, list[dict]]]:
    """All splits of every variant, seeded: ``{variant: {"sft", "train", held-out set: pairs}}``.

    One random stream in a fixed order (SFT examples, then ``reverse``, then ``reverse-lengths``), so adding a
    variant or growing a pool never changes what was drawn before it. Words never repeat across splits or variants,
    so every held-out prompt is unseen in SFT and in training.
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
    variants = {}
    for variant in VARIANTS.values():
        train = [_pair(fresh_word(TRAIN_LENGTHS), variant.train_generator, rng) for _ in range(spec.train_pairs)]
        splits = {"sft": sft, "train": train}
        held_out = (
            ("in_distribution", TRAIN_LENGTHS, variant.train_generator),
            ("prompt_ood", LONG_LENGTHS, variant.train_generator),
            ("response_ood", TRAIN_LENGTHS, variant.ood_generator),
            ("mutual_ood", LONG_LENGTHS, variant.ood_generator),
        )
        for count in (spec.eval_pairs, spec.eval_pool - spec.eval_pairs):  # the first 256 of each set, then the rest
            for name, lengths, generator in held_out:
                splits.setdefault(name, []).extend(_pair(fresh_word(lengths), generator, rng) for _ in range(count))
        variants[variant.name] = splits
    return variants


def task_profile(pairs: list[dict]) -> dict[str, float]:
    """What a set of pairs exercises: the share whose answers differ in length, the mean length difference
    (chosen minus rejected, in letters), and the share of near-ties (true rewards within 0.15: about one letter
    of a 7-letter word)."""
    length_gaps = [len(p["chosen"]) - len(p["rejected"]) for p in pairs]
    reward_gaps = [p["chosen_reward"] - p["rejected_reward"] for p in pairs]
    return {
        "pairs": len(pairs),
        "length_differs": sum(g != 0 for g in length_gaps) / len(pairs),
        "length_gap": sum(length_gaps) / len(pairs),
        "abs_length_gap": sum(abs(g) for g in length_gaps) / len(pairs),
        "near_ties": sum(g <= 0.15 for g in reward_gaps) / len(pairs),
    }
