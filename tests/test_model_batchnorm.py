"""Batch norm that is right for short runs: eval-mode statistics catch up with the data within tens of steps."""

import pytest
import torch

from models.encoder_common import BN_MOMENTUM, Fp32BatchNorm


@pytest.mark.parametrize("layout", ["points", "maps"])
def test_running_statistics_track_the_data_within_fifty_steps(layout):
    torch.manual_seed(0)
    bn = Fp32BatchNorm(4)
    mean, std = torch.tensor([3.0, -2.0, 0.5, 10.0]), torch.tensor([2.0, 0.5, 1.0, 4.0])
    for _ in range(50):
        x = torch.randn(512, 4) * std + mean
        bn(x if layout == "points" else x.view(8, 64, 4).permute(0, 2, 1)[..., None])
    # at momentum 0.01 (OpenPCDet's) 61% of the initial (0, 1) statistics would remain after 50 steps
    assert torch.allclose(bn.running_mean, mean, rtol=0.02, atol=0.02), bn.running_mean
    assert torch.allclose(bn.running_var, std ** 2, rtol=0.05), bn.running_var
    bn.eval()
    y = bn(torch.randn(4096, 4) * std + mean)
    assert torch.allclose(y.mean(0), torch.zeros(4), atol=0.05) and torch.allclose(y.std(0), torch.ones(4), atol=0.05)


def test_default_momentum_is_short_run_safe():
    assert 0.05 <= BN_MOMENTUM <= 0.2
    assert Fp32BatchNorm(2).momentum == BN_MOMENTUM
