"""The prepared GPU check runs its encoder comparison end to end on the CPU (CPU against CPU), and refuses
to run without CUDA."""

import subprocess
import sys

import pytest
import torch

from bench.gpu_check import REPO, check_spconv


def test_encoder_comparison_runs_on_a_real_batch(tmp_path):
    report = check_spconv(tmp_path, size="tiny", device="cpu")
    assert report.startswith("output rel. err 0.0e+00, worst gradient rel. err 0.0e+00"), report


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_the_check_exits_2():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "needs a GPU" in done.stderr
