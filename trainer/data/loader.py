"""The shard loader: WebDataset tar streams -> decoded, prepared, collated ``Batch`` es.

Per rank and worker (explicit ``rank`` / ``world_size``, never torch.distributed): shards split by
``split.split_shards`` (or drawn with replacement when ``resampled``), read with a handler that
skips and COUNTS corrupt members / samples / truncated shards (a wrong schema version or an
unmapped object type is an error, never a skip), each sample given the frames it names from the
frame records of its shard (``shard_read``; frame records are not samples), shuffled, decoded,
prepared (BEV mapping, augmentation, voxelisation) and collated in the worker. Training (and val
with ``val_samples``) cycles the data so that every rank yields exactly the same number of batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import _shuffle

from models.batch import Batch
from models.grid import GridConfig
from trainer.data import split
from trainer.data.classes import ClassGrouping
from trainer.data.data_errors import FATAL_DATA_ERRORS
from trainer.data.collate import collate_prepared
from trainer.data.conditions import Conditions, ConditionSampler
from trainer.data.config import DataConfig
from trainer.data.prepare import SamplePreparer
from trainer.data.sample import decode_sample
from trainer.data.shard_read import sample_records
from trainer.data.voxelize import FrameVoxelizer

_FATAL = FATAL_DATA_ERRORS
PASS_KEY = "__pass__"
RESAMPLED_PASS = 32
"""With ``resampled`` shards, a "pass" (for the no-readable-sample check) is this many draws per shard."""
"""Record key: the pass over the worker's shards that the record was read in (set and removed here)."""


class NoReadableSampleError(RuntimeError):
    """A full pass over a worker's shards gave no sample that decodes: the data can never yield a batch."""


class SkipCounter:
    """Counts what a worker skipped; the exception handler of every reading stage.

    It also keeps, per pass over the worker's shards, how many samples were read, processed and decoded,
    so that a pass in which every sample was read and none decoded is an error (bounded by one pass of
    reading), however the shuffle buffer reorders records across passes.
    """

    def __init__(self, shards: list[str]) -> None:
        self.shards = shards
        self.skipped = 0
        self.raw_samples = 0
        self.pass_index = 0
        self.last_error = ""
        self._reported = 0
        self._open: dict[int, list[int]] = {}  # pass -> [read, processed, decoded]

    def __call__(self, exn: Exception) -> bool:
        if isinstance(exn, _FATAL):
            raise exn
        self.skipped += 1
        where = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "")
        self.last_error = f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}{' in ' + where if where else ''}"
        warnings.warn(f"skipping corrupt data{' in ' + where if where else ''}: {type(exn).__name__}: {exn.args[0] if exn.args else exn}",
                      RuntimeWarning, stacklevel=2)
        return True

    def read(self) -> int:
        """Count one sample read in the current pass; returns that pass's index."""
        self.raw_samples += 1
        self._open.setdefault(self.pass_index, [0, 0, 0])[0] += 1
        return self.pass_index

    def processed(self, pass_index: int, *, decoded: bool) -> None:
        """Count one sample of ``pass_index`` processed; raise when a finished pass decoded nothing."""
        counts = self._open[pass_index]
        counts[1] += 1
        counts[2] += int(decoded)
        self._check(finished=False)

    def finish(self) -> None:
        """The stream ended: every pass is finished."""
        self._check(finished=True)

    def _check(self, *, finished: bool) -> None:
        """A pass is finished when reading has moved on to a later pass, or the stream ended."""
        for index in sorted(self._open):
            read, done, ok = self._open[index]
            if done < read or not (index < self.pass_index or finished):
                continue
            if ok == 0:
                raise NoReadableSampleError(self.describe(f"a full pass read {read} sample(s) and decoded none"))
            del self._open[index]

    def describe(self, what: str) -> str:
        return (f"shards {self.shards}: {what} ({self.skipped} skipped in total"
                f"{'; last: ' + self.last_error if self.last_error else ''}); fix or remove these shards")

    def take_new(self) -> int:
        """Skips since the previous call."""
        new, self._reported = self.skipped - self._reported, self.skipped
        return new


class ShardBatchStream(IterableDataset):
    """Iterable of collated ``Batch`` es for one rank (each DataLoader worker reads its share)."""

    def __init__(self, urls: list[str], cfg: DataConfig, grid: GridConfig, *, train: bool, repeat: bool,
                 rank: int, world_size: int, seed: int, epoch: int, conditions: Conditions | None = None) -> None:
        super().__init__()
        self.urls, self.cfg, self.grid = urls, cfg, grid
        self.train, self.repeat = train, repeat
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.conditions = conditions
        """Pose noise and latency of every sample (training: the augmentation's; evaluation: the caller's)."""

    def _condition_sampler(self) -> ConditionSampler | None:
        """Training draws new errors and delays each epoch; an evaluation draws the same ones every time."""
        if self.conditions is None or not self.conditions.enabled:
            return None
        return ConditionSampler(self.conditions, stream=(self.seed, self.epoch) if self.train else ())

    def _shard_urls(self, worker: int, num_workers: int, counter: SkipCounter) -> Iterator[dict]:
        worker_seed = split.make_seed(self.seed, self.epoch, self.rank, worker)
        if self.train and self.cfg.resampled:
            counter.shards = self.urls
            draws_per_pass = RESAMPLED_PASS * len(self.urls)  # a good shard is missed by one with p < e^-32
            for draw, url in enumerate(split.resampled_shards(self.urls, seed=worker_seed)):
                if draw and draw % draws_per_pass == 0:
                    counter.pass_index += 1
                yield {"url": url}
            return
        mine = split.split_shards(self.urls, rank=self.rank, world_size=self.world_size, worker=worker,
                                  num_workers=num_workers)
        counter.shards = mine
        seen_at_pass = 0
        for rep, url in split.shard_passes(mine, seed=worker_seed, shuffle=self.train, repeat=self.repeat):
            if rep != counter.pass_index:
                if counter.raw_samples == seen_at_pass:
                    raise NoReadableSampleError(counter.describe("a full pass read no sample"))
                counter.pass_index, seen_at_pass = rep, counter.raw_samples
            yield {"url": url}

    def _raw_samples(self, worker: int, num_workers: int, counter: SkipCounter) -> Iterator[dict]:
        for record in sample_records(self._shard_urls(worker, num_workers, counter), handler=counter):
            record[PASS_KEY] = counter.read()
            yield record

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        counter = SkipCounter(self.urls)
        preparer = SamplePreparer(
            self.grid, ClassGrouping(self.cfg.classes, self.cfg.drop_obj_types), max_agents=self.cfg.max_agents,
            augment_cfg=self.cfg.augment if self.train else None,
            seed=split.make_seed("augment", self.seed, self.epoch, self.rank, worker),
        )
        voxelizer = FrameVoxelizer(self.grid)
        conditions = self._condition_sampler()
        records = self._raw_samples(worker, num_workers, counter)
        if self.train and self.cfg.shuffle_buffer > 0:
            records = _shuffle(records, bufsize=self.cfg.shuffle_buffer, initial=self.cfg.shuffle_buffer,
                               seed=split.make_seed("shuffle", self.seed, self.epoch, self.rank, worker))
        pending = []
        for record in records:
            read_in = record.pop(PASS_KEY)
            try:
                sample = decode_sample(record)
                pending.append(preparer(conditions(sample, record) if conditions is not None else sample))
            except Exception as exn:  # noqa: BLE001 - the handler decides: count and skip, or re-raise
                exn.args = exn.args + (record.get("__url__", ""),)
                counter(exn)
                counter.processed(read_in, decoded=False)
                continue
            counter.processed(read_in, decoded=True)
            if len(pending) == self.cfg.batch_size:
                yield collate_prepared(pending, max_agents=self.cfg.max_agents, voxelizer=voxelizer,
                                       num_skipped=counter.take_new())
                pending = []
        counter.finish()
        if pending and not self.train:
            yield collate_prepared(pending, max_agents=self.cfg.max_agents, voxelizer=voxelizer,
                                   num_skipped=counter.take_new())


def _passthrough(batch: Batch) -> Batch:
    return batch


class ShardLoader:
    """Iterates a fixed number of batches per epoch (or one plain pass when ``num_batches`` is None)."""

    def __init__(self, stream: ShardBatchStream, *, num_workers: int, num_batches: int | None) -> None:
        self.stream = stream
        self.num_workers = num_workers
        self.num_batches = num_batches

    def set_epoch(self, epoch: int) -> None:
        """Reseed shard order, shuffling and augmentation for ``epoch``."""
        self.stream.epoch = epoch

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("a single-pass loader (val_samples=None) has no fixed length")
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, collate_fn=_passthrough,
                            persistent_workers=False)
        if self.num_batches is None:
            yield from loader
            return
        it = iter(loader)
        for _ in range(self.num_batches):
            yield next(it)


def build_loader(cfg: DataConfig, grid: GridConfig, *, split: str, rank: int, world_size: int, seed: int,
                 epoch: int = 0, conditions: Conditions | None = None) -> ShardLoader:
    """Batches of ``models.batch.Batch`` on the CPU for ``split`` (``"train"`` or ``"val"``) of one rank.

    ``conditions``: the pose noise and latency of an evaluation (``"val"`` only; training takes those of
    ``cfg.augment`` when augmentation is enabled).
    (The ``split`` argument shadows the ``split`` module here, hence the two helpers below.)
    """
    name = split
    if name not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {name!r}")
    if name == "train":
        if conditions is not None:
            raise ValueError("training conditions come from data.augment.pose_noise / data.augment.latency")
        if cfg.augment.enabled:
            conditions = Conditions(pose_noise=cfg.augment.pose_noise, latency=cfg.augment.latency)
    spec = cfg.train_shards if name == "train" else cfg.val_shards
    if not spec:
        raise ValueError(f"data.{name}_shards is empty")
    urls = _expand(spec)
    train = name == "train"
    if train:
        num_batches: int | None = _per_rank(cfg.samples_per_epoch, cfg, world_size)
    elif cfg.val_samples is not None:
        num_batches = _per_rank(cfg.val_samples, cfg, world_size)
    else:
        if world_size > 1:
            raise ValueError("data.val_samples must be set when world_size > 1 (every rank needs the same batch count)")
        num_batches = None
    stream = ShardBatchStream(urls, cfg, grid, train=train, repeat=num_batches is not None, rank=rank,
                              world_size=world_size, seed=seed, epoch=epoch, conditions=conditions)
    return ShardLoader(stream, num_workers=cfg.num_workers, num_batches=num_batches)


def _expand(spec: str) -> list[str]:
    return split.expand_shards(spec)


def _per_rank(num_samples: int, cfg: DataConfig, world_size: int) -> int:
    return split.batches_per_rank(num_samples, batch_size=cfg.batch_size, world_size=world_size)
