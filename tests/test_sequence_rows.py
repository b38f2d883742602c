"""Shared-prompt and packed batches on sdpa without a mask (``amapo.model.sequence_rows``, issue 35): attention
regrouped one sequence per row gives padded rows' log-probs and gradients, every layer uses it, and a model whose
attention bypasses transformers' sdpa function is refused instead of computed without the layout's mask."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from amapo.data.collator import PreferenceCollator
from amapo.errors import UserError
from amapo.model import sequence_rows
from amapo.model.layouts import collator_options, model_inputs
from amapo.model.logps import enable_response_logps, sequence_logps
from amapo.model.sequence_rows import SequenceRows

LENGTHS = [(9, 30, 4), (3, 5, 2), (12, 1, 7), (1, 2, 40), (6, 6, 6)]  # (prompt, chosen, rejected) tokens


def pairs(lengths, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)

    def tokens(n):
        return torch.randint(4, 64, (n,), generator=generator).tolist()

    return [
        {"prompt_input_ids": tokens(p), "chosen_input_ids": tokens(c), "rejected_input_ids": tokens(r)}
        for p, c, r in lengths
    ]


def test_shared_prompt_rows_hold_each_sequence_and_read_back_to_its_columns():
    batch = PreferenceCollator(0, layout="shared_prompt")(pairs([(2, 3, 1), (1, 1, 2)]))
    rows = SequenceRows.of_shared_prompt(batch["segment_ids"])
    t = batch["input_ids"].shape[1]  # 6: the first pair's 2 + 3 + 1
    assert rows.gather.tolist() == [
        [0, 1, 2, 3, 4],  # prompt + chosen of pair 0
        [0, 1, 5, 0, 0],  # prompt + rejected, padded with the row's first token
        [t, t + 1, t, t, t],  # pair 1: prompt + chosen (2 tokens)
        [t, t + 2, t + 3, t, t],  # prompt + its 2 rejected tokens (columns 2, 3 of its row)
    ]
    ids = batch["input_ids"].reshape(-1)
    read_back = ids[rows.gather].reshape(-1)[rows.scatter].reshape(batch["input_ids"].shape)
    real = batch["segment_ids"] > 0
    assert torch.equal(read_back[real], batch["input_ids"][real])


def test_packed_rows_hold_each_sequence_and_padding_gets_no_row():
    batch = PreferenceCollator(0, **collator_options("packed", "sdpa"))(pairs(LENGTHS))
    rows = SequenceRows.of_packed(batch["position_ids"])
    assert rows.gather.shape == (2 * len(LENGTHS), max(p + max(c, r) for p, c, r in LENGTHS))
    ids = batch["input_ids"].reshape(-1)
    read_back = ids[rows.gather].reshape(-1)[rows.scatter].reshape(batch["input_ids"].shape)
    lone = (batch["position_ids"] == 0) & (torch.nn.functional.pad(batch["position_ids"], (0, 1))[:, 1:] == 0)
    assert torch.equal(read_back[~lone], batch["input_ids"][~lone])  # every token of a sequence


def gqa_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    return enable_response_logps(LlamaForCausalLM(config))


def logps_and_grads(model, batch):
    model.zero_grad()
    logps, _ = sequence_logps(model, batch)
    (logps * torch.linspace(-1, 1, logps.numel())).sum().backward()
    return logps.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("layout", ["shared_prompt", "packed"])
def test_sdpa_without_a_mask_gives_padded_logps_and_gradients(layout):
    model = gqa_llama()
    want, want_grads = logps_and_grads(model, PreferenceCollator(0, layout="padded")(pairs(LENGTHS)))
    batch = PreferenceCollator(0, **collator_options(layout, "sdpa"))(pairs(LENGTHS))
    inputs = model_inputs(batch, torch.float32, "sdpa")
    assert inputs["attention_mask"].shape[-1] == 0  # the placeholder: no mask at all
    got, grads = logps_and_grads(model, batch)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    model(**inputs)
    assert inputs[sequence_rows.KEYWORD].calls == model.config.num_hidden_layers  # every layer regrouped


def test_an_attention_that_bypasses_transformers_sdpa_function_is_refused(monkeypatch):
    """An attention that neither reads the rows nor the mask would attend the shared row causally, rejected
    tokens seeing the chosen ones: refused after the first forward, naming the way out."""
    sequence_rows.install()

    def causal_only(module, query, key, value, attention_mask, **kwargs):
        kwargs.pop(sequence_rows.KEYWORD, None)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None

    causal_only._amapo_sequence_rows = True  # looks installed
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", causal_only)
    model = gqa_llama()
    with pytest.raises(UserError, match=r"does not run transformers. sdpa attention function.*--batch_layout padded"):
        sequence_logps(model, PreferenceCollator(0, layout="shared_prompt")(pairs(LENGTHS)))


def test_the_attention_output_is_rebuilt_in_backward_not_kept(monkeypatch):
    """o_proj's input (the attention output read back into the batch's rows) is rebuilt from sdpa's own output,
    which sdpa keeps for its backward: one recipe per layer, and the gradients are the very bits of keeping it."""
    from amapo.model import lean_activations

    batch = PreferenceCollator(0, layout="shared_prompt")(pairs(LENGTHS))
    packs = []
    pack = lean_activations.RecomputedActivations.pack.__func__

    def counted(cls, tensor):
        packed = pack(cls, tensor)
        packs.append(type(packed).__name__)
        return packed

    monkeypatch.setattr(lean_activations.RecomputedActivations, "pack", classmethod(counted))
    model = gqa_llama()  # no lean modules: the attention output is the only recipe
    _, rebuilt = logps_and_grads(model, batch)
    assert packs.count("_Recipe") == model.config.num_hidden_layers
    monkeypatch.setattr(lean_activations.RecomputedActivations, "pack", classmethod(lambda cls, tensor: tensor))
    _, kept = logps_and_grads(model, batch)
    for a, b in zip(rebuilt, kept, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cut", [1, 2, 9])
def test_packed_rows_cut_anywhere_give_the_eager_masks_outputs(cut):
    """A packed row cut after ``cut`` tokens (the first batch's self-check samples so) ends with a sequence of
    any length, one token included: a lone position attends to itself only, as eager's block-diagonal mask says."""
    model = gqa_llama()
    batch = PreferenceCollator(0, **collator_options("packed", "sdpa"))(pairs(LENGTHS))
    ids, positions = batch["input_ids"][:1, :cut], batch["position_ids"][:1, :cut]
    positions = torch.cat((positions, torch.zeros_like(positions[:, :1])), 1)  # + a lone pad at the end
    ids = torch.cat((ids, ids[:, :1]), 1)
    cut_batch = {"input_ids": ids, "position_ids": positions}
    with torch.no_grad():
        want = model(**model_inputs(cut_batch, torch.float32, "eager"), use_cache=False).logits
        got = model(**model_inputs(cut_batch, torch.float32, "sdpa"), use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
