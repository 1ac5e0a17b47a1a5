"""Pure shard assignment: node (rank) and worker splitting, seeds, per-rank epoch length.

Nothing here asks torch.distributed; rank / world size / worker id are explicit arguments.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from webdataset.shardlists import expand_urls


def expand_shards(spec: str) -> list[str]:
    """Shard URLs of a spec: brace patterns, joined by ``::`` or ``,``."""
    urls: list[str] = []
    for part in spec.replace(",", "::").split("::"):
        if part.strip():
            urls.extend(expand_urls(part.strip()))
    if not urls:
        raise ValueError(f"shard spec {spec!r} names no shards")
    return urls


def consumer_index(*, rank: int, world_size: int, worker: int, num_workers: int) -> tuple[int, int]:
    """(global consumer id, number of consumers) of one loader worker of one rank."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} not in [0, num_workers={num_workers})")
    return rank * num_workers + worker, world_size * num_workers


def split_shards(urls: list[str], *, rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards one worker of one rank reads in one pass.

    Shard i goes to consumer ``i % (world_size * num_workers)``: disjoint and complete when there
    are at least as many shards as consumers. With fewer shards, a consumer left empty reads shard
    ``consumer % len(urls)`` (duplicates instead of an idle worker that would stall the epoch).
    """
    if not urls:
        raise ValueError("no shards to split")
    me, n = consumer_index(rank=rank, world_size=world_size, worker=worker, num_workers=num_workers)
    mine = urls[me::n]
    return mine if mine else [urls[me % len(urls)]]


def make_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from any parts (same on every platform and process)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shard_passes(urls: list[str], *, seed: int, shuffle: bool, repeat: bool) -> Iterator[tuple[int, str]]:
    """(pass index, url): each pass shuffled with ``make_seed(seed, pass)``; forever if ``repeat``."""
    rep = 0
    while True:
        order = list(urls)
        if shuffle:
            random.Random(make_seed(seed, rep)).shuffle(order)
        for url in order:
            yield rep, url
        rep += 1
        if not repeat:
            return


def resampled_shards(urls: list[str], *, seed: int) -> Iterator[str]:
    """Shards drawn with replacement, forever, from a seeded generator."""
    rng = random.Random(seed)
    while True:
        yield rng.choice(urls)


def batches_per_rank(num_samples: int, *, batch_size: int, world_size: int) -> int:
    """Batches every rank yields per epoch so that all ranks agree (floor, at least 1)."""
    return max(1, num_samples // (batch_size * world_size))
