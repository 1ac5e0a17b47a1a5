"""``stages.<name>.until``: a stage ends on a plateau of a validation metric, the end is logged, survives a resume
and leaves the weights for the next stage; a malformed ``until`` is a config error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.train import main
from tests.train_harness import base_overrides, crash_then_resume, run_train
from trainer.config_io import ConfigError, load_config
from trainer.engine.metrics_log import read_metrics

MULTITASK = ["--config", "recipes/multitask.yaml"]
# min_delta=1 (AP lies in [0, 1]): only the first evaluation improves, so with evaluations every step the stage
# ends at step 1 + patience = 3 whatever the values are. The reference run's second stage starts from the
# stopped stage's export.
UNTIL = ["stages.finetune.until.metric=AP@0.5", "stages.finetune.until.eval_every=1",
         "stages.finetune.until.patience=2", "stages.finetune.until.min_delta=1", "loop.eval_batches=1",
         "loop.checkpoint_every=2", "distributed.engine=plain"]
NEXT_STAGE = ["stages.after.task=detection", "stages.after.init_from=previous", "stages.after.steps=1",
              "stages.after.evaluate=false"]


def _args(tiny_data, run: Path) -> list[str]:
    return [*MULTITASK, *base_overrides(*tiny_data, run, steps=8), *UNTIL]


def _ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}"


def _ends(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "stage_end"]


@pytest.mark.slow
def test_plateau_stop_is_recorded_resumed_identically_and_feeds_the_next_stage(tiny_data, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    result = run_train("python", 1, [*_args(tiny_data, reference), *NEXT_STAGE])
    _ok(result)
    final = json.loads((reference / "finetune" / "final.json").read_text())
    end = final["end"]
    assert final["steps"] == 3 and (end["step"], end["reason"], end["best_step"], end["evaluations"]) == \
        (3, "plateau", 1, 3)
    assert end["message"].startswith("plateau: AP@0.5 best ") and end["message"].endswith(
        "at step 1, no improvement of AP@0.5 >= 1 in 2 evaluations")
    assert f"[finetune] stage ended at step 3: {end['message']}" in result.stdout
    records = _ends(reference)
    assert len(records) == 1 and {k: records[0][k] for k in end} == end and records[0]["stage"] == "finetune"
    steps = [r["step"] for r in read_metrics(reference / "metrics.jsonl") if r.get("stage") == "finetune"
             and "loss/total" in r]
    assert steps == [1, 2, 3]
    pointer = json.loads((reference / "finetune" / "checkpoints" / "latest.json").read_text())
    assert pointer["latest"] == "step_000003"
    assert (reference / "finetune" / "final.safetensors").is_file()
    assert f"initialised from {reference / 'finetune' / 'final.safetensors'}" in result.stdout
    assert json.loads((reference / "after" / "final.json").read_text())["steps"] == 1
    assert "end" not in json.loads((reference / "after" / "final.json").read_text())  # no until: as before

    # killed after step 3, before its evaluation: the checkpoint of step 2 holds one evaluation without
    # improvement; a resume that forgot it would stop at step 5
    crash = [*_args(tiny_data, resumed), "faults.crash_at_step=3"]
    crash_then_resume("python", 1, crash, resumed)
    again = json.loads((resumed / "finetune" / "final.json").read_text())["end"]
    assert again == end
    assert [{k: r[k] for k in end} for r in _ends(resumed)] == [end]


def test_malformed_until_is_a_config_error_exit_2(capsys, tmp_path):
    code = main([*MULTITASK, f"run.dir={tmp_path / 'run'}", "stages.finetune.until.patience=0"])
    assert code == 2
    assert "until.patience and until.eval_every must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    code = main([*MULTITASK, "stages.finetune.until.metric=AP@0.55"])
    assert code == 2 and "stages.finetune.until: 'AP@0.55' is not a validation metric of task 'multitask'" \
        in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (["stages.finetune.until.patiance=2"], "Key 'patiance' not in 'UntilConfig'"),
    (["stages.finetune.until.mode=up"], "until.mode must be auto or one of ('max', 'min')"),
    (["stages.finetune.until.min_delta=-0.1"], "until.min_delta must be >= 0"),
    (["stages.finetune.steps=10", "stages.finetune.until.eval_every=11"], "eval_every (11) must be <= stage.steps"),
    (["stages.finetune.until.eval_every=1", "stages.finetune.evaluate=false"], "needs stage.evaluate=true"),
    (["stages.finetune.task=pretrain", "stages.finetune.until.eval_every=1"],
     "'AP@0.5' is not a validation metric of task 'pretrain'; one of recon"),
    (["stages.finetune.until.metric=recon"], "'recon' is not a validation metric of task 'multitask'"),
    (["stages.finetune.until.also=[EPA,AP@0.55]"], "'AP@0.55' is not a validation metric of task 'multitask'"),
])
def test_until_validation(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("recipes/multitask.yaml", overrides)
    assert message in str(err.value)


def test_a_pretrain_stage_ends_on_a_plateau_of_its_validation_reconstruction(tiny_data, tmp_path):
    run = tmp_path / "pretrain"
    code = main(["--config", "recipes/pretrain.yaml", *base_overrides(*tiny_data, run, steps=6)[:-2],
                 "stages.pretrain.steps=6", "loop.pictures=0", "stages.pretrain.until.metric=recon",
                 "stages.pretrain.until.eval_every=1", "stages.pretrain.until.patience=1",
                 "stages.pretrain.until.min_delta=1000", "loop.eval_batches=1", "distributed.engine=plain"])
    assert code == 0
    end = json.loads((run / "pretrain" / "final.json").read_text())["end"]
    assert (end["step"], end["reason"], end["metric"], end["best_step"]) == (2, "plateau", "recon", 1)
    recon = [r["eval/recon"] for r in read_metrics(run / "metrics.jsonl") if "eval/recon" in r]
    assert len(recon) == 3 and all(v > 0 for v in recon)  # steps 1, 2 and the stage's final evaluation
    assert recon[-1] == pytest.approx(recon[-2], rel=1e-6)  # same weights, same fixed masks: the same value


def test_until_defaults_and_mode_from_metric():
    assert load_config("recipes/multitask.yaml").stages["finetune"].until is None
    until = load_config("recipes/multitask.yaml", ["stages.finetune.until.metric=minFDE"]).stages["finetune"].until
    assert (until.mode, until.patience, until.min_delta, until.eval_every) == ("min", 3, 0.0, 50)
    until = load_config("recipes/multitask.yaml", ["stages.finetune.until.metric=EPA/vehicle",
                                                   "stages.finetune.until.eval_every=5"]).stages["finetune"].until
    assert until.mode == "max"
    until = load_config("recipes/pretrain.yaml", ["stages.pretrain.until.metric=recon"]).stages["pretrain"].until
    assert until.mode == "min"
