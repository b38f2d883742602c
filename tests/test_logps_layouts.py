"""Response log-probs without full logits: the chunked LM head and the three batch layouts give the numbers of
the plain computation (full logits, fp32 log-softmax) to 1e-5 relative, and its gradients to 1e-4 (issue 7)."""

from __future__ import annotations

import random

import pytest
import torch
from largest_tensor import LargestTensor
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from amapo.data.collator import PreferenceCollator, row_length
from amapo.model.layouts import layout_for, shared_prompt_mask
from amapo.model.lm_head import LogitTransform, chunk_size_for, token_logps_from_hidden
from amapo.model.logps import ResponseTargets, enable_response_logps, plain_token_logps, sequence_logps
from amapo.model.wrappers import causal_lm_of
from amapo.train.parsing import parse_train_args

VOCAB = 97


def plain_logps(hidden, head, targets, transform=None):
    z = (transform or LogitTransform())(head(hidden).float())
    return torch.log_softmax(z, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("transform", [LogitTransform(), LogitTransform(scale=0.7, softcap=2.5)], ids=["plain", "cap"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_head_equals_full_logits_with_gradients(transform, bias, chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, VOCAB, bias=bias)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, VOCAB, (23,))
    upstream = torch.randn(23)

    fused = token_logps_from_hidden(hidden, head, targets, chunk, transform)
    (fused * upstream).sum().backward()
    grads = [hidden.grad.clone(), *(p.grad.clone() for p in head.parameters())]
    hidden.grad = None
    head.zero_grad()
    plain = plain_logps(hidden, head, targets, transform)
    (plain * upstream).sum().backward()

    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, [hidden.grad, *(p.grad for p in head.parameters())], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_frozen_head_needs_no_second_pass_and_gives_the_same_gradient():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, VOCAB, bias=False).requires_grad_(False)  # LoRA: the head is frozen
    hidden = torch.randn(11, 8, requires_grad=True)
    targets = torch.randint(0, VOCAB, (11,))
    calls = []
    original = torch.Tensor.__matmul__

    def counting(a, b):
        calls.append(1)
        return original(a, b)

    torch.Tensor.__matmul__ = counting
    try:
        token_logps_from_hidden(hidden, head, targets, 4).sum().backward()
    finally:
        torch.Tensor.__matmul__ = original
    assert len(calls) == 2 * 3  # forward only: logits and dlogp/dh for each of the 3 chunks, nothing in backward
    want = torch.autograd.grad(plain_logps(hidden, head, targets).sum(), hidden)[0]
    torch.testing.assert_close(hidden.grad, want, rtol=1e-4, atol=1e-6)


def test_a_wrapped_head_goes_through_the_module_with_the_same_numbers():
    class Wrapped(torch.nn.Module):  # e.g. a PEFT LoRA head: its weight alone is not the whole function
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(8, VOCAB)
            self.delta = torch.nn.Linear(8, VOCAB, bias=False)

        def forward(self, x):
            return self.inner(x) + self.delta(x)

    torch.manual_seed(2)
    head = Wrapped()
    hidden = torch.randn(9, 8, requires_grad=True)
    targets = torch.randint(0, VOCAB, (9,))
    fused = token_logps_from_hidden(hidden, head, targets, 4)
    fused.sum().backward()
    got = hidden.grad.clone()
    hidden.grad = None
    plain = plain_logps(hidden, head, targets)
    plain.sum().backward()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, hidden.grad, rtol=1e-4, atol=1e-6)


def test_default_chunk_keeps_fp32_logits_under_128_mib():
    assert chunk_size_for(128256) == 261 and 261 * 128256 * 4 <= 128 * 2**20 < 262 * 128256 * 4
    assert chunk_size_for(32000, chunk_tokens=64) == 64


# --- whole models, every layout -------------------------------------------------------------------------------


def tiny_llama(tie: bool, attention: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        attn_implementation=attention,
    )
    return LlamaForCausalLM(config).float()


def random_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(3, VOCAB) for _ in range(k)]  # noqa: E731
    return [
        {
            "prompt_input_ids": [1, *ids(rng.randint(0, 9))],
            "chosen_input_ids": [*ids(rng.randint(0, 8)), 2],
            "rejected_input_ids": [*ids(rng.randint(0, 8)), 2],
        }
        for _ in range(n)
    ]


def logps_and_grads(model, batch, fused: bool):
    model.zero_grad()
    if fused:
        logps, lengths = sequence_logps(model, batch)
    else:
        targets = ResponseTargets(batch["target_positions"], batch["target_ids"])
        per_token = plain_token_logps(model, batch, targets)
        lengths = batch["response_lengths"].float()
        logps = per_token.new_zeros(lengths.shape[0]).index_add(0, batch["target_owner"], per_token)
    weights = torch.linspace(-1.0, 2.0, logps.shape[0])  # any upstream gradient, different per sequence
    (logps * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), lengths, grads


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("layout", ["padded", "shared_prompt", "packed"])
def test_every_layout_equals_the_plain_forward(tie, attention, layout):
    model = tiny_llama(tie, attention)
    features = random_pairs(5, seed=hash((tie, attention, layout)) % 1000)
    reference = PreferenceCollator(0, layout="padded")(features)
    want_logps, want_lengths, want_grads = logps_and_grads(model, reference, fused=False)

    enable_response_logps(model, chunk_tokens=6)
    got_logps, got_lengths, got_grads = logps_and_grads(model, PreferenceCollator(0, layout=layout)(features), True)

    torch.testing.assert_close(got_logps, want_logps, rtol=1e-5, atol=1e-5)
    assert got_lengths.tolist() == want_lengths.tolist()
    assert set(got_grads) == set(want_grads)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_lora_model_equals_its_plain_forward_and_trains_only_adapters():
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False)
    model = peft.get_peft_model(tiny_llama(tie=False), lora)
    features = random_pairs(4, seed=3)
    reference = PreferenceCollator(0, layout="padded")(features)
    want_logps, _, want_grads = logps_and_grads(model, reference, fused=False)
    enable_response_logps(model)
    assert getattr(causal_lm_of(model), "_amapo_response_logps", None) is not None
    got_logps, _, got_grads = logps_and_grads(model, PreferenceCollator(0, layout="shared_prompt")(features), True)
    torch.testing.assert_close(got_logps, want_logps, rtol=1e-5, atol=1e-5)
    assert set(got_grads) == set(want_grads) and all("lora_" in name for name in got_grads)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_soft_capped_model_uses_its_own_logit_transform():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=3.0,
        attn_implementation="eager",
    )
    model = Gemma2ForCausalLM(config).float()
    assert LogitTransform.of(model.config) == LogitTransform(scale=1.0, softcap=3.0)
    batch = PreferenceCollator(0, layout="padded")(random_pairs(3, seed=5))
    want, _, _ = logps_and_grads(model, batch, fused=False)
    enable_response_logps(model)
    got, _, _ = logps_and_grads(model, batch, fused=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_generation_and_plain_calls_are_unchanged_by_the_patch():
    model = tiny_llama(tie=False)
    ids = torch.tensor([[1, 5, 6, 7]])
    before = model(input_ids=ids).logits
    enable_response_logps(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before)
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 7)


# --- the layouts themselves -----------------------------------------------------------------------------------

PAIR = {"prompt_input_ids": [1, 5], "chosen_input_ids": [6, 7, 2], "rejected_input_ids": [8, 2]}


def test_shared_prompt_row_positions_table_and_mask():
    batch = PreferenceCollator(0, layout="shared_prompt")([PAIR])
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 2, 8, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3]]  # rejected continues the prompt
    assert batch["segment_ids"].tolist() == [[1, 1, 2, 2, 2, 3, 3]]
    # chosen 6, 7, 2 predicted by positions 1, 2, 3; rejected 8 by the last prompt token (1), 2 by 8 (5)
    assert batch["target_positions"].tolist() == [1, 2, 3, 1, 5]
    assert batch["target_ids"].tolist() == [6, 7, 2, 8, 2]
    assert batch["target_owner"].tolist() == [0, 0, 0, 1, 1]
    assert batch["response_lengths"].tolist() == [3, 2]
    allowed = shared_prompt_mask(batch["segment_ids"], torch.float32)[0, 0] == 0
    assert allowed[5].tolist() == [True, True, False, False, False, True, False]  # rejected sees prompt + itself
    assert allowed[4].tolist() == [True, True, True, True, True, False, False]  # chosen: plain causal


def test_packed_row_has_no_padding_and_restarts_positions():
    batch = PreferenceCollator(0, layout="packed")([PAIR, PAIR])
    assert batch["input_ids"].shape == (1, 2 * (5 + 4)) and "attention_mask" not in batch
    assert batch["position_ids"].tolist()[0] == [0, 1, 2, 3, 4] * 2 + [0, 1, 2, 3] * 2
    assert batch["target_owner"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]


def test_row_lengths_and_layout_choice():
    assert [row_length(k, 10, 4, 6) for k in ("padded", "shared_prompt", "packed")] == [16, 20, 30]
    assert layout_for("auto", "eager", None, 1024) == "auto"  # per batch: shared_prompt or padded (test_layout_memory)
    assert layout_for("auto", None, None, 1024) == "shared_prompt"  # sdpa: no mask (amapo.model.sequence_rows)
    assert layout_for("auto", "eager", None, 1024) == "auto"
    assert layout_for("auto", "flash_attention_2", None, 1024) == "packed"
    assert layout_for("auto", "sdpa", 512, 1024) == "padded"  # a sliding window the custom mask would ignore
    assert layout_for("auto", "flex_attention", None, 1024) == "shared_prompt"  # a BlockMask, no dense mask
    assert layout_for("padded", "sdpa", None, 1024) == "padded"
    with pytest.raises(ValueError, match="shared_prompt needs eager, sdpa, flex_attention"):
        layout_for("shared_prompt", "flash_attention_2", None, 1024)
    with pytest.raises(ValueError, match="layout must be one of"):
        PreferenceCollator(0, layout="ragged")
    with pytest.raises(ValueError, match="batch_layout must be one of"):
        parse_train_args(["--batch_layout", "ragged"])
    with pytest.raises(ValueError, match="lm_head_chunk_size must be >= 0"):
        parse_train_args(["--lm_head_chunk_size", "-1"])


# --- the patched forward checks itself (issue 14) ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["padded", "shared_prompt", "packed"])
def test_a_family_the_patch_computes_wrongly_stops_on_the_first_batch(monkeypatch, layout):
    """A logit transform the patch does not know (here: the config's own one made wrong) shows on the first batch as
    a difference from the model's own forward, and stops with the model class named."""
    from amapo.errors import UserError
    from amapo.model import lm_head, logps

    model = tiny_llama(tie=False)
    monkeypatch.setattr(lm_head.LogitTransform, "of", classmethod(lambda cls, config: cls(scale=1.5)))
    enable_response_logps(model)
    batch = PreferenceCollator(0, layout=layout)(random_pairs(3, seed=7))
    with pytest.raises(UserError, match=r"LlamaForCausalLM: amapo's fused response log-probs differ .* by up to"):
        sequence_logps(model, batch)
    assert not getattr(model, logps.VERIFIED_MARK, False)


class ScaledHiddenLlama(LlamaForCausalLM):
    """A remote-code-like family: its forward has no ``logits_to_keep`` and scales the hidden states before the
    head (``hidden_scale``), which the patched forward does not know."""

    hidden_scale = 1.0

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        hidden = out.last_hidden_state
        return CausalLMOutputWithPast(logits=self.lm_head(hidden * self.hidden_scale))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_a_forward_without_logits_to_keep_is_checked_on_the_sampled_positions_only(scale):
    """The check slices the head's input when the forward cannot be told which logits to keep: the head sees the
    sampled positions only, and a hidden-state scale the patch misses is still caught."""
    from amapo.errors import UserError
    from amapo.model import logps

    torch.manual_seed(0)
    model = ScaledHiddenLlama(tiny_llama(tie=False).config).float()
    model.hidden_scale = scale
    enable_response_logps(model, chunk_tokens=8)  # a quarter of it: at most 2 sampled positions
    head_outputs = []
    model.lm_head.register_forward_hook(lambda module, args, out: head_outputs.append(tuple(out.shape)))
    batch = PreferenceCollator(0, layout="shared_prompt")(random_pairs(3, seed=7))
    if scale == 1.0:
        sequence_logps(model, batch)
        assert getattr(model, logps.VERIFIED_MARK)
    else:
        with pytest.raises(UserError, match="ScaledHiddenLlama: amapo's fused response log-probs differ"):
            sequence_logps(model, batch)
    assert head_outputs == [(1, 2, VOCAB)]  # the check's own forward; the fused one reads the weight, not the module


@pytest.mark.parametrize("layout", ["padded", "shared_prompt", "packed"])
@pytest.mark.parametrize("chunk_tokens", [0, 64])
def test_nothing_before_or_in_the_first_step_outgrows_one_lm_head_chunk_at_vocabulary_128k(layout, chunk_tokens):
    """Issue 24: the first-batch check built the full logits, their fp32 log-softmax and an [M, V] copy (about 10x
    the chunk here). Now no tensor of the check, nor of the first training step (forward and backward), is larger
    than one LM-head chunk's fp32 logits, and the check's own are a quarter of that."""
    from amapo.model import logps

    vocab = 128256
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)  # fmt: skip
    model = LlamaForCausalLM(config).float()
    enable_response_logps(model, chunk_tokens=chunk_tokens)
    rng = random.Random(0)
    ids = lambda k: [rng.randrange(3, vocab) for _ in range(k)]  # noqa: E731
    pairs = [{"prompt_input_ids": [1, *ids(40)], "chosen_input_ids": [*ids(150), 2],
              "rejected_input_ids": [*ids(140), 2]} for _ in range(3)]  # fmt: skip
    batch = PreferenceCollator(0, layout=layout)(pairs)
    chunk_bytes = chunk_size_for(vocab, chunk_tokens) * vocab * 4
    assert batch["target_ids"].numel() * vocab * 4 > 3 * chunk_bytes  # the plain [M, V] would be far larger

    with LargestTensor() as check:
        logps.verify_fused_logps(model, batch)
    assert getattr(model, logps.VERIFIED_MARK)
    assert check.bytes <= chunk_bytes / logps.CHECK_SHARE_OF_CHUNK

    with LargestTensor() as step:
        summed, _ = sequence_logps(model, batch)
        (summed * torch.linspace(-1, 1, summed.numel())).sum().backward()
    assert step.bytes <= chunk_bytes


def test_the_first_batch_is_checked_once_and_then_trusted():
    from amapo.model import logps

    model = tiny_llama(tie=True)
    enable_response_logps(model)
    batch = PreferenceCollator(0, layout="shared_prompt")(random_pairs(3, seed=8))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    sequence_logps(model, batch)
    assert getattr(model, logps.VERIFIED_MARK) and len(calls) == 3  # fused + plain check, then the real forward
    sequence_logps(model, batch)
    assert len(calls) == 4


def test_models_that_do_not_fit_are_refused_before_any_batch():
    from transformers import BartConfig, BartForConditionalGeneration

    from amapo.errors import UserError

    config = BartConfig(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)  # fmt: skip
    with pytest.raises(UserError, match="BartForConditionalGeneration is an encoder-decoder model"):
        enable_response_logps(BartForConditionalGeneration(config))
    headless = tiny_llama(tie=False)
    headless.get_output_embeddings = lambda: None
    with pytest.raises(UserError, match="LlamaForCausalLM has no LM head"):
        enable_response_logps(headless)
