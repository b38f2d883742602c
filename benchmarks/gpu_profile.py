#!/usr/bin/env python
"""Where a preference step's time goes, amapo against TRL: two steps of each under ``torch.profiler``.

    python benchmarks/gpu_profile.py OUT [preference_step.py's options: --vocab, --hidden_size, --min_len, ...]

Each framework runs as a ``preference_step.py`` worker (same model, data and settings as the benchmark; one
vocabulary, ``--min_len``/``--max_len``) for 1 + 3 steps: the first unmeasured, the second the profiler's warm-up,
the last two profiled with shapes recorded. ``prefstep/profile.py`` cuts each trace into attention, layer matmuls,
LM head / log-probs, elementwise (norms, activations, RoPE), optimizer, copies and CPU-side gaps, and lists the top
15 kernels (on a CPU: operators by self time). Writes ``OUT/gpu_profile.md`` and ``OUT/gpu_profile.json``; the
traces stay in the work folder (``--workdir``; a folder that already holds the benchmark's model and data of that
vocabulary and length reuses them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import preference_step  # noqa: E402
from prefstep.common import liger_status  # noqa: E402
from prefstep.data import build_model, build_tokenizer, make_pairs, model_shape  # noqa: E402
from prefstep.profile import ACTIVE_STEPS, analyze_trace, markdown  # noqa: E402
from prefstep.runner import probe_device, run_worker  # noqa: E402

DEFAULT_FRAMEWORKS = ["amapo-amapo", "trl-cpo-simpo"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--profile_frameworks", nargs="+", default=DEFAULT_FRAMEWORKS)
    own, rest = parser.parse_known_args(argv)
    a = preference_step.parse_args([*rest, "--steps", str(ACTIVE_STEPS + 1), "--warmup", "1"])
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    a.with_liger = liger_status()[0]
    vocab = a.vocab[0]
    workdir = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="gpu_profile_"))
    paths = model_and_data(a, vocab, workdir)
    own.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "device": probe_device(a, workdir).get("gpu", "cpu"), "vocab": vocab,
              "lengths": f"{a.min_len}-{a.max_len}", "frameworks": {}}  # fmt: skip
    sections = [f"## Profile: {report['device']}, vocab {vocab}, {a.min_len}-{a.max_len} words per prompt+response, "
                f"batch {a.batch}", ""]  # fmt: skip
    for name in own.profile_frameworks:
        trace = workdir / f"trace-{name}.json"
        trace.unlink(missing_ok=True)
        a.profile_trace = trace
        result = run_worker(a, name, vocab, paths, workdir, f"profile-{name}")
        if result.get("ok") and trace.exists():
            analysis = analyze_trace(trace, vocab)
            report["frameworks"][name] = analysis
            sections += [markdown(name, analysis), ""]
        else:
            error = result.get("error") or "no trace written"
            report["frameworks"][name] = {"error": error, "stderr_tail": result.get("stderr_tail")}
            sections += [f"### {name}: FAILED: {error}", ""]
        print(sections[-2], flush=True)
    (own.out / "gpu_profile.json").write_text(json.dumps(report, indent=1, default=str))
    (own.out / "gpu_profile.md").write_text("\n".join(sections))
    return 0 if all("error" not in r for r in report["frameworks"].values()) else 1


def model_and_data(a, vocab: int, workdir: Path) -> dict:
    """The benchmark's model and pairs for this vocabulary and length, built unless the work folder has them."""
    model_dir = workdir / f"model-v{vocab}"
    if not (model_dir / "config.json").exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        build_tokenizer(vocab, model_dir)
        build_model(vocab, model_dir, a.seed, a.max_len, a.device == "cuda", model_shape(a))
    data = workdir / f"pairs-v{vocab}-{a.min_len}-{a.max_len}.jsonl"
    if not data.exists():
        rows = make_pairs(a.batch * (a.warmup + a.steps), vocab, a.min_len, a.max_len, a.seed)
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"model_dir": model_dir, "data": data}


if __name__ == "__main__":
    sys.exit(main())
