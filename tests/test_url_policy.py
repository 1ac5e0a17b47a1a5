"""Shard URLs that would run a command (``pipe:``, ``https:``, ``gs:``, ...) are refused without the command
line's ``--allow-command-urls``, and always when they come from a run's saved ``config.yaml``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.test_launch_checkpoint_io import _engine_folder, launch_module
from trainer.config_io import load_config, to_yaml
from trainer.data import url_policy
from trainer.data.preflight import PreflightError, preflight
from trainer.data.tar_read import shard_records
from trainer.data.url_policy import (CommandURLError, check_shard_urls, command_url_scheme,
                                     command_urls_permitted)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "turbotrain.yaml"


@pytest.fixture(autouse=True)
def no_opt_in():
    """Every test starts, and leaves the process, without the opt-in."""
    url_policy.allow_command_urls(False)
    yield
    url_policy.allow_command_urls(False)


def touch_then_cat(marker: Path, shard: str) -> str:
    """A ``pipe:`` URL that creates ``marker`` (proof the command ran), then streams ``shard``."""
    return f"pipe:touch {shlex.quote(str(marker))} && cat {shlex.quote(shard)}"


@pytest.mark.parametrize("url, scheme", [
    ("shards/train-000000.tar", None), ("/data/v2x/val-000001.tar", None), ("file:///data/val-000000.tar", None),
    ("pipe:curl -s https://h/x.tar", "pipe"), ("https://host/x.tar", "https"), ("http://host/x.tar", "http"),
    ("gs://bucket/x.tar", "gs"), ("s3://bucket/x.tar", "s3"), ("scp://host/x.tar", "scp"), ("hf://org/x.tar", "hf"),
    ("-", "-"),
])
def test_only_local_files_are_not_commands(url, scheme):
    assert command_url_scheme(url) == scheme
    if scheme is None:
        check_shard_urls([url], what="data.val_shards", allow_commands=False)
    else:
        with pytest.raises(CommandURLError, match=f"data.val_shards: refusing to open {re.escape(repr(url))}.*--allow-command-urls"):
            check_shard_urls([url], what="data.val_shards", allow_commands=False)
    check_shard_urls([url], what="data.val_shards", allow_commands=True)


@pytest.mark.parametrize("opted_in, config_file, overrides, permitted", [
    (False, None, ["data.val_shards=pipe:cat x"], False),              # no opt-in: never
    (True, None, [], True),                                            # the default recipe
    (True, "recipes/my.yaml", [], True),                               # a recipe the user names
    (True, "runs/r/config.yaml", [], False),                           # a saved run config: never
    (True, "runs/r/config.yaml", ["data.val_shards=pipe:cat x"], True),  # ... unless given on the command line
    (True, "runs/r/config.yaml", ["data.train_shards=pipe:cat x"], False),  # another key does not count
])
def test_command_urls_permitted(opted_in, config_file, overrides, permitted):
    assert command_urls_permitted("data.val_shards", opted_in=opted_in, config_file=config_file,
                                  overrides=overrides) is permitted


def test_the_shard_opener_refuses_without_the_opt_in(tiny_data, tmp_path):
    """The last guard, where webdataset's opener would run the command: refused even with a forgiving handler."""
    marker = tmp_path / "marker"
    url = touch_then_cat(marker, tiny_data[1])
    with pytest.raises(CommandURLError, match="refusing to open"):
        list(shard_records([{"url": url}], handler=lambda exn: True))
    assert not marker.exists()
    url_policy.allow_command_urls(True)
    assert list(shard_records([{"url": url}], handler=lambda exn: False))
    assert marker.exists()


def test_preflight_refuses_unless_the_spec_is_opted_in(tiny_data, tmp_path):
    preflight(load_config(RECIPE, [f"data.train_shards=file://{tiny_data[0]}", f"data.val_shards={tiny_data[1]}"]))
    marker = tmp_path / "marker"
    cfg = load_config(RECIPE, [f"data.train_shards={tiny_data[0]}", f"data.val_shards={touch_then_cat(marker, tiny_data[1])}"])
    with pytest.raises(PreflightError, match="data.val_shards: refusing to open 'pipe:touch"):
        preflight(cfg)
    preflight(cfg, command_urls=frozenset({"data.val_shards"}))  # not opened here either
    assert not marker.exists()


def test_train_cli_refuses_a_pipe_url_without_the_flag(tiny_data, tmp_path, capsys):
    from launch.train import main

    marker = tmp_path / "marker"
    code = main([f"data.train_shards={touch_then_cat(marker, tiny_data[0])}", f"data.val_shards={tiny_data[1]}",
                 f"run.dir={tmp_path / 'run'}"])
    assert code == 2 and "data.train_shards: refusing to open 'pipe:touch" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.fixture
def run_with_pipe_config(tmp_path, tiny_data) -> tuple[Path, Path]:
    """A run directory whose saved ``config.yaml`` names a ``pipe:`` val shard, with an engine checkpoint."""
    from models.v2x_model import V2XModel

    marker = tmp_path / "marker"
    cfg = load_config(RECIPE, ["model.encoder=pillars", "data.num_workers=0",
                               f"data.val_shards={touch_then_cat(marker, tiny_data[1])}"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    _engine_folder(run / "finetune", "step_000001", V2XModel(cfg.model).state_dict())
    return run, marker


def test_evaluate_refuses_a_pipe_url_from_a_saved_config_even_with_the_flag(run_with_pipe_config, capsys):
    run, marker = run_with_pipe_config
    evaluate = launch_module("evaluate").main
    for extra in ([], ["--allow-command-urls"]):
        assert evaluate(["--checkpoint", str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert "data.val_shards: refusing to open 'pipe:touch" in err and str(marker) in err
    assert not marker.exists()
    visualize = launch_module("visualize").main
    assert visualize(["--checkpoint", str(run), "--allow-command-urls", "--out-dir", str(run.parent / "viz")]) == 2
    assert "refusing to open 'pipe:touch" in capsys.readouterr().err
    assert not marker.exists()


def test_evaluate_opens_a_pipe_url_given_on_the_command_line_with_the_flag(run_with_pipe_config, tiny_data, capsys):
    run, _ = run_with_pipe_config
    marker = run.parent / "opted-in"
    evaluate = launch_module("evaluate").main
    data = ["--data", touch_then_cat(marker, tiny_data[1])]
    assert evaluate(["--checkpoint", str(run), *data]) == 2
    assert not marker.exists()
    assert evaluate(["--checkpoint", str(run), *data, "--allow-command-urls", "--max-batches", "1"]) == 0
    assert marker.exists() and "num_frames=" in capsys.readouterr().out
