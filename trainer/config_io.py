"""Load a ``TrainConfig`` from a YAML recipe plus ``a.b=value`` overrides, and write it back.

Every failure is a ``ConfigError`` whose message names the file or the key at fault.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.config import MODEL_SIZES, model_config
from trainer.config import TrainConfig
from trainer.resources import DEFAULT_RECIPE, resolve_shipped


class ConfigError(ValueError):
    """A recipe or override that cannot become a valid TrainConfig."""


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        # yaml.safe_load first: its errors carry line/column; OmegaConf's do not.
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML in {path}: {err}") from err
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {type(content).__name__}")
    return OmegaConf.create(content)


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"override {item!r} is not of the form a.b=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad override: {err}") from err


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"key '{key}': {first_line}" if key else first_line


def check_stage_overrides(recipe: DictConfig, cli: DictConfig) -> None:
    """An override may only name a stage the recipe declares, unless it adds one explicitly by giving its
    task (``stages.NAME.task=...``): a misspelt stage would otherwise train as a new stage from fresh weights."""
    declared = list(recipe.get("stages") or {})
    for name, fields in (cli.get("stages") or {}).items():
        if name in declared or (isinstance(fields, DictConfig) and "task" in fields):
            continue
        close = difflib.get_close_matches(str(name), declared, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"override names stage '{name}', which the recipe does not declare (its stages: "
                          f"{', '.join(declared) or 'none'}); {hint}to add a stage, give its task: "
                          f"stages.{name}.task=<pretrain|detection|prediction|multitask>")


DERIVED_FROM_CLASSES = ("model.num_classes", "eval.class_names")
"""Keys that follow from ``data.classes``; a recipe or override may only restate them unchanged."""


def check_derived_keys(stated: DictConfig, merged: DictConfig) -> None:
    """Raise ConfigError where ``stated`` (recipe + overrides) gives a derived key a value that contradicts
    ``data.classes`` of ``merged`` (a saved run config restates them, equal, and loads)."""
    names = [group.name for group in OmegaConf.to_object(merged.data).classes]  # as data.taxonomy resolves them
    derived = {"model.num_classes": len(names), "eval.class_names": names}
    for key in DERIVED_FROM_CLASSES:
        value = OmegaConf.select(stated, key, default=None)
        if value is None:
            continue
        plain = OmegaConf.to_object(value) if isinstance(value, (DictConfig, ListConfig)) else value
        if plain != derived[key]:
            raise ConfigError(f"key '{key}': derived from data.classes ({', '.join(names)}), so it is "
                              f"{derived[key]}, not {plain}; change data.classes instead")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The validated config of recipe ``path`` (default: the TurboTrain recipe) with ``overrides``."""
    recipe = _read_yaml(resolve_shipped(path) if path else DEFAULT_RECIPE)
    cli = _parse_overrides(overrides)
    check_stage_overrides(recipe, cli)
    size = OmegaConf.select(OmegaConf.merge(recipe, cli), "model_size", default="tiny")
    if size not in MODEL_SIZES:
        raise ConfigError(f"key 'model_size': must be one of {MODEL_SIZES}, got {size!r}")
    try:
        schema = OmegaConf.structured(TrainConfig)
        schema.model = OmegaConf.structured(model_config(size))
        schema.data.classes = schema.data.drop_obj_types = None  # from data.taxonomy unless stated
        merged = OmegaConf.merge(schema, recipe, cli)
        check_derived_keys(OmegaConf.merge(recipe, cli), merged)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err)) from err
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err
    assert isinstance(cfg, TrainConfig)
    return cfg


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (loadable again with ``load_config``)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
