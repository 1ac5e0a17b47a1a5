"""A plain (non-editable) install: the wheel ships the recipes and DeepSpeed configs and installs the
``turbotrain-*`` commands, which work outside the source tree.

The wheel is built without build isolation and installed with ``--no-deps`` into a folder that is put first
on the path of a subprocess started in an empty directory, so the checkout cannot be what it imports; the
dependencies are this environment's. (A full ``pip install .`` into a fresh virtual environment, the README's
*Installing*, was checked by hand.)
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "convert", "evaluate", "predict", "visualize", "export")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("turbotrain-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=120)
    return root


def run_in_empty_dir(root: Path, *args: str) -> subprocess.CompletedProcess:
    (root / "cwd").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root / "site")}
    return subprocess.run(list(args), cwd=root / "cwd", env=env, capture_output=True, text=True, timeout=300)


def test_wheel_ships_the_configs_and_the_commands(installed):
    site = installed / "site"
    assert sorted(p.name for p in (site / "trainer" / "recipes").iterdir()) == sorted(
        p.name for p in (REPO / "recipes").iterdir())
    assert {p.name for p in (site / "trainer" / "ds_configs").iterdir()} == {p.name for p in (REPO / "ds_configs").iterdir()}
    assert not (site / "trainer" / "recipes").is_symlink()
    assert list(site.glob("trainer/data/_voxel*.so"))
    entry_points = next(site.glob("turbotrain-*.dist-info")).joinpath("entry_points.txt").read_text()
    for name in COMMANDS:
        assert f"turbotrain-{name} = " in entry_points
        assert (site / "bin" / f"turbotrain-{name}").is_file()


def test_installed_package_runs_outside_the_source_tree(installed):
    probe = ("import trainer, launch.predict; from trainer.config_io import load_config; "
             "cfg = load_config('recipes/multitask.yaml', ['distributed.deepspeed_config=ds_configs/zero3.json']); "
             "print(trainer.__file__); print(cfg.distributed.deepspeed_config_path()); print(list(load_config(None).stages))")
    result = run_in_empty_dir(installed, sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(str(installed / "site")) and lines[1].startswith(str(installed / "site"))
    assert lines[2] == "['pretrain', 'finetune']"
    for name in ("convert", "predict", "train"):
        out = run_in_empty_dir(installed, str(installed / "site" / "bin" / f"turbotrain-{name}"), "--help")
        assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
    bad = run_in_empty_dir(installed, str(installed / "site" / "bin" / "turbotrain-convert"), "--src", "nowhere",
                           "--out", "x-%06d.tar")
    assert bad.returncode == 2 and "nowhere" in bad.stderr
