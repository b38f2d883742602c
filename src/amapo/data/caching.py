"""A digest of this package's source, passed to every ``Dataset.map`` so that cached results follow the code.

``datasets`` caches a map's result under a hash of its arguments. The mapped function is a closure that
calls module-level helpers, which are hashed by name, not by code: after a change to amapo the stale cached
result would be reused. Passing ``fn_kwargs={"code_version": SOURCE_DIGEST}`` puts the code into the hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


SOURCE_DIGEST = _source_digest()
