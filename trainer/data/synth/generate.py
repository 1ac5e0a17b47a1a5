"""Generate a whole synthetic dataset (one folder per scenario) with a progress bar, on several processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from trainer.data.synth.config import SynthConfig
from trainer.data.synth.scenario import simulate_scenario


def generate_dataset(cfg: SynthConfig, out_dir: Path, *, progress: bool = True, workers: int = 1) -> list[Path]:
    """Write ``cfg.num_scenarios`` scenarios under ``out_dir`` in the OpenCOOD layout; returns their folders.

    Scenario k depends only on (``cfg.seed``, k), so a dataset of N scenarios is a prefix of one of N + 1,
    and ``workers`` processes (one scenario at a time each) write exactly the files one does. The workers are
    forked where the platform can (they run numpy only, so a parent's torch threads do not matter, and the
    caller's ``__main__`` need not be importable), else spawned.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=cfg.num_scenarios * cfg.num_frames, unit="frame", desc="synth", disable=not progress) as bar:
        if workers == 1 or cfg.num_scenarios == 1:
            return [simulate_scenario(cfg, index, out_dir, on_frame=lambda: bar.update(1))
                    for index in range(cfg.num_scenarios)]
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(min(workers, cfg.num_scenarios), mp_context=context) as pool:
            futures = [pool.submit(simulate_scenario, cfg, index, out_dir) for index in range(cfg.num_scenarios)]
            folders = []
            for future in futures:
                folders.append(future.result())
                bar.update(cfg.num_frames)
        return folders
