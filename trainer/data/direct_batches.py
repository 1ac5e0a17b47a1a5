"""Batches built in the calling process from decoded samples, keeping each batch's samples at hand.

The shard loader (``trainer.data.loader``) is the training and evaluation path; this one serves tools that
need the samples beside their batch (``launch/predict.py`` writes each sample's ego pose and key with its
predictions) and the loader benchmark. Samples are prepared without augmentation and collated every
``data.batch_size``, the remainder too.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from models.batch import Batch
from models.grid import GridConfig
from trainer.data.classes import ClassGrouping
from trainer.data.collate import collate_prepared
from trainer.data.config import DataConfig
from trainer.data.prepare import SamplePreparer
from trainer.data.sample import Sample
from trainer.data.voxelize import FrameVoxelizer


def prepared_batches(samples: Iterable[Sample], data: DataConfig, grid: GridConfig) -> Iterator[tuple[list[Sample],
                                                                                                       Batch]]:
    """(the samples, their collated batch) for every ``data.batch_size`` samples of ``samples``, in order."""
    prep = SamplePreparer(grid, ClassGrouping(data.classes, data.drop_obj_types), max_agents=data.max_agents)
    voxelizer = FrameVoxelizer(grid)
    pending: list[Sample] = []
    for sample in samples:
        pending.append(sample)
        if len(pending) == data.batch_size:
            yield pending, collate_prepared([prep(s) for s in pending], max_agents=data.max_agents,
                                            voxelizer=voxelizer)
            pending = []
    if pending:
        yield pending, collate_prepared([prep(s) for s in pending], max_agents=data.max_agents, voxelizer=voxelizer)
