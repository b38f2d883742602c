"""Sets whose prompts each hold several responses, every response scored alone by the model's implicit reward h(y)
(``PreferenceLoss.response_reward``: beta/|y| log pi(y|x) for SimPO and AMaPO, beta log(pi/pi_ref) for DPO), then
compared as each benchmark compares them. One forward pass per response: a row's K responses are scored as
ceil(K/2) pairs through the usual pair batches (an odd K pairs its last response with its first). Pairing matters
only when a pair must be truncated: the prompt is then cut for both responses (as TRL, and so RM-Bench, cut it), so
RM-Bench's responses are paired as RM-Bench pairs them, chosen and rejected of the same style.

RM-Bench (Liu et al., ICLR 2025; github THU-KEG/RM-Bench: ``data/total_dataset.json``, Hub ``THU-KEG/RM-Bench``)
    Rows ``{id, prompt, chosen: [3 str], rejected: [3 str], domain}``; the three responses are the concise, the
    detailed plain-text and the detailed markdown style of one answer, in that order. Scored as its
    ``scripts/utils.py`` (``compute_accuracy``) scores them: per domain (chat, math, code, safety; a domain is
    matched by prefix, so safety-refuse and safety-response are safety), the 3 x 3 matrix M[i][j] = share of rows
    whose chosen response in style i scores strictly above the rejected response in style j; hard = mean of the
    cells above the diagonal (the chosen answer plainer than the rejected one), normal = the diagonal, easy = below
    it; a domain's average = mean(easy, normal, hard); overall easy / normal / hard and the average = means over
    the domains present. Our choice where RM-Bench reports none: the overall matrix is the mean of the domains'
    matrices (so its thirds give the overall easy / normal / hard).

Scored responses (the reward-robustness sets of Hong et al., ICML 2025, Hub ``rm-robustness/ultrafeedback-valid-*``,
as github LinkedIn-XFACT/RM-Robustness ``scripts/run_kendall.py`` reads them)
    Rows ``{instruction, response_1_text, ..., response_K_text, all_scores: [K gold scores]}``. Reported:
    ``accuracy``: the gold-best against the gold-worst response of each row (the binarization of the armorm
    preference sets; tied bests or worsts: every combination, averaged in the row; rows whose gold scores are all
    equal decide nothing and are counted, not scored); ``accuracy/all_pairs``: every pair of responses with
    different gold scores; ``kendall_tau``: Kendall's tau-b between the model's and the gold scores, averaged over
    the rows where it is defined (RM-Robustness's metric for these sets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from amapo.data.errors import DataError
from amapo.errors import UserError

RM_BENCH = "rm-bench"
SCORED_RESPONSES = "scored-responses"
PAIRS = "pairs"
SET_FORMATS = (PAIRS, RM_BENCH, SCORED_RESPONSES)

RM_BENCH_STYLES = ("concise", "plain", "markdown")  # concise; detailed, plain text; detailed, markdown
RM_BENCH_DOMAINS = ("chat", "math", "code", "safety")
RESPONSE_COLUMN = re.compile(r"^response_(\d+)_text$")


@dataclass
class ResponseSet:
    """One set's rows: a prompt and K responses each (``slots`` names the K fields, for errors)."""

    format: str
    prompts: list[str]
    responses: list[list[str]]
    slots: list[str]
    domains: list[str] = field(default_factory=list)  # RM-Bench: each row's domain group
    gold: np.ndarray | None = None  # scored responses: [rows, K]
    ids: list[Any] = field(default_factory=list)

    @property
    def pairs_per_row(self) -> int:
        return (len(self.slots) + 1) // 2

    @property
    def pair_order(self) -> list[int]:
        """The responses of a row in pair order: pair p holds responses pair_order[2p] and pair_order[2p + 1]."""
        k = len(self.slots)
        if self.format == RM_BENCH:  # (chosen[i], rejected[i]) for each style i
            return [i + half for i in range(k // 2) for half in (0, k // 2)]
        return [*range(k), 0][: 2 * self.pairs_per_row]


def detect_format(dataset: datasets.Dataset) -> str:
    """The format a set's columns say it has: RM-Bench's lists of responses, K scored responses, or pairs."""
    columns = set(dataset.column_names)
    if "all_scores" in columns and any(RESPONSE_COLUMN.match(c) for c in columns):
        return SCORED_RESPONSES
    if {"chosen", "rejected"} <= columns and len(dataset):
        first = dataset[0]["chosen"]
        if isinstance(first, list) and first and all(isinstance(x, str) for x in first):
            return RM_BENCH  # a list of plain strings (conversational rows hold lists of messages)
    return PAIRS


def read_response_set(dataset: datasets.Dataset, fmt: str) -> ResponseSet:
    """The rows of ``dataset`` in format ``fmt``, each checked (a ``DataError`` names the row and field)."""
    return read_rm_bench(dataset) if fmt == RM_BENCH else read_scored_responses(dataset)


def _text(row: dict, index: int, name: str) -> str:
    value = row.get(name)
    if value is None:
        raise DataError("missing", index, name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"must be a non-empty string, got {value!r:.60}", index, name)
    return value


def read_rm_bench(dataset: datasets.Dataset) -> ResponseSet:
    prompts, responses, domains, ids = [], [], [], []
    styles = len(RM_BENCH_STYLES)
    for index, row in enumerate(dataset):
        prompts.append(_text(row, index, "prompt"))
        texts = []
        for name in ("chosen", "rejected"):
            value = row.get(name)
            if not isinstance(value, list) or len(value) != styles:
                got = f"{len(value)}" if isinstance(value, list) else repr(value)[:40]
                raise DataError(
                    f"RM-Bench rows hold {styles} responses ({', '.join(RM_BENCH_STYLES)}), got {got}", index, name
                )
            for k, text in enumerate(value):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"response {k} ({RM_BENCH_STYLES[k]}) must be a non-empty string", index, name)
            texts += value
        responses.append(texts)
        domains.append(rm_bench_domain(row.get("domain"), index))
        ids.append(row.get("id", index))
    slots = [f"{name}[{k}]" for name in ("chosen", "rejected") for k in range(styles)]
    return ResponseSet(RM_BENCH, prompts, responses, slots, domains=domains, ids=ids)


def rm_bench_domain(value: Any, index: int) -> str:
    """RM-Bench's domain group of a row's ``domain`` (matched by prefix, as its ``split_dataset_by_domain``)."""
    if value is None:
        raise DataError(
            f"missing: RM-Bench rows name their domain ({', '.join(RM_BENCH_DOMAINS)}; safety-refuse and "
            "safety-response count as safety), as its data/total_dataset.json does",
            index,
            "domain",
        )
    group = next((d for d in RM_BENCH_DOMAINS if isinstance(value, str) and value.startswith(d)), None)
    if group is None:
        raise DataError(f"{value!r} is not an RM-Bench domain ({', '.join(RM_BENCH_DOMAINS)})", index, "domain")
    return group


def read_scored_responses(dataset: datasets.Dataset) -> ResponseSet:
    numbered = sorted((int(m.group(1)), c) for c in dataset.column_names if (m := RESPONSE_COLUMN.match(c)) is not None)
    slots = [c for _, c in numbered]
    if [n for n, _ in numbered] != list(range(1, len(slots) + 1)) or len(slots) < 2:
        raise DataError(
            f"scored-response sets number their responses response_1_text ... response_K_text (K >= 2), got "
            f"{', '.join(slots) or 'none'}"
        )
    prompt_field = "instruction" if "instruction" in dataset.column_names else "prompt"
    prompts, responses, gold = [], [], []
    for index, row in enumerate(dataset):
        prompts.append(_text(row, index, prompt_field))
        responses.append([_text(row, index, slot) for slot in slots])
        scores = row.get("all_scores")
        if not isinstance(scores, list) or len(scores) != len(slots):
            got = f"{len(scores)} values" if isinstance(scores, list) else repr(scores)[:40]
            raise DataError(f"must list one gold score per response ({len(slots)}), got {got}", index, "all_scores")
        if not all(isinstance(s, int | float) and np.isfinite(s) for s in scores):
            raise DataError(f"gold scores must be finite numbers, got {scores}", index, "all_scores")
        gold.append(scores)
    return ResponseSet(SCORED_RESPONSES, prompts, responses, slots, gold=np.asarray(gold, dtype=float))


def response_pairs(responses: ResponseSet, conversational: bool) -> datasets.Dataset:
    """Every response of every row exactly once (an odd K's last pairs with the first), as standard-form pairs,
    in ``ResponseSet.pair_order``. ``conversational``: messages, for the tokenizer's chat template."""
    per_row, order = responses.pairs_per_row, responses.pair_order

    def wrap(text: str, role: str):
        return [{"role": role, "content": text}] if conversational else text

    rows: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
    for prompt, texts in zip(responses.prompts, responses.responses, strict=True):
        for p in range(per_row):
            rows["prompt"].append(wrap(prompt, "user"))
            rows["chosen"].append(wrap(texts[order[2 * p]], "assistant"))
            rows["rejected"].append(wrap(texts[order[2 * p + 1]], "assistant"))
    return datasets.Dataset.from_dict(rows)


def source_error(err: DataError, responses: ResponseSet) -> UserError:
    """A tokenization error of pair row p, named by the set's own row and response field."""
    if err.row is None:
        return UserError(str(err))
    row, pair = divmod(err.row, responses.pairs_per_row)
    slot = responses.pair_order[2 * pair + (1 if err.field == "rejected" else 0)]
    name = responses.slots[slot] if err.field in ("chosen", "rejected") else err.field
    return DataError(err.reason, row, name)


def response_scores(chosen_rewards: np.ndarray, rejected_rewards: np.ndarray, responses: ResponseSet) -> np.ndarray:
    """[rows, K] rewards of each response, from the per-pair rewards of ``response_pairs``'s order."""
    per_row = responses.pairs_per_row
    in_pair_order = np.stack([chosen_rewards, rejected_rewards], axis=1).reshape(len(responses.prompts), 2 * per_row)
    first = {}  # response -> its first place in pair order (an odd K scores its first response twice)
    for place, response in enumerate(responses.pair_order):
        first.setdefault(response, place)
    scores = np.empty((len(responses.prompts), len(responses.slots)), dtype=in_pair_order.dtype)
    scores[:, list(first)] = in_pair_order[:, list(first.values())]
    return scores


# --- RM-Bench --------------------------------------------------------------------------------------------------


def style_matrix(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """M[i][j] = share of rows whose chosen response in style i scores strictly above the rejected one in style j."""
    return (chosen[:, :, None] > rejected[:, None, :]).mean(axis=0)


def difficulty(matrix: np.ndarray) -> dict[str, float]:
    """RM-Bench's easy (below the diagonal), normal (the diagonal) and hard (above it) accuracies of a matrix."""
    n = matrix.shape[0]
    return {
        "easy": float(matrix[np.tril_indices(n, -1)].mean()),
        "normal": float(np.diag(matrix).mean()),
        "hard": float(matrix[np.triu_indices(n, 1)].mean()),
    }


def rm_bench_metrics(scores: np.ndarray, domains: list[str]) -> dict[str, float]:
    """RM-Bench's numbers from [rows, 6] scores (3 chosen styles, then 3 rejected) and each row's domain group."""
    styles = len(RM_BENCH_STYLES)
    chosen, rejected = scores[:, :styles], scores[:, styles:]
    groups = np.asarray(domains)
    present = [d for d in RM_BENCH_DOMAINS if (groups == d).any()]
    out: dict[str, float] = {"prompts": float(len(scores))}
    matrices = []
    for domain in present:
        rows = groups == domain
        matrix = style_matrix(chosen[rows], rejected[rows])
        matrices.append(matrix)
        thirds = difficulty(matrix)
        out[f"rm_bench/{domain}"] = float(np.mean(list(thirds.values())))
        out.update({f"rm_bench/{domain}/{k}": v for k, v in thirds.items()})
        out[f"rm_bench/{domain}/prompts"] = float(rows.sum())
    overall = np.mean(matrices, axis=0)
    thirds = difficulty(overall)
    out.update({f"rm_bench/{k}": v for k, v in thirds.items()})
    out["accuracy"] = float(np.mean([out[f"rm_bench/{d}"] for d in present]))  # RM-Bench's "total_avg_acc"
    for i, chosen_style in enumerate(RM_BENCH_STYLES):
        for j, rejected_style in enumerate(RM_BENCH_STYLES):
            out[f"rm_bench/matrix/{chosen_style}_vs_{rejected_style}"] = float(overall[i, j])
    return out


# --- scored responses ----------------------------------------------------------------------------------------


def _pair_signs(values: np.ndarray) -> np.ndarray:
    """[rows, pairs] sign(v_i - v_j) over the pairs i < j of each row."""
    i, j = np.triu_indices(values.shape[1], 1)
    return np.sign(values[:, i] - values[:, j])


def kendall_tau_b(model: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row (NaN where either side is all tied), as ``scipy.stats.kendalltau`` computes it:
    (concordant - discordant) / sqrt((n0 - ties in model) (n0 - ties in gold)) over the row's pairs."""
    sm, sg = _pair_signs(model), _pair_signs(gold)
    denominator = np.sqrt((sm != 0).sum(axis=1) * (sg != 0).sum(axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (sm * sg).sum(axis=1) / denominator, np.nan)


def scored_response_metrics(scores: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Best-against-worst accuracy, all-pairs accuracy and mean Kendall tau-b (module docstring)."""
    best = gold == gold.max(axis=1, keepdims=True)
    worst = gold == gold.min(axis=1, keepdims=True)
    decided = ~(best & worst).all(axis=1)  # a row whose gold scores are all equal decides nothing
    wins = scores[:, :, None] > scores[:, None, :]  # [rows, i, j]: response i scores above response j
    combos = best[:, :, None] & worst[:, None, :]
    per_row = (wins & combos).sum(axis=(1, 2)) / np.maximum(combos.sum(axis=(1, 2)), 1)
    sm, sg = _pair_signs(scores), _pair_signs(gold)
    ordered = sg != 0
    taus = kendall_tau_b(scores, gold)
    out = {
        "prompts": float(len(scores)),
        "prompts/all_tied": float((~decided).sum()),
        "accuracy": float(per_row[decided].mean()) if decided.any() else float("nan"),
        "accuracy/all_pairs": float((sm[ordered] == sg[ordered]).mean()) if ordered.any() else float("nan"),
        "kendall_tau": float(np.nanmean(taus)) if np.isfinite(taus).any() else float("nan"),
    }
    return out


def response_set_metrics(scores: np.ndarray, responses: ResponseSet) -> dict[str, float]:
    if responses.format == RM_BENCH:
        return rm_bench_metrics(scores, responses.domains)
    return scored_response_metrics(scores, responses.gold)
