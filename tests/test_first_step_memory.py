"""Nothing `amapo train` runs before or in its first step builds a vocabulary-sized tensor beyond one LM-head chunk
(issue 24): model loading, tokenizing, the evaluation before training, the first-batch self-check and the step
itself, on a model with Llama-3's vocabulary (128,256) and answers long enough that full logits would be ~10 chunks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from largest_tensor import LargestTensor

from amapo.model.lm_head import chunk_size_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from prefstep.data import build_model, build_tokenizer, make_pairs  # the benchmark's model and data

VOCAB = 128256


def test_a_first_training_step_with_evaluation_never_outgrows_one_lm_head_chunk(tmp_path):
    from amapo.train.config import TrainConfig
    from amapo.train.run import run_training

    model_dir = tmp_path / "model"
    build_tokenizer(VOCAB, model_dir)
    shape = {"hidden_size": 16, "num_hidden_layers": 1, "intermediate_size": 32, "num_attention_heads": 2,
             "num_key_value_heads": 1}  # fmt: skip
    build_model(VOCAB, model_dir, seed=0, max_len=512, cuda=False, shape=shape)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in make_pairs(8, VOCAB, 200, 320, seed=0)))
    config = TrainConfig(
        output_dir=str(tmp_path / "out"), model_name_or_path=str(model_dir), dataset=str(data),
        train_split="train[:4]", eval_split="train[4:]", method="amapo", per_device_train_batch_size=4,
        per_device_eval_batch_size=4, max_steps=1, max_length=400, max_prompt_length=200, use_cpu=True,
        report_to="none", save_strategy="no", disable_tqdm=True, train_sampling_strategy="sequential",
    )  # fmt: skip
    chunk_bytes = chunk_size_for(VOCAB) * VOCAB * 4
    with LargestTensor() as largest:
        result = run_training(config)
    assert result.eval_before and result.train_metrics  # the evaluation before training and the step both ran
    # the run's responses hold ~1,000 tokens per batch: their full logits would be about 4x the chunk
    assert largest.bytes <= chunk_bytes, largest.where
