"""The work of a ``make-pairs`` run, kept in shards beside its output so that a rerun continues it.

``<output>.shards/`` holds two kinds of JSON Lines shards, each written whole (``amapo.files.write_atomically``):

* ``samples-r<rank>-<first index>.jsonl``: ``{index, prompt, samples}`` for one batch of prompts, as sampled;
* ``scored-r<rank>-<first index>.jsonl``: the same rows with ``scores``, one per sample.

A rerun samples only the prompts no samples shard holds and scores only the samples shards without a scored
twin, so a kill loses at most the batch being worked on. Each data-parallel rank writes its own shards; the merge
reads them all. Once the output is written, the shards are removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from amapo.files import write_atomically

SAMPLES, SCORED = "samples", "scored"


def shard_folder(output: Path) -> Path:
    return output.with_name(output.name + ".shards")


class ShardStore:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.folder = shard_folder(output)

    def shards(self, kind: str) -> list[Path]:
        return sorted(self.folder.glob(f"{kind}-r*-*.jsonl")) if self.folder.is_dir() else []

    def write(self, kind: str, rank: int, rows: list[dict]) -> Path:
        path = self.folder / f"{kind}-r{rank:03d}-{rows[0]['index']:08d}.jsonl"
        write_atomically(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return path

    @staticmethod
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def done(self, kind: str) -> set[int]:
        """The prompt indices that shards of ``kind`` hold."""
        return {row["index"] for path in self.shards(kind) for row in self.read(path)}

    def unscored(self, rank: int | None = None) -> list[Path]:
        """Samples shards (of ``rank``, or of every rank) that have no scored twin yet."""
        scored = {p.name.removeprefix(SCORED) for p in self.shards(SCORED)}
        return [
            p
            for p in self.shards(SAMPLES)
            if p.name.removeprefix(SAMPLES) not in scored
            and (rank is None or p.name.startswith(f"{SAMPLES}-r{rank:03d}-"))
        ]

    def scored_rows(self) -> list[dict]:
        """Every scored row of every rank, in prompt order."""
        return sorted((row for path in self.shards(SCORED) for row in self.read(path)), key=lambda row: row["index"])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
