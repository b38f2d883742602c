"""The work folder's tokenizer, model and preference pairs, the token counts of each step, and the model FLOPs.

The rules (what the model, tokenizer and pairs are; how tokens and FLOPs are counted) are in the docstring of
``benchmarks/preference_step.py``, sections "What runs", "What is measured" and "Model FLOPs and MFU".
"""

from __future__ import annotations

import random
from pathlib import Path

from .common import MODEL_SHAPE, SPECIAL_TOKENS


def build_tokenizer(vocab: int, model_dir: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = vocab - len(SPECIAL_TOKENS)
    if words < 2:
        raise ValueError(f"--vocab {vocab} is too small: need more than {len(SPECIAL_TOKENS) + 1} tokens")
    table = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    table.update({f"w{j}": len(SPECIAL_TOKENS) + j for j in range(words)})
    core = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos_id = table["<bos>"]
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1_000_000,
    )
    if len(tokenizer) != vocab:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {vocab}")
    ids = tokenizer("w5 w17 w3")["input_ids"]
    if ids != [bos_id, 9, 21, 7]:
        raise RuntimeError(f"tokenizer check failed: 'w5 w17 w3' -> {ids}")
    tokenizer.save_pretrained(str(model_dir))
    return tokenizer


def model_shape(a) -> dict[str, int]:
    """``MODEL_SHAPE`` with the ``--hidden_size`` ... ``--num_kv_heads`` the command gave."""
    given = {
        "hidden_size": a.hidden_size,
        "num_hidden_layers": a.num_layers,
        "intermediate_size": a.intermediate_size,
        "num_attention_heads": a.num_heads,
        "num_key_value_heads": a.num_kv_heads,
    }
    return MODEL_SHAPE | {k: v for k, v in given.items() if v is not None}


def build_model(vocab: int, model_dir: Path, seed: int, max_len: int, cuda: bool, shape: dict | None = None) -> dict:
    """Random-init Llama of ``shape`` (default ``MODEL_SHAPE``) saved to ``model_dir``; its shape and parameter
    counts."""
    shape = shape or MODEL_SHAPE
    import inspect

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=max(2048, max_len + 64),
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        **shape,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if cuda:
        model = model.to(torch.bfloat16)  # saved in the dtype every worker trains in
    save_kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True
    model.save_pretrained(str(model_dir), **save_kwargs)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    return {
        "vocab": vocab,
        **shape,
        "tie_word_embeddings": False,
        "dtype": "bfloat16" if cuda else "float32",
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "params_total": total,
        "params_embedding": embedding,
        "params_lm_head": head,
        "params_nonembedding": total - embedding - head,
    }


def make_pairs(n: int, vocab: int, min_len: int, max_len: int, seed: int) -> list[dict]:
    """Seeded pairs; lengths come from their own generator, so they are the same for every vocabulary."""
    lengths_rng, words_rng = random.Random(seed), random.Random(seed + 1)
    n_words = vocab - len(SPECIAL_TOKENS)

    def text(count: int) -> str:
        return " ".join(f"w{words_rng.randrange(n_words)}" for _ in range(count))

    rows = []
    for _ in range(n):
        p = lengths_rng.randint(max(1, min_len // 2), max(1, max_len // 2))
        lo, hi = max(1, min_len - p), max(1, max_len - p)
        c, r = lengths_rng.randint(lo, hi), lengths_rng.randint(lo, hi)
        prompt, chosen, rejected = text(p), text(c), text(r)
        while rejected == chosen:
            rejected = text(r)
        # a leading space: prompt + response splits into exactly the prompt's words then the response's
        rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


def pair_token_stats(row: dict) -> dict[str, int]:
    """Token counts of one pair as every framework sees it: BOS + prompt words, response words + EOS."""
    p, c, r = len(row["prompt"].split()), len(row["chosen"].split()), len(row["rejected"].split())
    chosen_len, rejected_len = 1 + p + c + 1, 1 + p + r + 1
    return {
        "tokens": chosen_len + rejected_len,
        "response_tokens": (c + 1) + (r + 1),
        "sum_len_sq": chosen_len**2 + rejected_len**2,
        "max_len": max(chosen_len, rejected_len),
    }


def step_token_stats(rows: list[dict], batch: int, n_steps: int) -> list[dict[str, int]]:
    """Per optimizer step k (0-based), the counts of pairs [k*batch, (k+1)*batch): sequential sampling."""
    steps = []
    for k in range(n_steps):
        stats = [pair_token_stats(row) for row in rows[k * batch : (k + 1) * batch]]
        steps.append(
            {
                "pairs": len(stats),
                "tokens": sum(s["tokens"] for s in stats),
                "response_tokens": sum(s["response_tokens"] for s in stats),
                "sum_len_sq": sum(s["sum_len_sq"] for s in stats),
                "padded_tokens": 2 * len(stats) * max(s["max_len"] for s in stats),
            }
        )
    return steps


def model_flops(step: dict, *, n_nonembedding: int, hidden: int, vocab: int, layers: int, reference: bool) -> float:
    """Model FLOPs of one step (preference_step.py's docstring): 6NT + 6HVR + 6LHS, x 4/3 with a reference forward."""
    flops = 6.0 * n_nonembedding * step["tokens"]
    flops += 6.0 * hidden * vocab * step["response_tokens"]
    flops += 6.0 * layers * hidden * step["sum_len_sq"]
    return flops * (4.0 / 3.0 if reference else 1.0)
