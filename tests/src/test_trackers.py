"""Extra trackers: a run and a sweep logged to MLflow for real (a local SQLite store, no server, no network),
read back through MLflow's own client API."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import CACHE, ROOT, TINY, run_module
from tests.forked_cli import run_python

pytestmark = pytest.mark.slow  # each test trains in a subprocess

FAST = [
    "optim.max_steps=3",
    "eval.steps=1",
    "eval.before_training=false",
    "data.task_metric=none",
    "monitor.num_samples=0",
    "monitor.report_to=[mlflow]",
]


def client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store}")


def test_a_run_logs_metrics_and_params_to_mlflow(tmp_path):
    store, run = tmp_path / "mlflow.db", tmp_path / "my_run"
    result = run_module(
        "src.train",
        *TINY,
        *FAST,
        "monitor.experiment=qlora-tests",
        "lora=r8",
        f"paths.cache_dir={CACHE}",
        f"hydra.run.dir={run}",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow = client(store)
    experiment = mlflow.get_experiment_by_name("qlora-tests")
    [logged] = mlflow.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "my_run" and logged.info.status == "FINISHED"
    assert logged.data.params["sft.lora_r"] == "8" and float(logged.data.params["learning_rate"]) == 1e-4
    evals = mlflow.get_metric_history(logged.info.run_id, "eval_loss")
    assert [m.step for m in evals] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert min(m.value for m in evals) == pytest.approx(metrics["best_eval_loss"], rel=1e-6)
    assert (run / "tensorboard").is_dir()  # TensorBoard stays on next to it


def test_a_sweep_files_its_trials_under_the_study_name(tmp_path):
    import sys

    store = tmp_path / "mlflow.db"
    result = run_python(
        [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            "hparams_search=tiny_cpu",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.pruner=null",
            "monitor.num_samples=0",
            "monitor.report_to=[mlflow]",
        ],
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow = client(store)
    experiment = mlflow.get_experiment_by_name("tiny_cpu")
    runs = mlflow.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["trial_0", "trial_1"]
    import optuna

    study = optuna.load_study(study_name="tiny_cpu", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    by_name = {r.info.run_name: r for r in runs}
    for trial in study.trials:
        logged = by_name[f"trial_{trial.number}"]
        assert float(logged.data.params["learning_rate"]) == pytest.approx(
            trial.params["optim.learning_rate"]
        )
        assert logged.data.params["sft.lora_r"] == str(trial.params["lora.r"])


def test_an_unknown_or_missing_tracker_is_refused_in_one_sentence(tmp_path):
    result = run_module("src.train", *TINY, "monitor.report_to=[comet]", f"hydra.run.dir={tmp_path / 'r'}")
    assert (
        result.returncode == 2 and "monitor.report_to: 'comet' is not one of" in result.stdout + result.stderr
    )
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
