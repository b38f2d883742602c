from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    path = SHARED_DATA / "orca_dpo_pairs.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (only in the project checkout)")
    return path
