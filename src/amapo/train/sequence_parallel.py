"""Sequence parallelism (``--sequence_parallel_size N``) on DeepSpeed's Ulysses (ALST), for preference losses.

N processes hold one micro-batch together: every rank holds a contiguous 1/N slice of every row, attention runs on
whole sequences after an all-to-all over heads (``UlyssesSPAttentionHF``), and DeepSpeed's
``UlyssesSPDataLoaderAdapter`` deals the slices. What a preference loss adds to that is the reduction: a pair's
loss is a non-linear function of whole-sequence sums, so each rank sums the response log-probs of its own slice
per sequence, and the sums are all-reduced over the SP group *before* the loss (never per-rank losses averaged;
360-LLaMA-Factory's finding):

    log pi(y|x) = sum_{j in SP group} sum_{t in slice j, t response} log pi(y_t | x, y_<t)
    |y|         = sum_j #(response tokens of slice j)

The all-reduce is differentiable (``torch.distributed.nn.functional.all_reduce``: its backward all-reduces the
gradient). Every rank of the group then computes the same loss L, so rank j receives the gradient of its own slice
N times over: d L / d s_j = sum over the N ranks of dL/dS. DeepSpeed, given no SP groups (no ``mpu``), averages
gradients over all W = N x D processes as in plain data parallelism, which divides that N back out:

    grad = (1 / (N D)) sum_{groups} sum_j N dL_g/ds_j = (1 / D) sum_{groups} grad L_g,

the data-parallel mean of each group's full-sequence gradient, at every ZeRO stage and on every DeepSpeed version.
(Through accelerate's ``ParallelismConfig`` DeepSpeed gets SP groups, and its reduction over them changed: stages
0-2 and ZeRO-3 from 0.20.2 sum over the SP group, ZeRO-3 before it averaged; transformers' ``deepspeed_sp_compute_loss``
rescales by version.)

Why not accelerate's ``ParallelismConfig(sp_size=N, sp_backend="deepspeed")``, which wires the same two DeepSpeed
classes: the attention it registers has one fixed batch size (``per_device_train_batch_size``), while a preference
forward has 2B rows (padded layout: chosen and rejected), one row (packed), and other sizes in the reference, the
margin statistics' pre-pass and evaluation; and the Trainer's SP branch replaces the loss with a token-mean LM loss.
So amapo builds the same ``UlyssesSPAttentionHF`` and ``UlyssesSPDataLoaderAdapter`` itself, and sets the rows of
each call (``batch_size`` and the ``required_*_shape`` attributes) before it. Everything else is DeepSpeed's.

Slicing the response-token table. The adapter wants ``[rows, T]`` tensors and a ``labels`` one; it shifts labels
into ``shift_labels`` (``labels[t + 1]``, -100 past the end) *before* cutting, so the last position of a slice
predicts the first token of the next slice, and then keeps columns ``[T/N * j, T/N * (j + 1))`` of every tensor.
``ShardableBatches`` therefore writes the collator's table as grids: ``labels[r, t]`` the response token at (r, t)
(-100 elsewhere) and ``target_owner`` its sequence, shifted here the same way (at the hidden state that predicts it).
Each rank reads its table back from its slice (``local_batch``): flat positions into its own [rows * T/N] hidden
states, the targets ``shift_labels`` holds there. Rows are padded to a multiple of N. Pair-level columns (response
lengths, reference log-probs, offsets, row indices) travel in one non-tensor entry, ``pairs``, which the adapter
copies to every rank of the group.

Masks. Ulysses drops every attention mask but a FlexAttention ``BlockMask`` (which it replaces with a causal one)
and relies on causal attention plus position ids. So the padded layout works on sdpa, flex_attention and
flash-attention (right padding: a real token never sees a pad), the packed one on flash-attention only (its varlen
kernel reads the sequence boundaries from the position ids), and the shared-prompt layout (a rejected token must
not see the chosen ones) on none. Eager attention is refused by Ulysses itself. The model is therefore given no
mask under SP at all (``local_batch``): one built for a rank's slice would only be dropped.

Evaluation batches are not sliced (the adapter wraps the training loader only): each rank evaluates its own whole
batches with ordinary attention, as without SP.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.distributed as dist

from amapo.errors import UserError

logger = logging.getLogger(__name__)

# The layouts whose attention Ulysses computes exactly, per attention implementation (see the module docstring).
SEQUENCE_PARALLEL_LAYOUTS = "padded (any attention but eager), packed (flash-attention)"
PAIR_KEYS = "pairs"  # the adapter copies a non-tensor entry to every rank of the group
CORE_MARK = "_amapo_core_attention"  # on the attention that routes through Ulysses: the one it wraps


# --- checks, before anything loads ------------------------------------------------------------------------------


def check_options(size: int, world_size: int, deepspeed: bool) -> None:
    """``--sequence_parallel_size``: DeepSpeed is on and N divides the number of processes (TrainConfig)."""
    if size <= 1:
        return
    if not deepspeed:
        raise UserError(
            f"--sequence_parallel_size {size} runs on DeepSpeed's Ulysses: launch with DeepSpeed ZeRO, e.g. "
            "accelerate launch --config_file $(python -c 'import amapo.recipes as r; print(r.ACCELERATE_DIR)')"
            "/zero3.yaml -m amapo.cli train ..."
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > world_size:  # e.g. CPU processes without --use_cpu: transformers then runs each as one process
        raise UserError(
            f"--sequence_parallel_size {size}: {launched} processes were launched but transformers sees "
            f"{world_size}; on CPU processes pass --use_cpu true (without it transformers does not join them)"
        )
    if world_size % size:
        raise UserError(
            f"--sequence_parallel_size {size} does not divide the {world_size} processes: launch a multiple of "
            f"{size} processes (num_processes), or pick a size that divides {world_size}"
        )


def check_model(size: int, model_config, attention: str | None) -> None:
    """Ulysses splits attention heads over the group and needs a kernel that is causal without a mask."""
    if size <= 1:
        return
    text = model_config.get_text_config()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    if heads % size or (kv_heads % size and size % kv_heads):
        raise UserError(
            f"--sequence_parallel_size {size}: Ulysses splits attention heads over the group, and this model has "
            f"{heads} heads ({kv_heads} key/value heads); pick a size that divides {heads}"
        )
    if attention in ("eager", "paged|eager"):
        raise UserError(
            "--sequence_parallel_size: Ulysses cannot run eager attention (it needs a mask Ulysses drops); use "
            "--attn_implementation sdpa, flex_attention or flash_attention_2"
        )


def layout(size: int, requested: str, resolved: str, attention: str | None) -> str:
    """The batch layout under SP: ``resolved`` if Ulysses computes it exactly, padded for ``auto``, else refused."""
    if size <= 1:
        return resolved
    fits = resolved == "padded" or (resolved == "packed" and "flash" in (attention or ""))
    if fits:
        return resolved
    if requested == "auto":
        logger.info("batch layout under sequence parallelism: padded (Ulysses drops the %s layout's mask)", resolved)
        return "padded"
    raise UserError(
        f"--batch_layout {requested} on {attention or 'sdpa'} attention needs a mask that Ulysses drops under "
        f"--sequence_parallel_size; use one that works: {SEQUENCE_PARALLEL_LAYOUTS}"
    )


def deepspeed_enabled(config) -> bool:
    """DeepSpeed from --deepspeed or from accelerate's launcher (a DeepSpeed config)."""
    return bool(getattr(config, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "") == "true"


# --- batches ----------------------------------------------------------------------------------------------------


class ShardableBatches:
    """Wraps a collator: its batch in the form ``UlyssesSPDataLoaderAdapter`` can slice (see the module docstring).

    Out: ``input_ids``, ``position_ids`` [R, T'] (T' = T padded up to a multiple of ``size``; padded columns repeat
    the pad id and continue the positions), ``labels`` [R, T'] (the response token at each position, -100
    elsewhere), ``target_owner`` [R, T'] (the sequence of the token that the hidden state at each position
    predicts, -1 elsewhere), and ``pairs``: every other entry of the batch that is not per position (response
    lengths, reference log-probs, offsets, row indices), which the adapter copies to every rank.
    """

    PER_POSITION = ("input_ids", "position_ids", "attention_mask", "response_mask", "segment_ids")

    def __init__(self, collator, size: int, pad_token_id: int) -> None:
        self.collator, self.size, self.pad_token_id = collator, size, int(pad_token_id)

    def __call__(self, features: list[dict]) -> dict:
        return shardable(self.collator(features), self.size, self.pad_token_id)


def shardable(batch: dict[str, torch.Tensor], size: int, pad_token_id: int) -> dict:
    rows, width = batch["input_ids"].shape
    row, column = batch["target_positions"] // width, batch["target_positions"] % width
    labels = torch.full((rows, width), -100, dtype=torch.long)
    labels[row, column + 1] = batch["target_ids"]  # the hidden state at t predicts the token at t + 1
    owner = torch.full((rows, width), -1, dtype=torch.long)
    owner[row, column] = batch["target_owner"]  # at the predicting position: the shift the adapter gives labels
    table = ("target_positions", "target_ids", "target_owner")
    pairs = {k: v for k, v in batch.items() if k not in ShardableBatches.PER_POSITION and k not in table}
    out = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "labels": labels,
           "target_owner": owner, PAIR_KEYS: pairs}  # fmt: skip
    return widened(out, -(-width // size) * size, pad_token_id)


PAD_VALUES = {"labels": -100, "target_owner": -1}  # input_ids: the pad id; position_ids: counting on


def widened(batch: dict, width: int, pad_token_id: int) -> dict:
    """``batch`` (``shardable``'s form) with its columns padded on the right to ``width``: pads that no response token
    is predicted from, positions that go on counting (causal attention keeps them from every real token)."""
    extra = width - batch["input_ids"].shape[1]
    if extra <= 0:
        return batch
    out = dict(batch)
    for key, value in PAD_VALUES.items():
        out[key] = torch.nn.functional.pad(batch[key], (0, extra), value=value)
    out["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=pad_token_id)
    positions = batch["position_ids"]
    out["position_ids"] = torch.cat([positions, positions[:, -1:] + torch.arange(1, extra + 1)], dim=1)
    return out


class GroupWidth:
    """A data loader whose batches are as wide as the widest of the SP group's: DeepSpeed's adapter all-gathers
    the group's batches with ``all_gather``, which gloo refuses for tensors of different sizes (NCCL pads them)."""

    def __init__(self, dataloader, group, pad_token_id: int) -> None:
        self.dataloader, self.group, self.pad_token_id = dataloader, group, pad_token_id

    def __len__(self) -> int:
        return len(self.dataloader)

    def __iter__(self):
        for batch in self.dataloader:
            width = torch.tensor([batch["input_ids"].shape[1]], device=batch["input_ids"].device)
            dist.all_reduce(width, op=dist.ReduceOp.MAX, group=self.group)
            yield widened(batch, int(width), self.pad_token_id)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataloader, "set_epoch"):
            self.dataloader.set_epoch(epoch)


def local_batch(batch: dict) -> tuple[dict, bool]:
    """A batch in ``amapo.data.collator``'s form of what this rank holds, and whether it is a slice (a training batch
    dealt by the adapter, which turned ``labels`` into ``shift_labels``) or whole (an evaluation batch).

    The response-token table is read off the (sliced) grids: flat positions into this rank's [R * T_local] hidden
    states, their target tokens and sequences; ``response_lengths`` stays the whole sequences' count.

    ``attention_mask`` is None: the rows are causal by their position ids alone (the module docstring, "Masks").
    Without the key, ``amapo.model.layouts.model_inputs`` would take the batch for a packed one and, on sdpa, build
    a dense [R, 1, T_local, T_local] mask for every forward, which Ulysses then drops: 128 MiB per rank at 2 x 8,192
    tokens on SP 2 (fp32), 512 MiB at 2 x 16,384, growing with the square of the slice.
    """
    sliced = "shift_labels" in batch
    if sliced:  # (the adapter's slices of a CPU tensor are views: ``view`` needs them contiguous)
        targets = batch["shift_labels"].contiguous()
    else:
        targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
    flat = targets.reshape(-1)
    positions = torch.nonzero(flat != -100).reshape(-1)
    local = {
        "input_ids": batch["input_ids"].contiguous(),
        "position_ids": batch["position_ids"].contiguous(),
        "attention_mask": None,  # causal by position: no mask built (see above)
        "target_positions": positions,
        "target_ids": flat[positions],
        "target_owner": batch["target_owner"].contiguous().reshape(-1)[positions],
        **batch[PAIR_KEYS],
    }
    return local, sliced


# --- resuming mid-epoch ---------------------------------------------------------------------------------------

ADAPTER_MARK = "_amapo_sequence_parallel"  # on an adapter: (its SequenceParallel, the loader it was made from)


def skip_resumed_batches_of_adapters() -> None:
    """Let the Trainer skip a resumed epoch's batches in amapo's SP adapter too. The Trainer calls
    ``transformers.trainer.skip_first_batches`` (accelerate's; from 5.24 inside ``get_resumed_dataloader``), which
    rebuilds a ``DataLoader`` from its ``dataset`` and fails on DeepSpeed's adapter (it has none); this wraps that
    name once, process-wide, handing an adapter of amapo's to ``SequenceParallel.resumed`` and anything else to
    accelerate as before (``amapo.hf_internals``)."""
    import transformers.trainer as trainer_module

    skip = trainer_module.skip_first_batches
    if getattr(skip, ADAPTER_MARK, False):
        return

    def skip_first_batches(dataloader, num_batches=0):
        owner = getattr(dataloader, ADAPTER_MARK, None)
        if owner is None:
            return skip(dataloader, num_batches)
        return owner[0].resumed(dataloader, num_batches)

    setattr(skip_first_batches, ADAPTER_MARK, True)
    trainer_module.skip_first_batches = skip_first_batches


# --- the group --------------------------------------------------------------------------------------------------


class SequenceParallel:
    """One Ulysses group of ``size`` processes: its attention, its data-loader adapter, its reductions."""

    def __init__(self, size: int, pad_token_id: int) -> None:
        self.size, self.pad_token_id = size, int(pad_token_id)
        self.group = None
        self.rank = 0
        self._active = False

    def setup(self, model) -> SequenceParallel:
        """Create the SP groups (consecutive ranks, as DeepSpeed's) and route the model's attention through Ulysses.

        The attention is Ulysses' only inside ``sliced()`` (training batches); elsewhere (evaluation, the first
        batch's self-check of the fused head) it is the model's own, on whole sequences. The groups are plain
        ``torch.distributed`` ones that Ulysses and the adapter are handed (DeepSpeed's ``parallel_state_sp`` holds
        one set per process and refuses a second), so a process may train more than once."""
        from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        world = dist.get_world_size()
        for first in range(0, world, self.size):  # every rank creates every group, in the same order
            group = dist.new_group(list(range(first, first + self.size)))
            if first <= dist.get_rank() < first + self.size:
                self.group = group
        self.rank = dist.get_rank(self.group)
        name = model.config._attn_implementation
        core = getattr(ALL_ATTENTION_FUNCTIONS[name], CORE_MARK, ALL_ATTENTION_FUNCTIONS[name])  # not a wrapper
        text = model.config.get_text_config()
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_size = getattr(text, "head_dim", None) or text.hidden_size // heads
        ulysses = UlyssesSPAttentionHF(
            attn=core, batch_size=1, attn_head_count=heads, attn_head_size=head_size, kv_head_count=kv_heads,
            num_hidden_layers=text.num_hidden_layers, process_group=self.group, seq_length_is_variable=True,
        )  # fmt: skip
        ulysses.core_attn_implementation = name

        def attention(module, query, key, value, attention_mask, *args, **kwargs):
            if not self._active:
                return core(module, query, key, value, attention_mask, *args, **kwargs)
            rows = query.shape[0]  # Ulysses fixes the rows at construction; a preference step's vary
            ulysses.batch_size = rows
            ulysses.required_query_shape = torch.Size([1, rows, heads, head_size])
            ulysses.required_key_value_shape = torch.Size([1, rows, kv_heads, head_size])
            ulysses.required_context_shape = torch.Size([1, rows, head_size * heads // self.size])
            if type(attention_mask).__name__ != "BlockMask":  # Ulysses is causal by position ids, as in its wrapper
                attention_mask = None
            return ulysses(module, query, key, value, attention_mask, *args, **kwargs)

        setattr(attention, CORE_MARK, core)
        ALL_ATTENTION_FUNCTIONS[name] = attention  # process-wide, as DeepSpeed's own registration
        return self

    @contextlib.contextmanager
    def sliced(self):
        """Attention through Ulysses: every rank of the group calls the model in step, on its slice."""
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def adapt(self, dataloader, device):
        """The training loader, each batch dealt as slices over the group (DeepSpeed's adapter)."""
        from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPDataLoaderAdapter

        skip_resumed_batches_of_adapters()
        adapter = UlyssesSPDataLoaderAdapter(
            GroupWidth(dataloader, self.group, self.pad_token_id),
            sp_rank=self.rank, sp_group=self.group, sp_world_size=self.size, device=device,
        )  # fmt: skip
        setattr(adapter, ADAPTER_MARK, (self, dataloader))
        return adapter

    def resumed(self, adapter, micro_batches: int):
        """A new adapter past the first ``micro_batches`` of ``adapter``'s epoch (a resume mid-epoch). The adapter
        deals each batch of the loader it wraps as ``size`` micro-batches (one per rank of the group), so whole
        batches are skipped unread in that loader (accelerate's ``skip_first_batches``), and the rest read and
        dropped, every rank of the group in step."""
        from accelerate import skip_first_batches

        whole, rest = divmod(micro_batches, self.size)
        _, dataloader = getattr(adapter, ADAPTER_MARK)
        resumed = self.adapt(skip_first_batches(dataloader, whole), adapter.device)
        for _ in range(rest):
            next(resumed)
        return resumed

    def sequence_logps(self, model, batch: dict, sliced: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``amapo.model.logps.sequence_logps`` of whole sequences from this rank's slice: the per-sequence sums
        all-reduced over the group (differentiably), and the token counts likewise (see the module docstring)."""
        from torch.distributed.nn.functional import all_reduce

        from amapo.model.logps import PATCH_MARK, VERIFIED_MARK, causal_lm_of, sequence_logps, verify_fused_logps

        lm = causal_lm_of(model)
        if getattr(lm, PATCH_MARK, None) is not None and not getattr(lm, VERIFIED_MARK, False):
            verify_fused_logps(model, batch)  # on the slice, with the model's own attention: no collective in it
        if not sliced:
            return sequence_logps(model, batch)
        with self.sliced():
            local, lengths = sequence_logps(model, batch)
        counts = torch.bincount(batch["target_owner"], minlength=lengths.shape[0]).to(lengths.dtype)
        dist.all_reduce(counts, group=self.group)
        return all_reduce(local, group=self.group), counts
