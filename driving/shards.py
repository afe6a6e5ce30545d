"""Shards: one run's episodes split over independent jobs (a SLURM array, any scheduler, several
hosts). `shard=K/N` takes episodes K, K+N, K+2N, ... of the run (0 <= K < N); the N shards together
run exactly the unsharded run's episodes, each with the same seed, so merging their outputs
(`driving data merge`, `driving eval merge`) gives what one run gives. Striding rather than
blocks keeps the shards equally long where episode cost drifts with the seed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def take(self, n: int) -> list[int]:
        """The episode numbers of an n-episode run that this shard runs."""
        return list(range(self.index, n, self.count))

    def as_dict(self) -> dict:
        return {"index": self.index, "count": self.count}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec) -> Shard | None:
    """`K/N` -> Shard; None or "" -> None (no sharding). A ValueError names the key and the fix."""
    if spec is None or str(spec).strip() == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise ValueError(f"shard={spec!r} is not K/N: give whole numbers with 0 <= K < N, e.g. shard=0/4 "
                         "... shard=3/4 (in a SLURM array: shard=$SLURM_ARRAY_TASK_ID/N with --array=0-(N-1))")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or k >= n:
        raise ValueError(f"shard={spec!r}: K must be 0..N-1 with N >= 1 (shard=0/{max(n, 1)} ... "
                         f"shard={max(n, 1) - 1}/{max(n, 1)})")
    return Shard(k, n)


def episodes_of(spec, n: int) -> list[int]:
    """The episode numbers of an n-episode run that `shard=spec` runs (all of them without a shard)."""
    shard = parse_shard(spec)
    return shard.take(n) if shard else list(range(n))


def note_empty_shard(spec, n: int, what: str) -> None:
    """A shard past the episodes (shard=3/4 of 2) runs none: said, since it still writes an empty part
    (a job array with a fixed shard count gets one; the merge takes it)."""
    shard = parse_shard(spec)
    if shard and not shard.take(n):
        import sys

        print(f"note: shard {shard.index}/{shard.count} of {n} episode{'s' if n != 1 else ''} holds none: this "
              f"{what} writes an empty part (fewer shards give every one episodes)", file=sys.stderr)


def shard_of(meta: dict) -> Shard | None:
    """The shard an output's meta (dataset meta.json or eval.json) records, if any; a ValueError where
    the record is not one (a hand-edited file)."""
    s = meta.get("shard")
    if not s:
        return None
    k, n = (s.get("index"), s.get("count")) if isinstance(s, dict) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (k, n)) or not 0 <= k < n:
        raise ValueError(f"its shard record {s!r} is not {{index: K, count: N}} with 0 <= K < N")
    return Shard(k, n)


def check_complete(shards: list[Shard], where: list[str], how: str) -> None:
    """Every shard 0..N-1 of one N exactly once; a ValueError names what is missing or doubled."""
    counts = {s.count for s in shards}
    if len(counts) != 1:
        listing = ", ".join(f"{w} ({s})" for w, s in zip(where, shards))
        raise ValueError(f"the inputs are shards of different splits ({listing}): merge the N shards of one split")
    n = counts.pop()
    seen: dict[int, str] = {}
    for s, w in zip(shards, where):
        if s.index in seen:
            raise ValueError(f"shard {s} is given twice ({seen[s.index]} and {w}): give each shard once")
        seen[s.index] = w
    missing = [f"{k}/{n}" for k in range(n) if k not in seen]
    if missing:
        raise ValueError(f"shard(s) {', '.join(missing)} missing: {how}")
