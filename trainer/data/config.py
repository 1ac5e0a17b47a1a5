"""Typed configs of the data pipeline: conversion (``ConvertConfig``) and loading (``DataConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from trainer.data.box_range import RANGE_RULES
from trainer.data.latency import LatencyConfig
from trainer.data.pose_noise import PoseNoiseConfig
from trainer.data.sample import MODES, normalise_obj_type
from trainer.data.taxonomy import CUSTOM, DROP_ALL_OTHERS, taxonomy


@dataclass(kw_only=True)
class ConvertConfig:
    """How samples are cut from an OpenCOOD / V2XPnP-Seq tree."""

    mode: str = "vc"
    """Collaboration mode: vc (vehicle ego), ic (infrastructure ego), v2v, i2i."""
    max_agents: int = 4
    """Agents per sample, ego first."""
    max_infra_vc: int = 2
    """In vc mode, at most this many infrastructure collaborators."""
    comm_range: float = 50.0
    """Communication range (m) between the ego and a collaborator at time t."""
    history: int = 5
    """History frames T per agent (index T-1 = t)."""
    history_stride: int = 5
    """Raw frames between history frames (5 = 2 Hz from 10 Hz)."""
    future: int = 6
    """Future steps T_f of the targets."""
    future_stride: int = 5
    """Raw frames between future steps."""
    sample_stride: int = 5
    """Raw frames between consecutive sample times t of one ego."""
    full_windows: bool = True
    """Only cut samples whose whole history and future window lies inside the scenario."""
    target_range: list[float] = field(default_factory=lambda: [-70.4, -40.0, 70.4, 40.0])
    """[x_min, y_min, x_max, y_max] of the boxes kept, ego BEV frame at t."""
    raw_rate_hz: float = 10.0
    """Frame rate of the source."""
    box_range_rule: str = "centre"
    """How ``target_range`` keeps a box (``trainer.data.box_range``): ``centre`` (its centre inside; the
    default), ``all_corners`` (OpenCOOD) or ``any_corner`` (V2X-Real)."""
    taxonomy: str = "v2xpnp"
    """Built-in taxonomy (``trainer.data.taxonomy``) the conversion report checks the object types against,
    and whose ``default_obj_type`` applies; ``custom`` checks nothing."""
    default_obj_type: Optional[str] = None
    """Type of a YAML entry without ``obj_type``; None: the taxonomy's (``opv2v``: car), else such an entry is
    a malformed file."""
    zero_intensity: bool = False
    """Write every point's intensity as 0 (V2X-Real loads its clouds so)."""
    mask_ego_points: bool = False
    """Drop each agent's points inside its own footprint (``trainer.data.point_clean.EGO_BOX``, sensor
    frame), as OpenCOOD and V2X-Real do."""
    delay_frames: int = 0
    """Also store every collaborator's history window delayed by 1..delay_frames raw frames, for latency
    (``trainer.data.delayed_frames``; up to 1 + delay_frames times the frames, when below ``history_stride``).
    0 = none."""

    def __post_init__(self) -> None:
        if self.delay_frames < 0:
            raise ValueError(f"delay_frames must be >= 0, got {self.delay_frames}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("max_agents", "history", "history_stride", "future_stride", "sample_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.future < 0 or self.max_infra_vc < 0:
            raise ValueError("future and max_infra_vc must be >= 0")
        if self.comm_range <= 0 or self.raw_rate_hz <= 0:
            raise ValueError("comm_range and raw_rate_hz must be > 0")
        r = list(self.target_range)
        if len(r) != 4 or not (r[0] < r[2] and r[1] < r[3]):
            raise ValueError(f"target_range must be [x_min, y_min, x_max, y_max], got {r}")
        if self.box_range_rule not in RANGE_RULES:
            raise ValueError(f"box_range_rule must be one of {RANGE_RULES}, got {self.box_range_rule!r}")
        if self.taxonomy != CUSTOM:
            default = taxonomy(self.taxonomy).default_obj_type  # raises on an unknown name
            if self.default_obj_type is None:
                self.default_obj_type = default
        if self.default_obj_type is not None and not normalise_obj_type(self.default_obj_type):
            raise ValueError(f"default_obj_type must name a type, got {self.default_obj_type!r}")


@dataclass(kw_only=True)
class ClassGroup:
    """One training class and the V2XPnP object types grouped into it."""

    name: str
    """Training class name."""
    obj_types: list[str] = field(default_factory=list)
    """Normalised V2XPnP types (see ``sample.V2XPNP_OBJ_TYPES``) mapped to this class."""


def taxonomy_groups(name: str) -> tuple[list[ClassGroup], list[str]]:
    """The classes and dropped types of built-in taxonomy ``name`` (``trainer.data.taxonomy``)."""
    tax = taxonomy(name)
    return [ClassGroup(name=c, obj_types=list(types)) for c, types in tax.classes], list(tax.drop)


@dataclass(kw_only=True)
class AugmentConfig:
    """Global BEV augmentation (training only), applied identically to all agents and targets."""

    enabled: bool = True
    """Master switch (the loader also never augments the val split)."""
    rotation_deg: float = 45.0
    """Uniform rotation in [-rotation_deg, rotation_deg]."""
    flip_prob: float = 0.5
    """Probability of mirroring the y axis."""
    scale_range: list[float] = field(default_factory=lambda: [0.95, 1.05])
    """Uniform isotropic scale [min, max] (also scales heights and sizes)."""
    pose_noise: PoseNoiseConfig = field(default_factory=PoseNoiseConfig)
    """Gaussian errors on collaborators' poses (``trainer.data.pose_noise``), drawn anew every epoch."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    """Collaborators' frames delayed by raw frames (``trainer.data.latency``), drawn anew every epoch."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ValueError(f"augment.rotation_deg must be in [0, 180], got {self.rotation_deg}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"augment.flip_prob must be in [0, 1], got {self.flip_prob}")
        s = list(self.scale_range)
        if len(s) != 2 or not 0 < s[0] <= s[1]:
            raise ValueError(f"augment.scale_range must be [min, max] with 0 < min <= max, got {s}")


@dataclass(kw_only=True)
class DataConfig:
    """Shard loading for training and evaluation."""

    train_shards: str = ""
    """Brace pattern / comma-separated list of train shards, e.g. ``data/train-{000000..000009}.tar``."""
    val_shards: str = ""
    """Same for validation."""
    batch_size: int = 2
    """Scenes per batch per rank."""
    num_workers: int = 2
    """Loader worker processes per rank (0 = load in the main process)."""
    shuffle_buffer: int = 64
    """Sample shuffle buffer (training); 0 disables."""
    resampled: bool = False
    """Training draws shards with replacement (ResampledShards) instead of epoch passes."""
    samples_per_epoch: int = 1000
    """Training samples per epoch over all ranks; each rank gets samples // (batch * world) batches."""
    val_samples: Optional[int] = None
    """Validation samples over all ranks (fixed count per rank); None = one plain pass (1 rank only)."""
    max_agents: int = 4
    """Agent slots A in a batch; samples with more agents keep the first max_agents."""
    taxonomy: str = "v2xpnp"
    """Built-in class taxonomy (``trainer.data.taxonomy.TAXONOMIES``: ``v2xpnp``, ``v2x-real``, ``opv2v``) that
    gives ``classes`` and ``drop_obj_types``, or ``custom`` to give them by hand."""
    classes: Optional[list[ClassGroup]] = None
    """Training classes (index = position) and the object types grouped into each; None: the taxonomy's
    (any other value needs ``taxonomy=custom`` unless it equals the taxonomy's)."""
    drop_obj_types: Optional[list[str]] = None
    """Object types dropped on purpose (``"*"``: every type no class groups); a type neither grouped nor
    dropped is an error. None: the taxonomy's."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_agents", "samples_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("num_workers and shuffle_buffer must be >= 0")
        if self.val_samples is not None and self.val_samples < 1:
            raise ValueError(f"val_samples must be >= 1 or None, got {self.val_samples}")
        self._resolve_taxonomy()
        if not self.classes:
            raise ValueError("classes must name at least one training class")
        seen: dict[str, str] = {}
        for group in self.classes:
            for t in group.obj_types:
                if t in seen:
                    raise ValueError(f"classes: object type {t!r} is in both {seen[t]!r} and {group.name!r}")
                seen[t] = group.name
        both = sorted(set(seen) & set(self.drop_obj_types))
        if both:
            raise ValueError(f"drop_obj_types {both} are also grouped into classes")

    def _resolve_taxonomy(self) -> None:
        """Fill ``classes`` / ``drop_obj_types`` from ``taxonomy``; given ones must agree unless it is custom."""
        if self.taxonomy == CUSTOM:
            if self.classes is None:
                raise ValueError("data.taxonomy=custom needs data.classes (and data.drop_obj_types, default none)")
            self.drop_obj_types = list(self.drop_obj_types or [])
            return
        try:
            classes, drop = taxonomy_groups(self.taxonomy)
        except ValueError as err:
            raise ValueError(f"data.taxonomy: {err}, or {CUSTOM}") from err
        for key, given, built_in in (("classes", self.classes, classes), ("drop_obj_types", self.drop_obj_types, drop)):
            if given is not None and _plain(given) != _plain(built_in):
                raise ValueError(f"data.{key} differs from taxonomy {self.taxonomy!r}'s; set data.taxonomy={CUSTOM} "
                                 f"to group object types yourself, or leave data.{key} out")
        self.classes, self.drop_obj_types = classes, drop


def _plain(value: list) -> list:
    """Class groups / type lists as comparable plain lists of normalised names."""
    return [(g.name, [normalise_obj_type(t) for t in g.obj_types]) if isinstance(g, ClassGroup)
            else normalise_obj_type(g) if g != DROP_ALL_OTHERS else g for g in value]
