"""The pure combination rules of models.balancer against hand-built gradient pairs."""

from __future__ import annotations

import pytest
import torch

from models.balancer import BalancerConfig, combine, mgda, pair_moments, pcgrad, sum_rule
from models.balancer.stats import stats_from_moments

RULES = ["sum", "pcgrad", "mgda"]
GRANULARITIES = ["sample", "cell", "batch"]


def vec(*values: float) -> torch.Tensor:
    """A one-sample gradient [1, C, 1, 1] holding ``values`` in its channels."""
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)


E1, E2 = vec(1.0, 0.0), vec(0.0, 1.0)


@pytest.mark.parametrize(
    "g1, g2, expected",
    [
        (vec(1.0, 2.0), vec(2.0, 4.0), vec(3.0, 6.0)),  # parallel: untouched
        (E1, E2, vec(1.0, 1.0)),  # orthogonal: untouched
        (vec(1.0, 2.0), vec(-2.0, -4.0), vec(0.0, 0.0)),  # opposite: both projected to zero
        (E1, vec(-1.0, 1.0), vec(0.5, 1.5)),  # partly conflicting (worked by hand)
        (vec(3.0, -1.0), vec(0.0, 0.0), vec(3.0, -1.0)),  # zero partner
    ],
)
def test_pcgrad_hand_built_pairs(g1, g2, expected):
    torch.testing.assert_close(pcgrad(g1, g2), expected)


def test_pcgrad_projections_are_orthogonal_to_the_other_original_gradient():
    g1, g2 = torch.randn(1, 16, 1, 1, dtype=torch.float64), torch.randn(1, 16, 1, 1, dtype=torch.float64)
    if (g1 * g2).sum() > 0:
        g2 = -g2
    d = (g1 * g2).sum()
    g1p = g1 - d / (g2 * g2).sum() * g2
    g2p = g2 - d / (g1 * g1).sum() * g1
    assert abs(float((g1p * g2).sum())) < 1e-12 and abs(float((g2p * g1).sum())) < 1e-12
    torch.testing.assert_close(pcgrad(g1, g2), g1p + g2p)


@pytest.mark.parametrize(
    "g1, g2, expected",
    [
        (vec(1.0, 1.0), vec(1.0, 1.0), vec(2.0, 2.0)),  # identical: equals the sum
        (vec(1.0, 2.0), vec(2.0, 4.0), vec(2.0, 4.0)),  # parallel: min-norm point is g1, times 2
        (E1, E2, vec(1.0, 1.0)),  # orthogonal, equal norms: alpha = 1/2
        (vec(1.0, 2.0), vec(-2.0, -4.0), vec(0.0, 0.0)),  # opposite: min-norm point is 0
        (E1, vec(-1.0, 1.0), vec(0.4, 0.8)),  # alpha = (2 + 1) / 5 -> 2 * (0.6 e1 + 0.4 (-1, 1))
        (vec(3.0, -1.0), vec(0.0, 0.0), vec(3.0, -1.0)),  # zero partner: the other passes
    ],
)
def test_mgda_hand_built_pairs(g1, g2, expected):
    torch.testing.assert_close(mgda(g1, g2), expected)


def test_sum_rule_adds():
    g1, g2 = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(sum_rule(g1, g2), g1 + g2)


def test_magnitude_balancing_rescales_to_the_mean_norm():
    out = combine(vec(10.0, 0.0), vec(0.0, 1.0), rule="sum", balance_magnitude=True)
    torch.testing.assert_close(out, vec(5.5, 5.5))
    # a zero partner leaves the lone gradient unchanged (not halved)
    torch.testing.assert_close(combine(vec(10.0, 0.0), vec(0.0, 0.0), rule="pcgrad", balance_magnitude=True), vec(10.0, 0.0))
    # balancing happens before the projection: both go to the mean norm t, then PCGrad
    t = (10.0 + 0.5**0.5) / 2
    out = combine(vec(10.0, 0.0), vec(-0.5, 0.5), rule="pcgrad", balance_magnitude=True)
    torch.testing.assert_close(out, pcgrad(vec(t, 0.0), vec(-t / 2**0.5, t / 2**0.5)))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("balance", [False, True])
def test_rules_are_degree_one_homogeneous(rule, granularity, balance):
    gen = torch.Generator().manual_seed(0)
    g1, g2 = torch.randn(3, 4, 5, 6, generator=gen), torch.randn(3, 4, 5, 6, generator=gen)
    base = combine(g1, g2, rule=rule, granularity=granularity, balance_magnitude=balance)
    for s in (1e-3, 7.0, 2.0**16):
        scaled = combine(s * g1, s * g2, rule=rule, granularity=granularity, balance_magnitude=balance)
        torch.testing.assert_close(scaled, s * base, rtol=1e-5, atol=1e-6 * s)


@pytest.mark.parametrize("rule", ["pcgrad", "mgda"])
def test_sample_granularity_is_independent_per_sample(rule):
    cases = [(vec(1.0, 2.0), vec(-2.0, -4.0)), (E1, vec(-1.0, 1.0)), (E1, E2), (vec(2.0, 1.0), vec(0.0, 0.0))]
    g1, g2 = torch.cat([c[0] for c in cases]), torch.cat([c[1] for c in cases])
    out = combine(g1, g2, rule=rule, granularity="sample")
    for i, (a, b) in enumerate(cases):
        torch.testing.assert_close(out[i : i + 1], combine(a, b, rule=rule, granularity="sample"))


@pytest.mark.parametrize("rule", ["pcgrad", "mgda"])
def test_cell_granularity_is_independent_per_cell(rule):
    gen = torch.Generator().manual_seed(1)
    g1, g2 = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen)
    out = combine(g1, g2, rule=rule, granularity="cell")
    for b, y, x in [(0, 0, 0), (1, 3, 4), (0, 2, 1), (1, 1, 3)]:
        cell = combine(g1[b : b + 1, :, y : y + 1, x : x + 1], g2[b : b + 1, :, y : y + 1, x : x + 1], rule=rule, granularity="cell")
        torch.testing.assert_close(out[b : b + 1, :, y : y + 1, x : x + 1], cell)
    # a per-sample rule on the same data is different (the test can tell the granularities apart)
    assert not torch.allclose(out, combine(g1, g2, rule=rule, granularity="sample"))


@pytest.mark.parametrize("rule", ["pcgrad", "mgda"])
@pytest.mark.parametrize("balance", [False, True])
def test_batch_granularity_all_reduce_matches_the_global_batch(rule, balance):
    """Two simulated ranks, each all-reducing with the other's moments, equal the global batch."""
    gen = torch.Generator().manual_seed(2)
    g1 = torch.randn(4, 3, 2, 2, generator=gen)
    g2 = torch.randn(4, 3, 2, 2, generator=gen) - 0.5 * g1  # conflicting on average
    full = combine(g1, g2, rule=rule, granularity="batch", balance_magnitude=balance)
    halves = [(g1[:2], g2[:2]), (g1[2:], g2[2:])]
    local = [pair_moments(a, b, granularity="batch") for a, b in halves]
    outs = []
    for rank, (a, b) in enumerate(halves):
        other = local[1 - rank]
        other_stacked = torch.stack([other.dot, other.sq1, other.sq2])
        outs.append(combine(a, b, rule=rule, granularity="batch", balance_magnitude=balance,
                            all_reduce=lambda t, o=other_stacked: t + o))
    torch.testing.assert_close(torch.cat(outs), full)
    without = torch.cat([combine(a, b, rule=rule, granularity="batch", balance_magnitude=balance) for a, b in halves])
    assert not torch.allclose(without, full)


def test_all_reduce_is_only_used_by_batch_granularity():
    calls = []
    g = torch.randn(2, 3, 2, 2)
    for granularity in ("sample", "cell"):
        combine(g, -g, rule="pcgrad", granularity=granularity, all_reduce=lambda t: calls.append(t) or t)
    assert calls == []
    combine(g, -g, rule="pcgrad", granularity="batch", all_reduce=lambda t: calls.append(t) or t)
    assert len(calls) == 1 and calls[0].shape == (3, 1, 1, 1, 1)  # one collective for all three sums


@pytest.mark.parametrize("rule", RULES)
def test_low_precision_is_computed_in_fp32_and_cast_back(rule):
    gen = torch.Generator().manual_seed(3)
    g1, g2 = torch.randn(2, 8, 3, 3, generator=gen).bfloat16(), torch.randn(2, 8, 3, 3, generator=gen).bfloat16()
    out = combine(g1, g2, rule=rule, granularity="cell", balance_magnitude=True)
    assert out.dtype == torch.bfloat16
    ref = combine(g1.float(), g2.float(), rule=rule, granularity="cell", balance_magnitude=True).bfloat16()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_stats_from_hand_built_moments():
    g1 = torch.cat([E1, vec(1.0, 1.0), vec(2.0, 0.0)])
    g2 = torch.cat([vec(-1.0, 0.0), vec(1.0, 1.0), vec(0.0, 0.0)])
    stats = stats_from_moments(pair_moments(g1, g2, granularity="sample"), eps=1e-30).to_floats()
    # global dot = -1 + 2 = 1; |g1|^2 = 1 + 2 + 4 = 7; |g2|^2 = 1 + 2 = 3
    assert stats["cosine"] == pytest.approx(1 / (7 * 3) ** 0.5)
    assert stats["conflict_fraction"] == pytest.approx(0.5)  # 1 of the 2 samples where both are nonzero
    assert stats["norm_ratio"] == pytest.approx((7 / 3) ** 0.5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        pcgrad(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="unknown rule"):
        combine(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), rule="gradnorm")
    with pytest.raises(ValueError, match="unknown granularity"):
        combine(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), rule="pcgrad", granularity="agent")
    with pytest.raises(ValueError, match="batch dim"):
        pcgrad(torch.zeros(3), torch.zeros(3), granularity="sample")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"rule": "gradnorm"}, "rule"), ({"granularity": "pixel"}, "granularity"), ({"eps": -1.0}, "eps"),
     ({"eps": 0.1}, "eps"), ({"balance_magnitude": "yes"}, "balance_magnitude"), ({"collect_stats": 1}, "collect_stats")],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BalancerConfig(**kwargs)


def test_config_works_as_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(BalancerConfig), {"rule": "mgda", "granularity": "cell"})
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, BalancerConfig) and obj.rule == "mgda" and obj.granularity == "cell"
    with pytest.raises(TypeError):
        BalancerConfig("pcgrad")  # keyword-only
