"""Seeds of independent random streams, named by what they are for (torch-free)."""

from __future__ import annotations

import hashlib

# How sampled tokens are drawn (amapo.model.generate.CounterSampler): recorded with sampled answers, so a run whose
# answers were drawn another way (per-row torch generators, before issue 28) is not continued with these.
SAMPLER = "counter-v1"


def stream_seed(*keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` (a purpose, a run's seed, a prompt, a sample, a turn):
    SHA-256 of the keys joined by "/", so distinct keys give unrelated streams."""
    digest = hashlib.sha256("/".join(str(key) for key in keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
