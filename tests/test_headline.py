"""The speed-and-memory headline of README.md and docs/speed-and-memory.md is what ``benchmarks/headline.py`` renders
from the committed benchmark results (issue 36): a hand edit of either page's block, or a new result file committed
without regenerating, fails here. Then the rendering itself, on made-up results."""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python reports/regenerate.py --only headline"
GIB = 2**30


def headline_script():
    spec = importlib.util.spec_from_file_location("headline", ROOT / "benchmarks" / "headline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


headline = headline_script()


@pytest.mark.parametrize("page", list(headline.PAGES))
def test_the_page_shows_the_headline_the_committed_results_give(page):
    expected, shown = headline.block(headline.PAGES[page]), headline.page_block(page)
    assert shown is not None, f"{page} has lost its block between '<!-- speed-headline: ... -->' and " + headline.END
    diff = "\n".join(difflib.unified_diff(shown.splitlines(), expected.splitlines(), "page", "rendered", lineterm=""))
    assert shown == expected, (
        f"{page}'s speed headline is not what benchmarks/headline.py renders from the committed results "
        f"({', '.join(s.file for s in headline.SOURCES)}); rewrite it with `{REGENERATE}`:\n{diff}"
    )


def result(device: str, summary: dict[str, tuple[float, float]], key: str = "cases") -> dict:
    """A made-up ``preference_step.py`` result: framework -> (tokens/s, peak memory in bytes)."""
    cuda = device == "cuda"
    memory = "cuda_max_allocated" if cuda else "peak_rss"
    model = {"vocab": 128256, "hidden_size": 2048 if cuda else 256, "num_hidden_layers": 8 if cuda else 4,
             "dtype": "bfloat16" if cuda else "float32"}  # fmt: skip
    return {
        "settings": {"device": device, "batch": 8, "min_len": 1024, "max_len": 2048},
        "machine": {"cpu": "AMD EPYC", "cpus_usable": 2, **({"gpu": "NVIDIA H200"} if cuda else {})},
        key: {"the case": {"data": {"model": model},
                           "summary": {name: {"tokens_per_s": t, memory: m} for name, (t, m) in summary.items()},
                           **({"min_len": 256, "max_len": 512} if key == "cases" else {})}},
    }  # fmt: skip


CPU = headline.Source("cpu.json", "the case", ("amapo-amapo", "amapo-simpo"), "2026-12-05", "abc1234", machine="a VM")
GPU = headline.Source("gpu.json", "the case", ("amapo-simpo",), "2026-12-04", "def5678")
CPU_RESULT = result("cpu", {"amapo-amapo": (616, 2.85 * GIB), "amapo-simpo": (600, 2.86 * GIB),
                            "trl-cpo-simpo": (188, 14.1 * GIB), "liger-simpo": (426, 4.31 * GIB)})  # fmt: skip
GPU_RESULT = result("cuda", {"amapo-simpo": (46_624, 44.75 * GIB), "trl-cpo-simpo": (49_698, 66.30 * GIB),
                             "liger-simpo": (49_079, 39.71 * GIB)}, key="vocabs")  # fmt: skip


def test_a_sentence_states_the_setup_and_amapo_against_trl_and_liger():
    assert headline.sentence(CPU, CPU_RESULT) == (
        "On a CPU (a VM: AMD EPYC, 2 vCPUs, no GPU; fp32, a Llama-architecture model of hidden 256 and 4 layers, "
        "vocabulary 128,256, 8 pairs of 256-512 words; measured at abc1234, 2026-12-05), amapo's AMaPO and SimPO "
        "steps ran at 3.2-3.3x the tokens/s of TRL's CPOTrainer SimPO and 1.41-1.45x the Liger-Kernel loop's, at "
        "0.20x TRL's peak RSS (2.85-2.86 vs 14.10 GiB) and 0.66x Liger's."
    )  # two amapo steps: a range where they round apart, one number where they do not
    assert headline.sentence(GPU, GPU_RESULT, bullet=True) == (
        "- **On one NVIDIA H200** (bf16, a Llama-architecture model of hidden 2048 and 8 layers, vocabulary "
        "128,256, 8 pairs of 1024-2048 words; measured at def5678, 2026-12-04): amapo's SimPO step was *not* ahead: "
        "0.94x the tokens/s of TRL's CPOTrainer SimPO and 0.95x the Liger-Kernel loop's, at 0.67x TRL's peak CUDA "
        "memory (44.75 vs 66.30 GiB) but 1.13x Liger's."
    )  # older files keep their cases under "vocabs", and their lengths in the settings


def test_the_verdict_and_the_ratios_follow_the_numbers():
    ahead_of_trl = result("cpu", {"amapo-simpo": (300, GIB), "trl-cpo-simpo": (200, GIB), "liger-simpo": (400, GIB)})
    source = CPU._replace(frameworks=("amapo-simpo",))
    assert "amapo's SimPO step was ahead of TRL only: 1.50x the tokens/s of TRL's CPOTrainer SimPO and 0.75x" in (
        headline.sentence(source, ahead_of_trl)
    )
    assert "at 1.00x TRL's peak RSS (1.00 vs 1.00 GiB) and 1.00x Liger's" in headline.sentence(source, ahead_of_trl)
    assert [headline.ratio(v) for v in ([3.27], [1.4456, 1.4467], [0.2], [3.16, 3.27], [0.6749])] == [
        "3.3x", "1.45x", "0.20x", "3.2-3.3x", "0.67x"
    ]  # fmt: skip


def test_write_rewrites_only_the_blocks_and_needs_the_markers(tmp_path):
    (tmp_path / headline.RESULTS).mkdir(parents=True)
    (tmp_path / headline.RESULTS / "cpu.json").write_text(json.dumps(CPU_RESULT))
    (tmp_path / headline.RESULTS / "gpu.json").write_text(json.dumps(GPU_RESULT))
    stale = "<!-- speed-headline: old -->\n\nOn a CPU, 9.9x, typed by hand.\n\n" + headline.END
    for page in headline.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text(f"# {page}\n\nbefore\n\n{stale}\n\nafter\n")
    headline.write(tmp_path, (CPU, GPU))
    for page, layout in headline.PAGES.items():
        fresh = headline.block(layout, tmp_path, (CPU, GPU))
        assert (tmp_path / page).read_text() == f"# {page}\n\nbefore\n\n{fresh}\n\nafter\n"
        assert fresh.startswith(
            "<!-- speed-headline: written by reports/regenerate.py from benchmarks/results/{cpu.json, gpu.json} -->"
        )
    assert headline.block("bullets", tmp_path, (CPU, GPU)).count("\n- **On ") == 2
    assert "\n\nOn a CPU (a VM:" in headline.block("paragraph", tmp_path, (CPU, GPU))
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match=r"README\.md has no block"):
        headline.write(tmp_path, (CPU, GPU))
