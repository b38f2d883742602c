"""The options that make a step fast on a GPU (issue 26), each against the default path on CPU:

* ``--attn_implementation flex_attention`` with every layout (a BlockMask for the shared prompt, FlexAttention's
  document mask for packed rows): the same log-probs as sdpa (forward; FlexAttention's backward needs a GPU);
* ``--lm_head_kernel compiled``: the chunked head through ``torch.compile``, log-probs and every gradient;
* ``--lm_head_kernel liger`` and ``--use_liger_kernel``: what they refuse here, and that Liger's own loss kernels,
  which would replace amapo's forward, stay off;
* ``--torch_compile``: a compiled model trains as the eager one does, first-batch check included.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_liger_head import stand_in_liger
from test_logps_layouts import VOCAB, random_pairs, tiny_llama

from amapo.data.collator import PreferenceCollator
from amapo.errors import UserError
from amapo.model.layouts import layout_for
from amapo.model.lm_head import LogitTransform, check_kernel, token_logps_from_hidden
from amapo.model.logps import enable_response_logps, sequence_logps

LAYOUTS = ("padded", "shared_prompt", "packed")


def same_weights(attention: str) -> torch.nn.Module:
    model = tiny_llama(tie=False, attention=attention)  # seeded: the same weights for every attention
    return model.eval()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flex_attention_gives_sdpas_log_probs_in_every_layout(layout):
    pytest.importorskip("torch.nn.attention.flex_attention")
    features = random_pairs(5, seed=11)
    reference = enable_response_logps(same_weights("sdpa"))
    flex = enable_response_logps(same_weights("flex_attention"))
    with torch.no_grad():
        want, _ = sequence_logps(reference, PreferenceCollator(0, layout="padded")(features))
        got, _ = sequence_logps(flex, PreferenceCollator(0, layout=layout)(features))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_flex_attention_takes_the_shared_prompt_layout_without_a_dense_mask():
    from torch.nn.attention.flex_attention import BlockMask

    from amapo.model.layouts import model_inputs

    batch = PreferenceCollator(0, layout="shared_prompt")(random_pairs(3, seed=2))
    assert isinstance(model_inputs(batch, torch.float32, "flex_attention")["attention_mask"], BlockMask)
    assert model_inputs(batch, torch.float32, "eager")["attention_mask"].shape[-2:] == batch["input_ids"].shape[-1:] * 2
    assert model_inputs(batch, torch.float32, "sdpa")["attention_mask"].shape[-1] == 0  # none (sequence_rows)
    assert layout_for("auto", "flex_attention", None, 1024) == "shared_prompt"
    assert layout_for("shared_prompt", "flex_attention", None, 1024) == "shared_prompt"
    assert layout_for("packed", "flex_attention", None, 1024) == "packed"


@pytest.mark.parametrize("frozen", [False, True], ids=["trained head", "frozen head"])
def test_the_compiled_head_gives_the_chunked_heads_log_probs_and_gradients(frozen):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, VOCAB, bias=True).requires_grad_(not frozen)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, VOCAB, (23,))
    upstream = torch.randn(23)
    transform = LogitTransform(scale=0.7, softcap=2.5)
    results = []
    for kernel in ("chunked", "compiled"):
        hidden.grad = None
        head.zero_grad()
        logps = token_logps_from_hidden(hidden, head, targets, 7, transform, kernel=kernel)
        (logps * upstream).sum().backward()
        results.append([logps.detach(), hidden.grad.clone(), *(p.grad.clone() for p in head.parameters() if p.grad
                                                              is not None)])  # fmt: skip
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_liger_head_is_refused_where_it_cannot_compute(monkeypatch):
    check_kernel("chunked", LogitTransform(scale=3.0), "cpu")  # the others run anywhere
    check_kernel("compiled", LogitTransform(scale=3.0), "cpu")
    monkeypatch.setitem(sys.modules, "liger_kernel.ops.fused_linear_cross_entropy", None)  # not installed
    with pytest.raises(UserError, match=r"--lm_head_kernel liger needs liger-kernel \(pip install liger-kernel\)"):
        check_kernel("liger", LogitTransform(), "cuda")
    stand_in_liger(monkeypatch)  # a stand-in liger-kernel 0.8.5: liger-kernel is not needed
    with pytest.raises(UserError, match="multiplies its logits by 3, which Liger's fused cross-entropy does not"):
        check_kernel("liger", LogitTransform(scale=3.0), "cuda")
    with pytest.raises(UserError, match="need a CUDA GPU; use chunked"):
        check_kernel("liger", LogitTransform(softcap=30.0), "cpu")
    check_kernel("liger", LogitTransform(softcap=30.0), "cuda")  # soft-capping is Liger's own


def test_liger_model_kernels_keep_liger_s_loss_off_and_are_refused_without_a_gpu(tmp_path):
    from amapo.train.parsing import parse_train_args
    from amapo.train.run import run_training

    base = ["--config", "builtin", "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--eval_datasets",
            "none"]  # fmt: skip
    config = parse_train_args([*base, "--use_liger_kernel", "true"])
    assert config.liger_kernel_config == {"fused_linear_cross_entropy": False, "cross_entropy": False}
    recipe = tmp_path / "liger.yaml"  # (a dict option: from a recipe)
    recipe.write_text("use_liger_kernel: true\nliger_kernel_config:\n  fused_linear_cross_entropy: true\n")
    with pytest.raises(UserError, match="replaces the model's forward and with it amapo's response log-probs"):
        parse_train_args(["--config", str(recipe), "--model_name_or_path", "builtin:tiny-llama", "--dataset",
                          "builtin:reverse"])  # fmt: skip
    with pytest.raises(UserError, match=r"--use_liger_kernel( needs liger-kernel|: Liger.s kernels are Triton)"):
        run_training(config)  # on this CPU: before anything loads
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="--lm_head_kernel must be one of chunked, compiled, liger, got 'fast'"):
        parse_train_args([*base, "--lm_head_kernel", "fast"])


def test_a_compiled_model_trains_as_the_eager_one(tmp_path):
    """``--torch_compile`` wraps the model in torch.compile's OptimizedModule: the patched forward, the first-batch
    check run through it, the chunked head beside its graph (``_head_token_logps``; aot_eager: dynamo and AOT
    autograd, no code generation)."""
    from torch._dynamo.utils import counters

    from amapo.train.parsing import parse_train_args
    from amapo.train.run import run_training

    counters.clear()
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["--torch_compile", "true", "--torch_compile_backend",
                                                     "aot_eager"])):  # fmt: skip
        out = tmp_path / name
        args = ["--config", "builtin", "--output_dir", str(out), "--max_steps", "3", "--eval_datasets", "none",
                "--save_strategy", "no", "--train_sampling_strategy", "sequential", "--logging_steps", "1",
                *extra]  # fmt: skip
        run_training(parse_train_args(args))
        logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [log["loss"] for log in logs if "loss" in log]
    assert len(losses["eager"]) == 3 and counters["stats"]["unique_graphs"] > 0  # dynamo did compile the model
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-5, abs=1e-6)
