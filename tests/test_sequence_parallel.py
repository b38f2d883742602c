"""``--sequence_parallel_size`` on DeepSpeed's Ulysses in CPU processes (gloo), under the packaged ZeRO-3 config:

* the slices each rank reads back from DeepSpeed's data-loader adapter hold exactly the collator's response-token
  table, the token across each slice boundary included, and every pair-level column (precomputed reference
  log-probs) whole (no processes);
* 2 processes with SP 2 give the 1-process per-step losses, gradient norms, rewards and final weights (2 SGD steps
  without clipping: equal weights after SGD mean equal gradients) for AMaPO and for DPO with its live reference
  model, which ZeRO-3 shards like the policy;
* DPO's live reference under ZeRO-3 without SP (2 data-parallel processes) gives the 1-process run too;
* a run resumed under SP 2 from a checkpoint after step 1 (mid-epoch) gives the uninterrupted run's step 2;
* the option's misuses are one-line errors before anything loads.

The 1-process runs are plain (no DeepSpeed) and in this process; each SP 2 run holds the plain run's batch of 8 pairs
as one micro-batch, each data-parallel one 4 of them per process. 4 processes (SP 2 x DP 2) against 2 (DP 2), and
peak memory against SP 1, are ``benchmarks/sequence_parallel_memory.py``'s (``--check-dp``): too slow for CI on 2
cores.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sharded_training import TESTS, TRAIN, accelerate_launch, train_logs

from amapo.data.collator import PreferenceCollator
from amapo.errors import UserError
from amapo.model.layouts import model_inputs
from amapo.model.logps import REFERENCE_COLUMNS
from amapo.train import sequence_parallel as sp
from amapo.train.parsing import parse_train_args
from amapo.train.run import run_training

pytest.importorskip("deepspeed")

# TRAIN's run at 2 steps, 8 pairs a step, on attention and a layout Ulysses computes exactly
SP_TRAIN = (
    *(a for a in TRAIN if a not in ("--margin_stats", "all_ranks")), "--attn_implementation", "sdpa",
    "--batch_layout", "padded", "--max_steps", "2", "--per_device_train_batch_size", "8",
)  # fmt: skip
COMPARED = ("loss", "grad_norm", "logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected",
            "rewards/accuracies")  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The plain 1-process run of each method (in this process, no DeepSpeed), made once."""
    runs = {}

    def run(method: str) -> Path:
        if method not in runs:
            out = tmp_path_factory.mktemp(method) / "out"
            run_training(parse_train_args([*SP_TRAIN[1:], "--method", method, "--output_dir", str(out)]))
            runs[method] = out
        return runs[method]

    return run


def assert_same_run(got: Path, want: Path) -> None:
    """Per-step metrics and final weights equal (fp32 CPU, summed in another order: 1e-5)."""
    want_logs, got_logs = train_logs(want), train_logs(got)
    assert len(got_logs) == len(want_logs) == 2
    for a, b in zip(got_logs, want_logs, strict=True):
        for key in (k for k in COMPARED if k in b):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), key
    want_weights, got_weights = load_file(want / "model.safetensors"), load_file(got / "model.safetensors")
    for key, tensor in want_weights.items():
        torch.testing.assert_close(got_weights[key], tensor, rtol=0, atol=1e-5, msg=key)


def adapter_slices(batch: dict, size: int) -> list[dict]:
    """What ``UlyssesSPDataLoaderAdapter.refill`` hands rank j: ``shift_labels`` made before cutting, then columns
    [T/size * j, T/size * (j + 1)) of every tensor, non-tensors copied."""
    batch = dict(batch)
    labels = batch.pop("labels")
    batch["shift_labels"] = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    width = batch["input_ids"].shape[1] // size
    return [
        {k: v[:, width * j : width * (j + 1)] if torch.is_tensor(v) else v for k, v in batch.items()}
        for j in range(size)
    ]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_each_rank_reads_its_slice_of_the_response_table(size):
    rng = random.Random(size)
    pairs = [
        {
            "prompt_input_ids": [rng.randrange(3, 50) for _ in range(rng.randrange(1, 9))],
            "chosen_input_ids": [rng.randrange(3, 50) for _ in range(rng.randrange(1, 9))],
            "rejected_input_ids": [rng.randrange(3, 50) for _ in range(rng.randrange(1, 9))],
            **{column: -rng.random() for column in REFERENCE_COLUMNS},  # --precompute_ref_logps' columns
        }
        for _ in range(3)
    ]
    whole = PreferenceCollator(0, layout="padded", extra_columns=REFERENCE_COLUMNS)(pairs)
    shardable = sp.shardable(whole, size, pad_token_id=0)
    assert shardable["input_ids"].shape[1] % size == 0
    width, local_width = whole["input_ids"].shape[1], shardable["input_ids"].shape[1] // size
    seen = []
    for j, piece in enumerate(adapter_slices(shardable, size)):
        local, sliced = sp.local_batch(piece)
        assert sliced
        rows, columns = local["target_positions"] // local_width, local["target_positions"] % local_width
        global_positions = rows * width + columns + j * local_width
        table = (global_positions.tolist(), local["target_ids"].tolist(), local["target_owner"].tolist())
        seen += list(zip(*table, strict=True))
        for column in ("response_lengths", *REFERENCE_COLUMNS):
            torch.testing.assert_close(local[column], whole[column])
        for attention in ("sdpa", "flex_attention", "flash_attention_2"):  # Ulysses drops masks: none is built
            assert model_inputs(local, torch.float32, attention)["attention_mask"] is None
    want = list(zip(*(whole[k].tolist() for k in ("target_positions", "target_ids", "target_owner")), strict=True))
    assert sorted(seen) == sorted(want)


def test_an_evaluation_batch_is_read_whole():
    pairs = [{"prompt_input_ids": [5, 6], "chosen_input_ids": [7, 8, 9], "rejected_input_ids": [10]}]
    whole = PreferenceCollator(0, layout="padded")(pairs)
    local, sliced = sp.local_batch(sp.shardable(whole, 2, pad_token_id=0))  # 5 columns, widened to 6
    assert not sliced
    assert [divmod(p, 6) for p in local["target_positions"].tolist()] == [
        divmod(p, 5) for p in whole["target_positions"].tolist()
    ]
    assert local["target_ids"].tolist() == whole["target_ids"].tolist()


def test_misuse_is_one_line_before_loading(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # two CPU processes launched without --use_cpu: transformers sees one
    with pytest.raises(UserError, match="2 processes were launched but transformers sees 1; on CPU processes pass "
                       "--use_cpu true"):  # fmt: skip
        sp.check_options(2, world_size=1, deepspeed=True)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(UserError, match="launch with DeepSpeed ZeRO"):
        sp.check_options(2, world_size=2, deepspeed=False)
    with pytest.raises(UserError, match="does not divide the 6 processes"):
        sp.check_options(4, world_size=6, deepspeed=True)
    sp.check_options(2, world_size=4, deepspeed=True)
    with pytest.raises(UserError, match=r"padded \(any attention but eager\), packed \(flash-attention\)"):
        sp.layout(2, "shared_prompt", "shared_prompt", "sdpa")
    with pytest.raises(UserError, match="needs a mask that Ulysses drops"):
        sp.layout(2, "packed", "packed", "sdpa")
    assert sp.layout(2, "auto", "shared_prompt", "sdpa") == "padded"
    assert sp.layout(2, "packed", "packed", "flash_attention_2") == "packed"


@pytest.fixture(scope="module")
def zero3_runs(tmp_path_factory) -> Path:
    """The ZeRO-3 runs, in one launch of 2 processes (``train_runs.py``): DPO with its live reference on 2
    data-parallel processes of 4 pairs each, then AMaPO and DPO on one SP 2 group holding all 8 pairs."""
    folder = tmp_path_factory.mktemp("zero3")
    amapo_sp2 = [*SP_TRAIN, "--method", "amapo", "--sequence_parallel_size", "2"]
    saved = folder / "zero3" / "amapo-sp2-saved"  # (train_runs.py writes run NAME to <launch output>/NAME)
    runs = {
        "dpo-dp2": [*SP_TRAIN, "--method", "dpo", "--per_device_train_batch_size", "4"],
        **{f"{m}-sp2": [*SP_TRAIN, "--method", m, "--sequence_parallel_size", "2"] for m in ("amapo", "dpo")},
        # a checkpoint after step 1 of 2 (mid-epoch), then a run resumed from it
        "amapo-sp2-saved": [*amapo_sp2, "--save_strategy", "steps", "--save_steps", "1"],
        "amapo-sp2-resumed": [*amapo_sp2, "--resume_from_checkpoint", str(saved / "checkpoint-1")],
    }
    (folder / "runs.json").write_text(json.dumps(runs))
    return accelerate_launch("zero3", folder, [str(TESTS / "train_runs.py")], [str(folder / "runs.json")])


@pytest.mark.parametrize("method", ["amapo", "dpo"])
def test_two_processes_with_sp_2_equal_one_process(method, zero3_runs, one_process):
    assert_same_run(zero3_runs / f"{method}-sp2", one_process(method))


def test_a_run_resumed_mid_epoch_under_sp_2_equals_one_process(zero3_runs, one_process):
    """Resumed from step 1's checkpoint, the SP 2 group reads step 2's batch (DeepSpeed's data-loader adapter
    skipped to it) and ends with the uninterrupted run's step-2 metrics and weights."""
    want, got = train_logs(one_process("amapo")), train_logs(zero3_runs / "amapo-sp2-resumed")
    assert [log["step"] for log in got] == [2]
    for key in (k for k in COMPARED if k in want[1]):
        assert got[0][key] == pytest.approx(want[1][key], rel=1e-5, abs=1e-5), key
    want_weights = load_file(zero3_runs / "amapo-sp2" / "model.safetensors")
    got_weights = load_file(zero3_runs / "amapo-sp2-resumed" / "model.safetensors")
    for key, tensor in want_weights.items():
        torch.testing.assert_close(got_weights[key], tensor, rtol=0, atol=1e-5, msg=key)


def test_the_live_reference_under_zero3_equals_one_process(zero3_runs, one_process):
    """ZeRO-3 loads the reference in shards like the policy; its own engine gathers them around each forward (it
    crashed on an embedding of 0 rows before). Step 2's rewards are nonzero: the reference is not the policy."""
    assert_same_run(zero3_runs / "dpo-dp2", one_process("dpo"))
    assert train_logs(zero3_runs / "dpo-sp2")[1]["rewards/chosen"] != 0
    assert train_logs(zero3_runs / "dpo-dp2")[1]["rewards/chosen"] != 0
