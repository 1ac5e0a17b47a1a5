"""Generate a whole synthetic dataset (one folder per scenario) with a progress bar."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from trainer.data.synth.config import SynthConfig
from trainer.data.synth.scenario import simulate_scenario


def generate_dataset(cfg: SynthConfig, out_dir: Path, *, progress: bool = True) -> list[Path]:
    """Write ``cfg.num_scenarios`` scenarios under ``out_dir`` in the OpenCOOD layout; returns their folders.

    Scenario k depends only on (``cfg.seed``, k), so a dataset of N scenarios is a prefix of one of N + 1.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = []
    with tqdm(total=cfg.num_scenarios * cfg.num_frames, unit="frame", desc="synth", disable=not progress) as bar:
        for index in range(cfg.num_scenarios):
            folders.append(simulate_scenario(cfg, index, out_dir, on_frame=lambda: bar.update(1)))
    return folders
