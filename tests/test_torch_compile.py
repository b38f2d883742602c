"""``--torch_compile`` compiles a handful of times, not every step (issue 34).

The Trainer (through accelerate) wraps the whole model in ``torch.compile`` with ``dynamic=None``: a graph is first
compiled for the sizes it sees, and recompiled once with a size dynamic when that size changes. amapo's patched
forward used to run the LM head's chunk loop inside that graph, which fixed the response-token count as a
constant: one recompile per new count, until dynamo's limit (8) left the model uncompiled. Here a run whose
every batch differs in width and response-token count must stay within ``MAX_COMPILES`` compiled frames.
"""

from __future__ import annotations

import json
import string

import pytest
import torch
from torch._dynamo.utils import counters

from amapo.data.collator import PreferenceCollator
from amapo.train.parsing import parse_train_args
from amapo.train.run import run_training

STEPS, BATCH = 10, 4
# The first-batch check (``verify_fused_logps``) calls the model twice in eval mode without gradients (the fused
# forward, then the model's own forward: other arguments), then training compiles once with the sizes already
# dynamic (they differed between the check's one-row sample and the batch): 3. One more is allowed for a size that
# turns dynamic only later. The unfixed forward compiled 8 graphs in these 10 steps, one per response-token
# count, then hit dynamo's limit and ran uncompiled.
MAX_COMPILES = 4


def varying_rows() -> list[dict]:
    """``STEPS`` batches of ``BATCH`` pairs (sequential sampling), each batch with its own word length, so that
    the padded width and the response-token count change at every step (the tokenizer is byte-level)."""
    rows = []
    for step in range(STEPS):
        length = 2 + (7 * step) % 12  # 2, 9, 4, 11, 6, 13, 8, 3, 10, 5
        for i in range(BATCH):
            word = "".join(string.ascii_lowercase[(step + i + 3 * k) % 26] for k in range(length + i % 2))
            answer = word[::-1]
            rows.append({"prompt": f"reverse: {word} =", "chosen": answer, "rejected": answer[1:] + answer[:2]})
    return rows


def train(tmp_path, name: str, *extra: str) -> list[float]:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in varying_rows()))
    out = tmp_path / name
    args = ["--config", "builtin", "--dataset", str(data), "--output_dir", str(out), "--max_steps", str(STEPS),
            "--per_device_train_batch_size", str(BATCH), "--train_sampling_strategy", "sequential",
            "--eval_datasets", "none", "--save_strategy", "no", "--logging_steps", "1", *extra]  # fmt: skip
    run_training(parse_train_args(args))
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [log["loss"] for log in logs if "loss" in log]


def test_a_compiled_run_with_varying_batches_compiles_a_bounded_number_of_times(tmp_path, monkeypatch):
    shapes = []
    collate = PreferenceCollator.__call__

    def recording(self, features):
        batch = collate(self, features)
        shapes.append((batch["input_ids"].shape[1], batch["target_ids"].numel()))
        return batch

    monkeypatch.setattr(PreferenceCollator, "__call__", recording)
    eager = train(tmp_path, "eager")
    assert len(set(shapes)) == STEPS, shapes  # every batch its own width and response-token count
    torch.compiler.reset()  # no compiled frames of other tests count against dynamo's limit
    counters.clear()
    compiled = train(tmp_path, "compiled", "--torch_compile", "true", "--torch_compile_backend", "aot_eager")
    compiles = counters["frames"]["ok"]
    assert 0 < compiles <= MAX_COMPILES, f"{compiles} compiles in {STEPS} steps: {dict(counters['recompiles'])}"
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)  # and the compiled model computes what eager does
