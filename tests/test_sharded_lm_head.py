"""The chunked LM head under sharding engines, 2 gloo processes on CPU (issue 13): FSDP2 with the head inside the
root unit or as a unit of its own (tied and untied), and DeepSpeed ZeRO-3 with every parameter partitioned.

Each rank holds a different number of response tokens, so that a head called once per chunk would be called a
different number of times per rank (a collective mismatch: a crash on gloo, a hang on NCCL); in the ``none`` cases
one rank has no response token at all. Log-probs and gradients must equal the unsharded model's: per-rank
log-probs, and gradients averaged over the two ranks' batches as both engines average them."""

from __future__ import annotations

import math
import os
import random
import socket
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from amapo.data.collator import PreferenceCollator
from amapo.model import lm_head
from amapo.model.logps import ResponseTargets, enable_response_logps, plain_token_logps, sequence_logps

VOCAB, CHUNK = 97, 4
TIMEOUT = 240  # seconds for one engine's cases (they take 5 to 40)
LAYOUTS = ("padded", "shared_prompt", "packed")


class WrappedHead(torch.nn.Module):
    """A head that is not a plain ``nn.Linear`` (as a PEFT LoRA head): it goes through the module, chunk by chunk."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear
        self.delta = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
        torch.nn.init.normal_(self.delta.weight, std=0.02, generator=torch.Generator().manual_seed(3))

    def forward(self, hidden):
        return self.linear(hidden) + self.delta(hidden)


def tiny_llama(head: str) -> LlamaForCausalLM:
    """``head``: tied, untied (in the root unit), own-unit (untied, a unit of its own), wrapped (own unit too)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=head == "tied",
        attn_implementation="sdpa",
    )  # fmt: skip
    model = LlamaForCausalLM(config).float()
    if head == "wrapped":
        model.lm_head = WrappedHead(model.lm_head)
    return model


def rank_batch(rank: int, layout: str, none: bool) -> dict[str, torch.Tensor]:
    """Rank 0: 4 pairs, rank 1: 2 pairs, so their token counts (and chunk counts) differ; ``none``: rank 1's
    batch keeps no response token."""
    rng = random.Random(100 + rank)
    ids = lambda k: [rng.randrange(3, VOCAB) for _ in range(k)]  # noqa: E731
    pairs = [
        {
            "prompt_input_ids": [1, *ids(rng.randint(1, 6))],
            "chosen_input_ids": [*ids(rng.randint(2, 8)), 2],
            "rejected_input_ids": [*ids(rng.randint(2, 8)), 2],
        }
        for _ in range(4 if rank == 0 else 2)
    ]
    batch = PreferenceCollator(0, layout=layout)(pairs)
    if none and rank == 1:
        for key in ("target_positions", "target_ids", "target_owner"):
            batch[key] = batch[key][:0]
        batch["response_lengths"] = torch.zeros_like(batch["response_lengths"])
    return batch


def upstream(n: int) -> torch.Tensor:
    return torch.linspace(-1.0, 2.0, n)  # a different gradient for every sequence


def reference(head: str, layout: str, none: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The unsharded model through the plain full-logits path: each rank's log-probs, gradients averaged."""
    model = tiny_llama(head)
    logps = []
    for rank in (0, 1):
        batch = rank_batch(rank, layout, none)
        per_token = plain_token_logps(model, batch, ResponseTargets(batch["target_positions"], batch["target_ids"]))
        n = batch["response_lengths"].shape[0]
        summed = per_token.new_zeros(n).index_add(0, batch["target_owner"], per_token)
        (summed * upstream(n)).sum().div(2).backward()
        logps.append(summed.detach())
    return logps, {name: p.grad.clone() for name, p in model.named_parameters()}


# --- the engines, one function per rank ----------------------------------------------------------------------


def fsdp2_case(rank: int, head: str, layout: str, none: bool):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = tiny_llama(head)
    enable_response_logps(model, chunk_tokens=CHUNK)  # before wrapping, as PreferenceTrainer does
    mesh = init_device_mesh("cpu", (2,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    if head in ("own-unit", "wrapped"):
        fully_shard(model.lm_head, mesh=mesh)
    fully_shard(model, mesh=mesh)
    batch = rank_batch(rank, layout, none)
    logps, _ = sequence_logps(model, batch)
    (logps * upstream(logps.shape[0])).sum().backward()
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}  # collective: every rank
    return logps.detach(), grads


def fsdp1_case(rank: int, head: str, layout: str, none: bool):
    """FSDP1 (``use_orig_params``) with the head as a unit of its own inside the root unit."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = tiny_llama(head)
    enable_response_logps(model, chunk_tokens=CHUNK)
    model.lm_head = FSDP(model.lm_head, use_orig_params=True, device_id=torch.device("cpu"))
    wrapped = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
    batch = rank_batch(rank, layout, none)
    logps, _ = sequence_logps(wrapped, batch)
    (logps * upstream(logps.shape[0])).sum().backward()
    with FSDP.summon_full_params(wrapped, with_grads=True):
        grads = {name.replace("_fsdp_wrapped_module.", ""): p.grad.clone() for name, p in wrapped.named_parameters()}
    return logps.detach(), grads


def zero3_case(rank: int, head: str, layout: str, none: bool):
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    model = tiny_llama(head)
    enable_response_logps(model, chunk_tokens=CHUNK)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},  # partition every parameter
        "zero_allow_untested_optimizer": True,
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    batch = rank_batch(rank, layout, none)
    logps, _ = sequence_logps(engine, batch)
    engine.backward((logps * upstream(logps.shape[0])).sum())
    grads = {name: safe_get_full_grad(p).clone() for name, p in engine.module.named_parameters()}
    engine.destroy()
    return logps.detach(), grads


ENGINES = {"fsdp2": fsdp2_case, "fsdp1": fsdp1_case, "zero3": zero3_case}


def recording_routes(routes: list[str]):
    """``lm_head.head_route``, noting the route each forward took (it is only defined during the forward: outside
    it, FSDP2 holds even the root's parameters as shards)."""
    original = lm_head.head_route

    def head_route(module):
        routes.append(original(module))
        return routes[-1]

    return head_route


def _worker(rank: int, port: int, engine: str, cases: list, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", DS_ACCELERATOR="cpu")  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for case in cases:
            try:
                routes = []
                lm_head.head_route = recording_routes(routes)
                results[(rank, *case)] = (*ENGINES[engine](rank, *case), routes)
            except Exception:
                results[(rank, *case)] = traceback.format_exc()
                raise
    finally:
        dist.destroy_process_group()


def run_on_two_ranks(engine: str, cases: list[tuple]) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        context = mp.spawn(_worker, args=(port, engine, cases, results), nprocs=2, join=False)
        deadline = time.monotonic() + TIMEOUT
        try:
            while not context.join(timeout=2):
                if time.monotonic() > deadline:  # a collective mismatch can hang instead of crashing
                    for process in context.processes:
                        process.kill()
                    raise AssertionError(f"{engine}: no result after {TIMEOUT} s (a collective mismatch?)")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
            failures = [v for v in results.values() if isinstance(v, str)]
            raise AssertionError(f"{engine} failed:\n" + "\n".join(failures or [str(error)])) from None
        return dict(results)


CASES = [
    *((head, layout, False) for head in ("tied", "untied", "own-unit") for layout in LAYOUTS),
    ("own-unit", "padded", True),
    ("tied", "packed", True),
    ("wrapped", "padded", False),
    ("wrapped", "shared_prompt", True),
]
ZERO3_CASES = [
    *((head, layout, False) for head in ("tied", "untied") for layout in LAYOUTS),
    ("untied", "padded", True),
    ("tied", "shared_prompt", True),
]
WANT_ROUTE = {"tied": "fused", "untied": "fused", "own-unit": "gathered", "wrapped": "module"}


def check(results: dict, case: tuple, route: str) -> None:
    want_logps, want_grads = reference(*case)
    for rank in (0, 1):
        logps, grads, routes = results[(rank, *case)]
        assert routes and set(routes) == {route}, (case, rank)  # the first-batch check calls it too
        torch.testing.assert_close(logps, want_logps[rank], rtol=1e-5, atol=1e-5)
        assert set(grads) == set(want_grads)
        for name, grad in want_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5, msg=f"{case} rank {rank} {name}")


def test_ranks_hold_different_numbers_of_head_chunks():
    """The premise: chunk by chunk, the two ranks would call the head a different number of times."""
    for layout in LAYOUTS:
        tokens = [rank_batch(rank, layout, False)["target_ids"].numel() for rank in (0, 1)]
        assert math.ceil(tokens[0] / CHUNK) != math.ceil(tokens[1] / CHUNK), (layout, tokens)


def test_fsdp2_head_in_the_root_or_its_own_unit_equals_the_unsharded_model():
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 needs torch >= 2.6").fully_shard  # noqa: B018
    results = run_on_two_ranks("fsdp2", CASES)
    for case in CASES:
        check(results, case, WANT_ROUTE[case[0]])


def test_fsdp1_with_the_head_as_its_own_unit_equals_the_unsharded_model():
    cases = [("own-unit", "padded", False), ("own-unit", "packed", True), ("wrapped", "shared_prompt", False)]
    results = run_on_two_ranks("fsdp1", cases)
    for case in cases:
        check(results, case, WANT_ROUTE[case[0]])


def test_deepspeed_zero3_equals_the_unsharded_model():
    pytest.importorskip("deepspeed")
    results = run_on_two_ranks("zero3", ZERO3_CASES)
    for case in ZERO3_CASES:
        check(results, case, "gathered")
