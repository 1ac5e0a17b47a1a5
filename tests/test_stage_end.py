"""The pure plateau rule of ``stages.<name>.until``: modes, min_delta, patience, NaN, the cap, saved state."""

from __future__ import annotations

import json

import pytest

from trainer.engine.stage_end import PlateauRule, default_mode


def _rule(**kw) -> PlateauRule:
    return PlateauRule(**{"metric": "AP@0.5", "mode": "max", "patience": 2, "min_delta": 0.0, "cap": 100, **kw})


def _feed(rule: PlateauRule, values: list[float], every: int = 10):
    """Feed values at steps every, 2*every, ...; the first end decided (and where) or None."""
    for i, value in enumerate(values):
        end = rule.update((i + 1) * every, value)
        if end is not None:
            return end
    return None


def test_max_mode_stops_after_patience_evaluations_without_improvement():
    end = _feed(_rule(), [0.1, 0.3, 0.2, 0.25, 0.9])
    assert (end.step, end.reason, end.best, end.best_step, end.evaluations) == (40, "plateau", 0.3, 20, 4)
    assert end.message == "plateau: AP@0.5 best 0.3 at step 20, no improvement of AP@0.5 >= 0 in 2 evaluations"


def test_min_mode_improves_downwards():
    rule = _rule(metric="minADE", mode="min", patience=1)
    assert _feed(rule, [3.0, 2.0, 1.5]) is None
    end = rule.update(40, 1.6)
    assert (end.step, end.best, end.best_step) == (40, 1.5, 30)


def test_min_delta_improvements_smaller_than_it_do_not_count():
    end = _feed(_rule(min_delta=0.05), [0.40, 0.44, 0.46, 0.47])  # +0.04, +0.06 over 0.40 ... then 0.47 < 0.51
    assert end is None
    rule = _rule(min_delta=0.05)
    end = _feed(rule, [0.40, 0.44, 0.449])
    assert (end.step, end.best, end.best_step) == (30, 0.40, 10)
    assert "no improvement of AP@0.5 >= 0.05 in 2 evaluations" in end.message


def test_nan_never_improves_and_counts_as_an_evaluation():
    end = _feed(_rule(), [float("nan"), float("nan")])
    assert (end.step, end.best, end.best_step) == (20, None, None)
    assert "never finite" in end.message
    end = _feed(_rule(patience=3), [0.5, float("nan"), float("inf"), 0.4])
    assert (end.step, end.best, end.best_step) == (40, 0.5, 10)
    assert _feed(_rule(), [float("nan"), 0.2, float("nan"), 0.3]) is None  # the finite 0.2 is an improvement


def test_cap_ends_the_stage_unless_the_plateau_fires_at_the_same_evaluation():
    end = _feed(_rule(cap=30), [0.1, 0.2, 0.3])
    assert (end.step, end.reason) == (30, "cap")
    assert end.message == "cap: steps reached (30); AP@0.5 best 0.3 at step 30"
    assert _feed(_rule(cap=30), [0.3, 0.2, 0.1]).reason == "plateau"
    assert _rule(cap=30).end_at_cap(30).message == "cap: steps reached (30); AP@0.5 not evaluated"


def test_state_round_trips_through_json_and_gives_the_same_decision():
    values = [0.1, 0.5, 0.4, 0.45, 0.3]
    uninterrupted = _feed(_rule(patience=3), values)
    first = _rule(patience=3)
    assert _feed(first, values[:2]) is None
    resumed = PlateauRule(metric="AP@0.5", mode="max", patience=3, min_delta=0.0, cap=100,
                          state=json.loads(json.dumps(first.state_dict())))
    end = None
    for i, value in enumerate(values[2:], start=3):
        end = end or resumed.update(i * 10, value)
    assert end == uninterrupted and end.step == 50
    again = PlateauRule(metric="AP@0.5", mode="max", patience=3, min_delta=0.0, cap=100,
                        state=json.loads(json.dumps(resumed.state_dict())))
    assert again.ended == end  # a checkpoint saved at the stop remembers it
    with pytest.raises(RuntimeError, match="already ended at step 50"):
        again.update(60, 1.0)


def test_default_mode_and_bad_rules():
    assert [default_mode(m) for m in ("minADE", "minFDE", "MR", "EPA", "AP@0.5/vehicle")] == \
        ["min", "min", "min", "max", "max"]
    for bad in ({"mode": "up"}, {"patience": 0}, {"min_delta": -0.1}, {"cap": 0}):
        with pytest.raises(ValueError, match="bad plateau rule"):
            _rule(**bad)


def test_also_metrics_keep_the_stage_going_while_any_of_them_improves():
    rule = _rule(metric="EPA", also=("AP@0.5", "minADE"), patience=2)
    # EPA stalls after the first evaluation; AP@0.5 improves at 20, minADE (mode min) at 30, nothing after
    values = [(0.5, {"AP@0.5": 0.1, "minADE": 2.0}), (0.4, {"AP@0.5": 0.2, "minADE": 2.0}),
              (0.4, {"AP@0.5": 0.2, "minADE": 1.5}), (0.4, {"AP@0.5": 0.2, "minADE": 1.6}),
              (0.4, {"AP@0.5": float("nan")})]
    ends = [rule.update((i + 1) * 10, v, also) for i, (v, also) in enumerate(values)]
    assert ends[:4] == [None] * 4
    end = ends[4]
    assert (end.step, end.best, end.best_step, end.reason) == (50, 0.5, 10, "plateau")
    assert end.message == ("plateau: EPA best 0.5 at step 10, no improvement of EPA / AP@0.5 / minADE >= 0 in 2 "
                           "evaluations")
    assert rule.state_dict()["also_best"] == {"AP@0.5": 0.2, "minADE": 1.5}
