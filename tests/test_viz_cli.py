"""launch/visualize.py: curves of a run, ground-truth pictures of converted shards."""

import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_viz_curves import write_run

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def visualize():
    sys.path.insert(0, str(REPO_ROOT / "launch"))
    try:
        import visualize as module
    finally:
        sys.path.remove(str(REPO_ROOT / "launch"))
    return module


def test_cli_plots_a_run(visualize, tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert visualize.main(["--run", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file() and str(tmp_path / "c.png") in capsys.readouterr().out
    with pytest.raises(SystemExit):
        visualize.main([])  # --run or --data is required
    with pytest.raises(SystemExit):
        visualize.main(["--run", str(run), "--data", "x.tar"])  # not both


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:skipping corrupt data:RuntimeWarning")  # the missing shard
def test_cli_draws_ground_truth_of_converted_shards(visualize, tmp_path, capsys):
    from trainer.data.config import ConvertConfig
    from trainer.data.convert import convert
    from tests.opencood_fixtures import write_toy_scenario

    write_toy_scenario(tmp_path / "src" / "scn0", frames=60, points_per_frame=300)
    summary = convert(tmp_path / "src", str(tmp_path / "val-%06d.tar"), ConvertConfig(), progress=False)
    assert summary.samples >= 2
    out_dir = tmp_path / "viz"
    assert visualize.main(["--data", summary.shards[0], "--out-dir", str(out_dir), "--num-samples", "2", "--gif",
                           "--pixels-per-metre", "2"]) == 0
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 2 and all(p.name.startswith("scn0__") for p in pngs)
    width, height = Image.open(pngs[0]).size
    assert width > 50 and height > 50
    assert Image.open(out_dir / "samples.gif").n_frames == 2
    assert visualize.main(["--data", str(tmp_path / "missing-000000.tar"), "--out-dir", str(out_dir)]) == 1
    assert "no samples" in capsys.readouterr().err
