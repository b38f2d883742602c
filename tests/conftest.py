from __future__ import annotations

from pathlib import Path

import pytest

# 40 rows of the shared Orca DPO pairs (real text, a foreign schema), carried with the tests (data/orca/README.md)
ORCA_FILE = Path(__file__).resolve().parent / "data" / "orca" / "orca_dpo_pairs.jsonl"


@pytest.fixture(scope="session", autouse=True)
def builtin_cache(tmp_path_factory):
    """Build the built-in assets once per test session, in a private cache (never the user's)."""
    cache = tmp_path_factory.mktemp("amapo-cache")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("AMAPO_CACHE", str(cache))
    yield cache
    patcher.undo()


@pytest.fixture
def orca_file() -> Path:
    """Real preference pairs in the OpenAI preference fine-tuning schema (system + user prompt, one answer each)."""
    return ORCA_FILE


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, builtin_cache) -> Path:
    """A 4-step run of the built-in recipe (its num_train_epochs is 4), without eval sets: a model folder with the
    amapo_config.yaml, metrics.jsonl and README.md of a run. Tests that change it work on a copy."""
    from amapo.train.parsing import parse_train_args
    from amapo.train.run import run_training

    out = tmp_path_factory.mktemp("evalmodel") / "out"
    args = ["--config", "builtin", "--output_dir", str(out), "--max_steps", "4", "--eval_datasets", "none"]
    run_training(parse_train_args(args))
    return out
