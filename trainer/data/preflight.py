"""Checks of the inputs before any process group or model exists: fail fast, with the reason."""

from __future__ import annotations

import json
import tarfile

from trainer.config import TrainConfig
from trainer.data.sample import SCHEMA_VERSION
from trainer.data.url_policy import check_shard_spec, command_url_scheme, local_path


class PreflightError(ValueError):
    """An input that would make training fail later (or silently train on nothing)."""


def _check_shards(spec: str, what: str, *, allow_commands: bool) -> None:
    try:
        urls = check_shard_spec(spec, what=what, allow_commands=allow_commands)
    except ValueError as err:  # CommandURLError, or a spec naming no shard
        raise PreflightError(str(err)) from err
    if not urls:
        raise PreflightError(f"{what} matches no shard: {spec!r}")
    for url in urls:
        if command_url_scheme(url) is not None:  # opted in: opening it would run the command now
            continue
        try:
            with tarfile.open(local_path(url)) as tar:
                member = next((m for m in tar if m.name.endswith(".meta.json")), None)
                if member is None:
                    raise PreflightError(f"{what}: shard {url} holds no sample (empty or not a TurboTrain shard)")
                meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
        except FileNotFoundError as err:
            raise PreflightError(f"{what}: shard {url} does not exist") from err
        except (tarfile.TarError, OSError) as err:
            raise PreflightError(f"{what}: shard {url} is unreadable: {err}") from err
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise PreflightError(f"{what}: shard {url} has schema version {meta.get('schema_version')!r}, this "
                                 f"TurboTrain reads version {SCHEMA_VERSION}; re-convert it with trainer.data.convert")


def shard_specs(cfg: TrainConfig) -> list[tuple[str, str]]:
    """Every shard spec of the config that is set, with its key: ``data.train_shards``, ``data.val_shards`` and
    each ``stages.<name>.train_shards``."""
    specs = [(cfg.data.train_shards, "data.train_shards"), (cfg.data.val_shards, "data.val_shards")]
    specs += [(stage.train_shards, f"stages.{name}.train_shards") for name, stage in cfg.stages.items()]
    return [(spec, key) for spec, key in specs if spec]


def preflight(cfg: TrainConfig, *, command_urls: frozenset[str] = frozenset()) -> None:
    """Shards exist, are non-empty and of our schema version; the DeepSpeed JSON exists.

    Shard URLs that would run a command are refused except in the specs named in ``command_urls``
    (keys of ``shard_specs``, opted in on the command line; see
    ``trainer.data.url_policy``); those are not opened here.
    """
    for spec, what in shard_specs(cfg):
        _check_shards(spec, what, allow_commands=what in command_urls)
    for spec, what in ((cfg.data.train_shards, "data.train_shards"), (cfg.data.val_shards, "data.val_shards")):
        if not spec and not cfg.synthetic.enabled:
            raise PreflightError(f"{what} is empty and synthetic.enabled=false: nothing to train on")
    if cfg.distributed.engine == "deepspeed":
        try:
            cfg.distributed.deepspeed_config_path()
        except FileNotFoundError as err:
            raise PreflightError(str(err)) from err
