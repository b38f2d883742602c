"""Memory linear in pair length on eager / sdpa (issue 35, item 1).

* on eager, ``--batch_layout auto`` weighs, per batch, the shared-prompt layout's dense [B, 1, T, T] mask against
  the prompt activations it saves (``DenseMaskCost``) and takes padded rows where the mask costs more, saying so
  once; ``shared_prompt`` asked for at such lengths warns once;
* on sdpa no layout needs a mask (``amapo.model.sequence_rows``): auto is the shared prompt at any length; packed
  rows are as wide as the longest sequence and give padded's log-probs and gradients;
* no tensor of rows x T x T elements is made in a training step on sdpa, in any layout.
"""

from __future__ import annotations

import logging

import pytest
import torch
from largest_tensor import LargestTensor
from transformers import LlamaConfig, LlamaForCausalLM

from amapo.data.collator import PreferenceCollator
from amapo.model.layouts import DenseMaskCost, LayoutChoice, collator_options, layout_for
from amapo.model.logps import enable_response_logps, sequence_logps

# The built-in task's model (amapo.builtin.assets): hidden 64, MLP 192, 2 layers.
TINY = LlamaConfig(
    vocab_size=64, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2,
)  # fmt: skip
SHORT = [(20, 10, 12)] * 4  # (prompt, chosen, rejected) tokens: the built-in task's lengths
LONG = [(100, 1000, 1000)] * 4  # a short prompt under long answers: the mask outweighs what sharing it saves


def test_cost_model_is_the_documented_formula():
    cost = DenseMaskCost.of(TINY, "sdpa", torch.float32)
    token = 64 * 4 * (10 + 4 * 192 / 64) * 2  # hidden x bytes x factor x layers
    assert cost.token_bytes == pytest.approx(token)
    p, c, r = 20, 10, 12
    assert cost.bytes("shared_prompt", [(p, c, r)]) == pytest.approx((p + c + r) * (token + (p + c + r) * 4))
    assert cost.bytes("padded", [(p, c, r)]) == pytest.approx(2 * (p + max(c, r)) * token)  # no mask on sdpa
    eager = DenseMaskCost.of(TINY, "eager", "bfloat16")  # + the causal mask and 4 heads' probabilities, 2 layers
    assert eager.padded_bytes == 2 and eager.scores_bytes == 4 * 2 * 2
    no_grad = DenseMaskCost.of(TINY, "sdpa", torch.float32, training=False)
    checkpointed = DenseMaskCost.of(TINY, "sdpa", torch.float32, checkpointing=True)
    assert no_grad.token_bytes < checkpointed.token_bytes < cost.token_bytes


@pytest.fixture(autouse=True)
def unsaid():
    """Each test starts with nothing announced (LayoutChoice says a thing once per process)."""
    LayoutChoice.said.clear()
    yield
    LayoutChoice.said.clear()


def test_auto_picks_per_batch_by_cost_and_says_so_once(capsys):
    choice = LayoutChoice(DenseMaskCost.of(TINY, "eager", torch.float32), "auto", "eager")
    assert [choice(SHORT), choice(SHORT), choice(LONG), choice(SHORT), choice(LONG)] == [
        "shared_prompt", "shared_prompt", "padded", "shared_prompt", "padded",
    ]  # fmt: skip
    again = LayoutChoice(DenseMaskCost.of(TINY, "eager", torch.float32), "auto", "eager")  # e.g. the next eval set
    assert again(LONG) == "padded"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # at the first switch, and never again in this process
    assert lines[0].startswith("amapo: batch layout auto on eager: padded from this batch on")
    assert "(4 pairs, shared-prompt rows of 2100 tokens" in lines[0] and "[4, 1, 2100, 2100] mask" in lines[0]
    # without gradients activations are not kept across layers: the mask outweighs them sooner
    assert LayoutChoice(DenseMaskCost.of(TINY, "sdpa"), announce=False)([(200, 200, 200)]) == "shared_prompt"
    assert LayoutChoice(DenseMaskCost.of(TINY, "sdpa", training=False), announce=False)([(200, 200, 200)]) == "padded"


def test_collator_lays_out_each_batch_as_chosen():
    options = collator_options(layout_for("auto", "eager", None, 4096), "eager", DenseMaskCost.of(TINY, "eager"))
    collate = PreferenceCollator(0, **options)
    assert "segment_ids" in collate(pairs(SHORT)) and "attention_mask" in collate(pairs(LONG))
    assert layout_for("auto", "eager", None, 4096) == "auto"
    # sdpa needs no mask for a shared prompt (amapo.model.sequence_rows): shared at any length
    assert layout_for("auto", "sdpa", None, 4096) == "shared_prompt" == layout_for("auto", None, None, 4096)
    sdpa = PreferenceCollator(0, **collator_options("shared_prompt", "sdpa", DenseMaskCost.of(TINY, "sdpa")))
    assert "segment_ids" in sdpa(pairs(LONG))
    assert layout_for("auto", "flex_attention", None, 4096) == "shared_prompt"  # a BlockMask: any length
    assert layout_for("auto", "flash_attention_2", None, 4096) == "packed"
    assert collator_options("auto", "flex_attention", DenseMaskCost.of(TINY, "flex_attention")) == {
        "layout": "shared_prompt"
    }
    assert collator_options("packed", "flash_attention_2")["packed_rows"] == "one"  # varlen: one row
    assert collator_options("packed", "sdpa")["packed_rows"] == "longest"


def test_explicit_shared_prompt_warns_once_where_its_mask_costs_more(caplog):
    choice = LayoutChoice(DenseMaskCost.of(TINY, "eager", torch.float32), "shared_prompt", "eager")
    with caplog.at_level(logging.WARNING, logger="amapo.model.layouts"):
        assert choice(SHORT) == "shared_prompt" and not caplog.records
        assert {choice(LONG), choice(LONG), choice(SHORT)} == {"shared_prompt"}
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("batch_layout=shared_prompt on eager costs more memory than padded rows")
    assert "--batch_layout auto takes padded" in message and "sdpa, flex_attention or flash_attention_2" in message


def pairs(lengths, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)

    def tokens(n):
        return torch.randint(4, 64, (n,), generator=generator).tolist()

    return [
        {"prompt_input_ids": tokens(p), "chosen_input_ids": tokens(c), "rejected_input_ids": tokens(r)}
        for p, c, r in lengths
    ]


def tiny_model(attention: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY.to_dict(), "hidden_size": 32, "intermediate_size": 64})
    config._attn_implementation = attention
    return enable_response_logps(LlamaForCausalLM(config).eval())


def logps_and_grads(model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    logps, _ = sequence_logps(model, batch)
    (logps * torch.linspace(-1, 1, logps.numel())).sum().backward()
    return logps.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_of_the_longest_give_padded_logps_and_grads(attention):
    lengths = [(9, 30, 4), (3, 5, 2), (12, 1, 7), (1, 2, 40), (6, 6, 6)]
    model = tiny_model(attention)
    packed = PreferenceCollator(0, **collator_options("packed", attention))(pairs(lengths))
    longest = max(p + max(c, r) for p, c, r in lengths)
    assert packed["input_ids"].shape[1] == longest and packed["input_ids"].shape[0] < 2 * len(lengths)
    want, want_grads = logps_and_grads(model, PreferenceCollator(0, layout="padded")(pairs(lengths)))
    got, grads = logps_and_grads(model, packed)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["padded", "auto", "shared_prompt", "packed"])
def test_no_rows_by_length_squared_tensor_in_a_step_on_sdpa(layout):
    """At 2 pairs of 900 tokens a row's T x T (810k elements per row) dwarfs the activations (T x 64 per row): no
    tensor of that size exists in a training step of any layout on sdpa (auto: the shared prompt). Before: the
    padded rows' [4, 1, 820, 820] bool mask and its float copy in every layer; packed rows one [rows, 1, T, T]
    block-diagonal mask; shared-prompt rows a [2, 1, 1520, 1520] one (``amapo.model.sequence_rows``)."""
    lengths = [(100, 720, 700), (80, 700, 660)]
    model = tiny_model("sdpa").train()
    options = collator_options(layout_for(layout, "sdpa", None, 4096), "sdpa", DenseMaskCost.of(model.config, "sdpa"))
    batch = PreferenceCollator(0, **options)(pairs(lengths))
    rows, width = batch["input_ids"].shape
    with LargestTensor() as largest:
        logps_and_grads(model, batch)
    assert ("segment_ids" in batch) == (layout in ("auto", "shared_prompt"))
    assert largest.numel < rows * width * width / 8, largest.shape
