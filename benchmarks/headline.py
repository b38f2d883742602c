"""The speed-and-memory headline of README.md and docs/speed-and-memory.md, rendered from the committed results of
``benchmarks/preference_step.py`` (issue 36), so that none of its numbers is typed by hand.

    python reports/regenerate.py --only headline    # rewrites both pages' blocks; reads JSON only (no training)

Each page's block lies between ``<!-- speed-headline: ... -->`` and ``<!-- /speed-headline -->``;
``tests/test_headline.py`` fails when it is not what this renders from the committed files (a hand edit, or a new
result file committed without regenerating). To headline another run, point ``SOURCES`` at its file.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "benchmarks/results"
PAGES = {"README.md": "paragraph", "docs/speed-and-memory.md": "bullets"}  # page -> how its block is laid out
TRL, LIGER = "trl-cpo-simpo", "liger-simpo"  # what amapo is compared with (preference_step.py's framework names)
STEPS = {"amapo-amapo": "AMaPO", "amapo-simpo": "SimPO", "amapo-dpo": "DPO"}
DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
GIB = 2**30
END = "<!-- /speed-headline -->"
BLOCK = re.compile(r"<!-- speed-headline:.*?-->.*?" + re.escape(END), re.S)


class Source(NamedTuple):
    """One result file the headline quotes, and what the file itself does not record: when, and which commit."""

    file: str  # under RESULTS
    case: str  # its key under the file's "cases" (older files: "vocabs")
    frameworks: tuple[str, ...]  # the amapo frameworks the sentence speaks for
    date: str
    commit: str
    machine: str = ""  # what the machine is, beyond the file's CPU name (CPU runs)


SOURCES = (
    # BENCHMARKS.md, "One preference step on CPU": the code at d64aa46, 2026-12-05
    Source("cpu.json", "vocab 128256, 256-512 words", ("amapo-amapo", "amapo-simpo"), "2026-12-05", "d64aa46",
           machine="this project's development VM"),
    # BENCHMARKS.md, "One H200": benchmarks/gpu_check.py at 715727a. SimPO only: run 1's single amapo-amapo round
    # was slowed by a flaw of the harness fixed since (issue 25)
    Source("h200-2026-12-04-benchmark-run1.json", "128256", ("amapo-simpo",), "2026-12-04", "715727a"),
)  # fmt: skip


def ratio(values: list[float]) -> str:
    """``3.3x`` (one decimal from 2x up, two below), or a range ``3.2-3.3x`` where amapo's steps differ."""
    cells = sorted({f"{v:.1f}" if v >= 2 else f"{v:.2f}" for v in values}, key=float)
    return "-".join(dict.fromkeys([cells[0], cells[-1]])) + "x"


def gib(values: list[float]) -> str:
    cells = sorted({f"{v / GIB:.2f}" for v in values}, key=float)
    return "-".join(dict.fromkeys([cells[0], cells[-1]]))


def sentence(source: Source, result: dict, bullet: bool = False) -> str:
    """One sentence: where and what was measured, then amapo's tokens/s and peak memory against TRL's CPOTrainer
    SimPO and Liger-Kernel's SimPO loop (``result``: a file written by ``benchmarks/preference_step.py``)."""
    case = (result.get("cases") or result["vocabs"])[source.case]
    settings, machine, model, summary = result["settings"], result["machine"], case["data"]["model"], case["summary"]
    cuda = settings["device"] == "cuda"
    memory, memory_name = ("cuda_max_allocated", "peak CUDA memory") if cuda else ("peak_rss", "peak RSS")
    ours, trl, liger = [summary[name] for name in source.frameworks], summary[TRL], summary[LIGER]
    speed = [[s["tokens_per_s"] / other["tokens_per_s"] for s in ours] for other in (trl, liger)]
    peak = [[s[memory] / other[memory] for s in ours] for other in (trl, liger)]

    where = f"one {machine['gpu']}" if cuda else "a CPU"
    hardware = "" if cuda else f"{source.machine}: {machine['cpu']}, {machine['cpus_usable']} vCPUs, no GPU; "
    lengths = f"{case.get('min_len', settings['min_len'])}-{case.get('max_len', settings['max_len'])}"
    setup = (
        f"{hardware}{DTYPES.get(model['dtype'], model['dtype'])}, a Llama-architecture model of hidden "
        f"{model['hidden_size']} and {model['num_hidden_layers']} layers, vocabulary {model['vocab']:,}, "
        f"{settings['batch']} pairs of {lengths} words; measured at {source.commit}, {source.date}"
    )
    names = [STEPS.get(name, name) for name in source.frameworks]
    steps = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    steps += " steps" if len(names) > 1 else " step"
    verb = "were" if len(names) > 1 else "was"
    ahead = [min(values) >= 1 for values in speed]
    verdict = {
        (True, True): "ran at ",
        (False, False): f"{verb} *not* ahead: ",
        (True, False): f"{verb} ahead of TRL only: ",
        (False, True): f"{verb} ahead of the Liger loop only: ",
    }[tuple(ahead)]
    both_lower = (max(peak[0]) < 1) == (max(peak[1]) < 1)
    claim = (
        f"amapo's {steps} {verdict}{ratio(speed[0])} the tokens/s of TRL's CPOTrainer SimPO and {ratio(speed[1])} "
        f"the Liger-Kernel loop's, at {ratio(peak[0])} TRL's {memory_name} ({gib([s[memory] for s in ours])} vs "
        f"{gib([trl[memory]])} GiB) {'and' if both_lower else 'but'} {ratio(peak[1])} Liger's."
    )
    return f"- **On {where}** ({setup}): {claim}" if bullet else f"On {where} ({setup}), {claim}"


def start_marker(sources=SOURCES) -> str:
    files = ", ".join(source.file for source in sources)
    return f"<!-- speed-headline: written by reports/regenerate.py from {RESULTS}/{{{files}}} -->"


def block(layout: str, root: Path = ROOT, sources=SOURCES) -> str:
    """A page's block, markers included: one paragraph (README.md) or one bullet per source (docs)."""
    bullets = layout == "bullets"
    results = [json.loads((root / RESULTS / source.file).read_text()) for source in sources]
    sentences = [sentence(source, result, bullets) for source, result in zip(sources, results, strict=True)]
    fill = dict(width=115, break_on_hyphens=False, break_long_words=False)
    if bullets:
        body = "\n".join(textwrap.fill(text, subsequent_indent="  ", **fill) for text in sentences)
    else:
        body = textwrap.fill(" ".join(sentences), **fill)
    return "\n".join([start_marker(sources), "", body, "", END])


def page_block(page: str, root: Path = ROOT) -> str | None:
    """The block as the page has it now, or None where it has none."""
    found = BLOCK.search((root / page).read_text())
    return found.group(0) if found else None


def write(root: Path = ROOT, sources=SOURCES) -> list[str]:
    """Rewrite every page's block; each page must already have one (markers in place)."""
    for page, layout in PAGES.items():
        text = (root / page).read_text()
        if not BLOCK.search(text):
            raise SystemExit(f"{page} has no block between '<!-- speed-headline: ... -->' and {END!r}")
        new = block(layout, root, sources)
        (root / page).write_text(BLOCK.sub(lambda _, new=new: new, text, count=1))
    return list(PAGES)


if __name__ == "__main__":
    print(f"wrote the speed headline in {', '.join(write())}", file=sys.stderr)
