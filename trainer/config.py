"""The training configuration: typed dataclasses, loaded from YAML recipes plus ``a.b=value`` overrides.

A recipe (``recipes/*.yaml``) sets any of the fields below; ``stages`` is an ordered mapping of
named stages run one after another (stage 1 pretraining, then stage 2 fine-tuning, ...). Loading
goes through OmegaConf structured configs, so unknown keys and wrong types are errors that name
the key, and every dataclass validates itself in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from models.config import MODEL_SIZES, ModelConfig, model_config
from trainer.balancer.config import BalancingConfig
from trainer.balancer.strategies import BALANCINGS
from trainer.data.config import DataConfig
from trainer.eval.config import EvalConfig
from trainer.engine.faults import FaultConfig
from trainer.engine.stage_end import MODES, default_mode
from trainer.losses.config import TaskLossConfig
from trainer.pretrain.config import PretrainConfig
from trainer.resources import resolve_shipped
from trainer.data.synth.dataset import SyntheticDataConfig
from trainer.tasks.registry import TASKS

PRECISIONS = ("bf16", "fp16", "fp32")
ENGINES = ("deepspeed", "plain")


@dataclass(kw_only=True)
class RunConfig:
    """Where a run lives and how it starts."""

    output_root: str = "runs"
    """Parent folder of new run directories."""
    name: str = "turbotrain"
    """Run name; a new run directory is ``<output_root>/<name>-<UTC time>`` (chosen by rank 0)."""
    dir: str = ""
    """Explicit run directory (reused as is: set it to resume or requeue a run). Empty = new one."""
    resume: str = "auto"
    """``auto``: continue from the newest complete checkpoint in ``dir`` if any; ``never``: refuse a
    non-empty ``dir``."""
    seed: int = 0
    """Seed of model init, data order, augmentation and masking."""
    allow_config_change: bool = False
    """Resume a run directory even when the config differs from its ``config.yaml`` (the differences are
    printed either way; without this flag they stop the run before training)."""

    def __post_init__(self) -> None:
        if self.resume not in ("auto", "never"):
            raise ValueError(f"run.resume must be 'auto' or 'never', got {self.resume!r}")
        if not self.name or "/" in self.name:
            raise ValueError(f"run.name must be a non-empty folder name, got {self.name!r}")


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = 2e-3
    """Peak learning rate."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas."""
    warmup_steps: int = 10
    """Linear warm-up (optimizer steps)."""
    min_lr_ratio: float = 0.05
    """Final learning rate as a fraction of ``lr``."""
    grad_clip: float = 10.0
    """Global gradient-norm clip (0 disables)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (DeepSpeed ``gradient_accumulation_steps``)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0 or self.grad_accum_steps < 1 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("optim.warmup_steps, grad_clip, weight_decay must be >= 0 and grad_accum_steps >= 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(kw_only=True)
class DistributedConfig:
    """The engine: DeepSpeed ZeRO through Accelerate, or plain PyTorch (DDP when several processes)."""

    engine: str = "deepspeed"
    """``deepspeed`` (ZeRO via Accelerate) or ``plain`` (Accelerate without DeepSpeed)."""
    deepspeed_config: str = "ds_configs/zero2.json"
    """DeepSpeed JSON (a relative path resolves against the working directory, then the shipped
    ``ds_configs/``: ``trainer.resources``)."""
    zero_stage: Optional[int] = None
    """Override of the JSON's ZeRO stage (0-3); None keeps the file's."""
    timeout_s: int = 1800
    """Collective timeout of the process group."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"distributed.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"distributed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.timeout_s < 1:
            raise ValueError("distributed.timeout_s must be >= 1")

    def deepspeed_config_path(self) -> Path:
        path = resolve_shipped(self.deepspeed_config)
        if path.is_file():
            return path
        raise FileNotFoundError(f"distributed.deepspeed_config: no such file {self.deepspeed_config!r}")


@dataclass(kw_only=True)
class LoopConfig:
    """Logging, evaluation and checkpoint cadence, and failure handling."""

    log_every: int = 5
    """Optimizer steps between log lines / metrics.jsonl records."""
    eval_every: int = 0
    """Optimizer steps between periodic evaluations (0 = only at the end of a stage)."""
    eval_batches: int = 0
    """Validation batches per rank per evaluation (0 = the whole validation split)."""
    checkpoint_every: int = 50
    """Optimizer steps between checkpoints (a stage's last step is always saved)."""
    keep_last: int = 2
    """Checkpoints kept per stage (older ones are deleted after a newer one is complete)."""
    max_nonfinite_in_row: int = 5
    """Consecutive steps with a NaN/inf loss on any rank (skipped on all ranks) before training stops."""
    stall_timeout_s: float = 600.0
    """Seconds the loop waits for one training batch before it declares the data loader stalled and stops
    (exit 2; a checkpoint is saved when one process runs). A warning is printed at a quarter of it. 0: wait
    forever."""
    stop_grace_s: float = 120.0
    """After a stop signal (SIGTERM, SIGUSR1, SIGINT), seconds allowed to reach a step boundary and save a
    checkpoint before the process exits anyway (code 75; the last complete checkpoint stands). 0: no limit."""
    tensorboard: bool = True
    """Log through Accelerate's TensorBoard tracker (``<run>/tb``)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``pip install wandb``)."""
    wandb_project: str = "turbotrain"
    """W&B project every run of this config logs to (each run is one W&B run, named after its directory)."""
    wandb_entity: str = ""
    """W&B entity (team or user) of the project; empty: W&B's default entity."""
    progress_bar: bool = True
    """tqdm progress bar on the main process."""
    pictures: int = 4
    """At the end of a run, write ``curves.png`` and BEV pictures of this many validation samples with the
    final model's predictions into the run directory (0: neither)."""

    def __post_init__(self) -> None:
        for name in ("log_every", "checkpoint_every", "keep_last", "max_nonfinite_in_row"):
            if getattr(self, name) < 1:
                raise ValueError(f"loop.{name} must be >= 1, got {getattr(self, name)}")
        if self.wandb and not self.wandb_project:
            raise ValueError("loop.wandb_project must be non-empty when loop.wandb is on")
        if self.eval_every < 0 or self.eval_batches < 0 or self.pictures < 0:
            raise ValueError("loop.eval_every, loop.eval_batches and loop.pictures must be >= 0")
        if self.stall_timeout_s < 0 or self.stop_grace_s < 0:
            raise ValueError("loop.stall_timeout_s and loop.stop_grace_s must be >= 0")


def wandb_init_kwargs(loop: LoopConfig, run_dir: Path) -> dict[str, Any] | None:
    """``wandb.init`` arguments of a run (project, entity, run name), or None when W&B is off."""
    if not loop.wandb:
        return None
    kwargs: dict[str, Any] = {"project": loop.wandb_project, "name": run_dir.name}
    if loop.wandb_entity:
        kwargs["entity"] = loop.wandb_entity
    return kwargs


@dataclass(kw_only=True)
class UntilConfig:
    """End a stage early when a validation metric stops improving (``stages.<name>.until``).

    Every ``eval_every`` steps the stage is evaluated (the same evaluation as ``loop.eval_every``'s, and
    logged the same way) and :class:`trainer.engine.stage_end.PlateauRule` is fed ``metric``; the stage's
    ``steps`` stay its cap. The learning-rate schedule is still the warm-up + cosine over ``steps``: a stage
    that stops early stops wherever that schedule is (it is not compressed). An early stop takes the stage's
    normal end: a checkpoint at the stop step, the final evaluation, the export, ``final.json``.
    """

    metric: str = "AP@0.5"
    """A validation metric of the stage's task (``trainer.tasks.TASKS[task].metrics``). A supervised stage's:
    ``AP@<t>``, ``AP@<t>/<class>`` for the ``eval.iou_thresholds`` and classes, ``minADE``, ``minFDE``, ``MR``,
    ``EPA``, ``EPA/<class>``; a ``pretrain`` stage's: ``recon``, the masked Chamfer L1 of its reconstruction on
    the validation split (the same masks at every evaluation). An evaluation that cannot give the metric (a
    class without ground truth in the split) counts as a NaN: no improvement."""
    also: list[str] = field(default_factory=list)
    """Further metrics watched (the same kind of names as ``metric``, each in its default mode): the stage goes
    on while any watched metric improves, e.g. ``metric: EPA`` with ``also: [AP@0.5]`` for a detection +
    prediction stage. ``best`` in the logs is ``metric``'s."""
    mode: str = "auto"
    """``max`` (higher is better) or ``min``; ``auto``: ``min`` for minADE, minFDE, MR and recon, else ``max``."""
    patience: int = 3
    """Evaluations in a row without improvement after which the stage ends."""
    min_delta: float = 0.0
    """Improvement over the best value needed to count as one (NaN values never improve)."""
    eval_every: int = 50
    """Optimizer steps between the plateau evaluations (at most the stage's ``steps``)."""

    def __post_init__(self) -> None:
        if self.mode == "auto":
            self.mode = default_mode(self.metric)
        if self.mode not in MODES:
            raise ValueError(f"until.mode must be auto or one of {MODES}, got {self.mode!r}")
        if self.patience < 1 or self.eval_every < 1:
            raise ValueError(f"until.patience and until.eval_every must be >= 1, got {self.patience} and "
                             f"{self.eval_every}")
        if not self.min_delta >= 0:
            raise ValueError(f"until.min_delta must be >= 0, got {self.min_delta}")


@dataclass(kw_only=True)
class StageConfig:
    """One training stage of a recipe."""

    task: str = "multitask"
    """A key of ``trainer.tasks.TASKS``: ``pretrain`` (masked reconstruction), ``multitask`` (detection +
    prediction, balanced by ``balancing.method``), ``detection`` or ``prediction`` (one task head)."""
    steps: int = 100
    """Optimizer steps of this stage."""
    lr: Optional[float] = None
    """Peak learning rate of this stage (None = optim.lr)."""
    init_from: str = ""
    """Weights to start from: ``""`` (fresh), ``previous`` (the previous stage's exported weights) or a
    path to exported weights (``*.safetensors``, or a ``*.pt`` of an earlier version, loaded with
    ``weights_only=True``). This is initialisation, not resuming."""
    freeze: list[str] = field(default_factory=list)
    """Module-name prefixes of the model frozen in this stage (e.g. ``encoder``, ``det_head``)."""
    single_agent: bool = False
    """Train on the ego agent only (collaborators masked out), as the manual pipeline's early stages do."""
    temporal_fusion: bool = True
    """Use the temporal fusion (False: the current frame only, history ignored)."""
    spatial_fusion: bool = True
    """Use multi-agent spatial fusion (False: the module is bypassed)."""
    history_grad: bool = True
    """Back-propagate into the LiDAR encoder through the history frames (False: they are encoded without
    gradient, as BEVFormer encodes its previous BEV, and only the current frame trains the encoder; the
    temporal fusion still trains on every frame). False saves most of the sparse encoder's backward pass but
    trains worse at equal steps (docs/RESULTS.md section 0.2, row Q)."""
    det_weight: float = 1.0
    """Weight of the detection loss."""
    pred_weight: float = 1.0
    """Weight of the prediction loss."""
    evaluate: bool = True
    """Evaluate detection / prediction on the validation split at the end of the stage."""
    train_shards: str = ""
    """This stage's training shards (a brace pattern / list, as ``data.train_shards``); empty: the run's. A stage
    can so train on other data than the rest: pretraining on every scenario, fine-tuning on the labelled share
    (the validation split stays the run's)."""
    init_skip: list[str] = field(default_factory=lambda: ["recon_head"])
    """Module prefixes NOT loaded by ``init_from`` (the stage-1 decoder is discarded by default)."""
    until: Optional[UntilConfig] = None
    """End the stage on a plateau of a validation metric (``steps`` is then the cap); None: run ``steps``."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"stage.task must be one of {tuple(TASKS)}, got {self.task!r}")
        if self.steps < 1:
            raise ValueError(f"stage.steps must be >= 1, got {self.steps}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"stage.lr must be > 0, got {self.lr}")
        if self.det_weight < 0 or self.pred_weight < 0:
            raise ValueError("stage.det_weight and stage.pred_weight must be >= 0")
        if self.until is not None:
            if not self.evaluate:
                raise ValueError("stage.until needs stage.evaluate=true (the plateau watches its evaluation)")
            if self.until.eval_every > self.steps:
                raise ValueError(f"stage.until.eval_every ({self.until.eval_every}) must be <= stage.steps "
                                 f"({self.steps})")


@dataclass(kw_only=True)
class TrainConfig:
    """Everything one ``launch/train.py`` run needs."""

    model_size: str = "tiny"
    """Preset the ``model`` section starts from: tiny, small, base or large."""
    precision: str = "auto"
    """``auto`` (default: bf16 where CUDA is available, fp32 on the CPU), bf16, fp16 (GPU; dynamic loss
    scaling) or fp32. On the CPU, DeepSpeed's bf16 casts the model's weights to bf16, and it is slower
    than fp32 there and trains worse (docs/RESULTS.md), so ``auto`` picks fp32."""
    run: RunConfig = field(default_factory=RunConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    model: ModelConfig = field(default_factory=lambda: model_config("tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    balancing: BalancingConfig = field(default_factory=BalancingConfig)
    loss: TaskLossConfig = field(default_factory=TaskLossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)
    """Ordered stages; a recipe names them (``stages.pretrain.steps=200`` overrides one field)."""

    def __post_init__(self) -> None:
        if self.model_size not in MODEL_SIZES:
            raise ValueError(f"model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if self.precision == "auto":
            self.precision = "bf16" if torch.cuda.is_available() else "fp32"
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {self.precision!r}")
        if not self.stages:
            raise ValueError("stages is empty: a recipe must define at least one stage")
        # data.classes is the one statement of the classes: the heatmap channels and the evaluation's
        # names follow from it (load_config rejects a recipe or override that states them otherwise)
        self.model = replace(self.model, num_classes=len(self.data.classes))
        self.eval = replace(self.eval, class_names=[group.name for group in self.data.classes])
        names = list(self.stages)
        for name, stage in self.stages.items():
            metrics = TASKS[stage.task].metrics(self.eval)
            for watched in ([stage.until.metric, *stage.until.also] if stage.until is not None else []):
                if watched not in metrics:
                    raise ValueError(f"stages.{name}.until: {watched!r} is not a validation metric of task "
                                     f"{stage.task!r}; one of {', '.join(metrics)}")
        if self.stages[names[0]].init_from == "previous":
            raise ValueError(f"stages.{names[0]}.init_from is 'previous' but it is the first stage")
        why = BALANCINGS[self.balancing.method].plain_engine_only
        if why and self.distributed.engine != "plain":
            raise ValueError(f"balancing.method={self.balancing.method} needs distributed.engine=plain (one "
                             f"process, no ZeRO): {why}")
