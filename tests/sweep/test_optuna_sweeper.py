"""Optuna sweeps through the Hydra sweeper on the tiny model: trials, resume, failures, pruning, report."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.report import override_value, report, rerun_overrides
from tests.conftest import ROOT, logged_hparams, logged_session_status, typed_config
from tests.forked_cli import run_python

DIVERGE = "{optim.learning_rate:1e10,lora.r:8,optim.warmup_ratio:0.0}"


# Every test here starts real sweeps of the tiny model in subprocesses (a minute or more each): slow, so
# `make test-fast` leaves them to `make test` and CI.
pytestmark = pytest.mark.slow


def sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    """The tiny_cpu sweep (hparams_search=tiny_cpu: tiny model, 6 steps) writing to `sweep_dir`."""
    return [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        "hparams_search=tiny_cpu",
        f"hydra.sweep.dir={sweep_dir}",
        "monitor.num_samples=0",
        *overrides,
    ]


def run_sweep(sweep_dir: Path, *overrides: str) -> str:
    result = run_python(
        sweep_command(sweep_dir, *overrides),
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


def load(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny_cpu", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """4 finished trials (no pruner), after one enqueued diverging trial that must fail."""
    folder = tmp_path_factory.mktemp("sweep") / "study"
    run_sweep(folder, "hydra.sweeper.pruner=null", f"hydra.sweeper.enqueue_trials=[{DIVERGE}]")
    return folder


def test_sweep_runs_four_trials_in_the_search_space(sweep_dir):
    study = load(sweep_dir)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == 4
    for trial in complete:
        assert 1e-4 <= trial.params["optim.learning_rate"] <= 1e-2
        assert trial.params["lora.r"] in (4, 8, 16)
        assert 0.0 <= trial.params["optim.warmup_ratio"] <= 0.2
        folder = sweep_dir / f"trial_{trial.number}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["best_eval_loss"], abs=1e-9)
        cost = (trial.user_attrs["optimizer_steps"], trial.user_attrs["train_tokens"])  # sweep/cost.py
        assert cost == (metrics["global_step"], metrics["train_tokens"]) and cost[1] > 0
        assert (folder / "adapter" / "adapter_model.safetensors").is_file()
        assert (
            json.loads((folder / "adapter" / "adapter_config.json").read_text())["r"]
            == trial.params["lora.r"]
        )
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
        hparams = logged_hparams(folder / "tensorboard")  # the HPARAMS tab lists every trial
        assert hparams["learning_rate"] == pytest.approx(trial.params["optim.learning_rate"])
        assert hparams["lora_r"] == trial.params["lora.r"]
        assert hparams["state"] == "COMPLETE"
        assert logged_session_status(folder / "tensorboard") == "STATUS_SUCCESS"


def test_diverging_trial_is_failed_with_its_reason(sweep_dir):
    failed = load(sweep_dir).get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [0]
    assert "became nan" in failed[0].user_attrs["fail_reason"]
    metrics = json.loads((sweep_dir / "trial_0" / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    assert (
        logged_hparams(sweep_dir / "trial_0" / "tensorboard")["state"] == "FAIL"
    )  # not a success in HPARAMS
    assert logged_session_status(sweep_dir / "trial_0" / "tensorboard") == "STATUS_FAILURE"


def test_rerun_with_more_trials_resumes_and_keeps_earlier_folders(sweep_dir):
    before = {p.name: folder_digest(p) for p in sweep_dir.glob("trial_*")}
    output = run_sweep(sweep_dir, "hydra.sweeper.pruner=null", "hydra.sweeper.n_trials=6")
    assert "4 finished trials, 2 to go" in output
    study = load(sweep_dir)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6
    assert len(study.trials) == 7  # the failed trial stays recorded
    assert {p.name: folder_digest(p) for p in sweep_dir.glob("trial_*") if p.name in before} == before
    assert sorted(p.name for p in sweep_dir.glob("trial_*")) == [f"trial_{n}" for n in range(7)]


def test_report_writes_leaderboard_plots_and_best_command(sweep_dir, capsys):
    result = report(sweep_dir)
    printed = capsys.readouterr().out
    study = load(sweep_dir)
    assert result["best_trial"] == study.best_trial.number
    assert f"Best trial {study.best_trial.number}" in printed and "Parameter importances" in printed
    steps = sum(t.user_attrs["optimizer_steps"] for t in study.trials if t.state == TrialState.COMPLETE)
    assert result["cost"].steps == steps and f"compute: {steps:,} optimizer steps" in printed
    rows = (sweep_dir / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 1 + len(study.trials)
    assert rows[1].startswith(f"{study.best_trial.number},COMPLETE,")
    for name in ["optimization_history", "param_importances", "intermediate_values", "eval_loss_curves"]:
        assert (sweep_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep_dir / "optimization_history.html").is_file()
    command = (sweep_dir / "best_overrides.txt").read_text()
    assert command.startswith("python -m src.train ") and "trial=" not in command
    for name, value in study.best_trial.params.items():  # every searched parameter, whichever trial won
        assert f"{name}={override_value(value)}" in command.split()


def test_the_rerun_line_names_a_searched_parameter_equal_to_its_default(sweep_dir):
    """A best trial with r=16 gave `lora=r16` and no `lora.r=16`: the line hid what the sweep chose."""
    trial = sweep_dir / f"trial_{load(sweep_dir).best_trial.number}"
    assert "optim.weight_decay=0.01" not in rerun_overrides(trial)  # the optim group's default, not searched
    assert "optim.weight_decay=0.01" in rerun_overrides(trial, searched=["optim.weight_decay"])


def test_best_overrides_rerun_the_best_trial_as_a_plain_single_run(sweep_dir, tmp_path):
    report(sweep_dir)
    command = (sweep_dir / "best_overrides.txt").read_text().split()
    assert command[:3] == ["python", "-m", "src.train"]
    assert not any(word.startswith(("hparams_search", "trial=", "hydra.", "-m")) for word in command[3:])
    run_dir = tmp_path / "rerun"
    result = run_python([sys.executable, *command[1:], f"hydra.run.dir={run_dir}"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = json.loads((run_dir / "metrics.json").read_text())
    assert rerun["best_eval_loss"] == pytest.approx(load(sweep_dir).best_value, abs=1e-6)


def test_median_pruner_stops_a_clearly_worse_trial(tmp_path):
    good = "{optim.learning_rate:0.01,lora.r:8,optim.warmup_ratio:0.0}"
    stalled = "{optim.learning_rate:1e-9,lora.r:8,optim.warmup_ratio:0.0}"
    folder = tmp_path / "pruned"
    run_sweep(folder, f"hydra.sweeper.enqueue_trials=[{good},{good},{stalled}]", "hydra.sweeper.n_trials=4")
    study = load(folder)
    trial = study.trials[2]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at_step"] == 2
    metrics = json.loads((folder / "trial_2" / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["global_step"] == 2 < metrics["planned_steps"] == 6
    assert logged_hparams(folder / "trial_2" / "tensorboard")["state"] == "PRUNED"
    assert logged_session_status(folder / "trial_2" / "tensorboard") == "STATUS_UNKNOWN"
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 4  # the sweep went on


def kill_once_trial_checkpoints(command: list[str], trial_dir: Path) -> None:
    """Start a sweep and SIGKILL its whole process group once `trial_dir` holds a complete checkpoint."""
    import os
    import signal
    import time

    from src.run_info import complete_checkpoints

    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while not complete_checkpoints(trial_dir):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_sweep_resumes_with_the_interrupted_trial_failed(tmp_path):
    folder = tmp_path / "killed"
    args = ["hydra.sweeper.pruner=null", "hydra.sweeper.n_trials=3", "optim.max_steps=30", "eval.steps=10"]
    kill_once_trial_checkpoints(sweep_command(folder, *args), folder / "trial_1")
    finished_before = folder_digest(folder / "trial_0")
    output = run_sweep(folder, *args)
    assert "Trial 1 interrupted" in output
    study = load(folder)
    states = {t.number: t.state for t in study.trials}
    assert states[1] == TrialState.FAIL and "interrupted" in study.trials[1].user_attrs["fail_reason"]
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 3
    assert len(study.trials) == 4
    assert folder_digest(folder / "trial_0") == finished_before


def test_two_objective_sweep_reports_a_pareto_front(tmp_path, capsys):
    folder = tmp_path / "pareto"
    run_sweep(
        folder,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.objective=[best_eval_loss,wall_seconds]",
        "hydra.sweeper.direction=[minimize,minimize]",
    )
    study = load(folder)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["best_eval_loss", "wall_seconds"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3  # pruning is off with two objectives
    for trial in complete:
        metrics = json.loads((folder / f"trial_{trial.number}" / "metrics.json").read_text())
        assert trial.values == pytest.approx([metrics["best_eval_loss"], metrics["wall_seconds"]])
    result = report(folder)
    front = {row["trial"] for row in result["pareto_front"]}
    assert front == {t.number for t in study.best_trials} and front
    assert "Pareto front over best_eval_loss (minimize), wall_seconds (minimize)" in capsys.readouterr().out
    assert (folder / "pareto_front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (folder / "best_overrides.txt").read_text().splitlines()
    assert len(lines) == 2 * len(front) and lines[1].startswith("python -m src.train ")


def test_a_grid_preset_runs_every_grid_point_once(tmp_path):
    """hparams_search=grid_default (the recorded grid's preset) on the tiny model, shrunk to a 2 x 2 grid."""
    folder = tmp_path / "grid"
    command = sweep_command(folder, "model=tiny", "data.builtin_examples=16", "hydra.sweeper.n_trials=100")
    command[command.index("hparams_search=tiny_cpu")] = "hparams_search=grid_default"
    command.append(
        'hydra.sweeper.params={optim.learning_rate:"choice(1e-3,1e-2)",lora.r:"choice(4,8)",'
        'optim.num_train_epochs:"choice(1)"}'
    )
    result = run_python(command, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    study = optuna.load_study(study_name="grid_default", storage=f"sqlite:///{folder / 'optuna.db'}")
    grid = {(t.params["optim.learning_rate"], t.params["lora.r"]) for t in study.trials}
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert grid == {(1e-3, 4), (1e-2, 4), (1e-3, 8), (1e-2, 8)}
    assert "4 to go (n_trials=4)" in result.stdout + result.stderr  # n_trials is capped at the grid's size
    evals = json.loads((folder / "trial_0" / "metrics.json").read_text())["eval_history"]
    assert [e["schedule_fraction"] for e in evals] == [
        1 / 6,
        2 / 6,
        3 / 6,
        4 / 6,
        5 / 6,
        1.0,
    ]  # eval.steps=0.125


def test_a_killed_grid_sweep_runs_its_interrupted_point_again_on_resume(tmp_path):
    """A grid point whose trial was interrupted is queued again, so the resumed grid has every point once
    (Optuna's GridSampler alone counts the failed point as visited and re-runs a finished one instead)."""
    folder = tmp_path / "grid"
    command = sweep_command(folder, "model=tiny", "data.builtin_examples=16", "hydra.sweeper.n_trials=100")
    command[command.index("hparams_search=tiny_cpu")] = "hparams_search=grid_default"
    command += [
        'hydra.sweeper.params={optim.learning_rate:"choice(1e-3,1e-2)",lora.r:"choice(4)",'
        'optim.num_train_epochs:"choice(1)"}',
        "optim.max_steps=30",
        "eval.steps=10",
    ]
    kill_once_trial_checkpoints(command, folder / "trial_1")
    result = run_python(command, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Grid point of interrupted trial 1 queued again" in result.stdout + result.stderr
    study = optuna.load_study(study_name="grid_default", storage=f"sqlite:///{folder / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[2].params == study.trials[1].params and study.trials[2].user_attrs["retry_of"] == 1
    completed = {t.params["optim.learning_rate"] for t in study.trials if t.state == TrialState.COMPLETE}
    assert completed == {1e-3, 1e-2}


def test_a_three_trial_sweep_measures_the_untouched_model_once(tmp_path):
    folder = tmp_path / "baseline"
    output = run_sweep(
        folder,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner=null",
        "eval.before_training=true",
        f"monitor.sample_prompts=[prompt{uuid.uuid4().hex}]",  # a baseline no earlier run has cached
    )
    assert output.count("baseline measured in") == 1
    assert output.count("baseline read from") == 2
    baselines = {
        json.loads((folder / f"trial_{n}" / "baseline.json").read_text())["eval_loss"] for n in range(3)
    }
    assert len(baselines) == 1  # every trial records the same untouched eval loss


def test_a_study_created_for_another_sweep_is_refused_in_one_sentence(tmp_path):
    """Its identity (search space and fixed overrides) is stored in the study; re-running the study with
    other data or a narrowed choice used to report the old best trial, or crash TPE and leave a trial RUNNING."""
    first = run_python(sweep_command(tmp_path, "hydra.sweeper.n_trials=0"), cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_python(sweep_command(tmp_path, "hydra.sweeper.n_trials=0"), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]  # the same sweep resumes its study
    other = run_python(
        sweep_command(tmp_path, "hydra.sweeper.n_trials=0", "lora.r=choice(2,32)", "data.max_length=64"),
        cwd=ROOT,
    )
    output = other.stdout + other.stderr
    assert other.returncode == 2 and "Traceback" not in output
    assert (
        "was created for another sweep" in output and "give this one a new hydra.sweeper.study_name" in output
    )
    assert "e.g. hydra.sweeper.study_name=tiny_cpu_2" in output  # the way on, a name the storage lacks
    assert "lora.r" in output and "now data.max_length=64" in output


@pytest.mark.parametrize(
    ("setup", "overrides", "message"),
    [
        ("corrupt", [], "file is not a database"),
        (None, ["hydra.sweeper.storage=null"], "hydra.sweeper.storage=null keeps the study"),
        (None, ["hydra.sweeper.storage=postgresql://u:pw-secret-1@127.0.0.1:1/db"], "cannot be reached"),
    ],
    ids=["corrupt-sqlite-file", "storage-null", "unreachable-postgres"],
)
def test_a_storage_that_cannot_hold_the_study_is_refused_in_one_sentence(tmp_path, setup, overrides, message):
    if setup == "corrupt":
        (tmp_path / "optuna.db").write_text("not a database")
    before = (tmp_path / "optuna.db").read_bytes() if setup else None
    result = run_python(
        sweep_command(tmp_path, "hydra.sweeper.n_trials=1", *overrides),
        cwd=ROOT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and message in output and "Traceback" not in output, output[-2000:]
    assert "pw-secret-1" not in output
    assert before is None or (tmp_path / "optuna.db").read_bytes() == before  # left as it was


def test_an_unquoted_comma_list_inside_a_sweep_is_refused_and_a_list_works(tmp_path):
    """Inside -m, data.path=a.jsonl,b.jsonl used to become a categorical hyperparameter: each trial
    trained on one file."""
    rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(20)]
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    refused = run_python(
        sweep_command(tmp_path / "s1", "data=jsonl", f"data.path={a},{b}"),
        cwd=ROOT,
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "would search over data.path" in output and "Traceback" not in output
    assert not (tmp_path / "s1" / "trial_0").exists()

    from src.data_files import local_files

    listed = typed_config(["data=jsonl", f"data.path=[{a},{b}]"]).data
    assert local_files(listed.path) == [a, b]  # a list is one value: both files, every trial


def test_an_enqueued_trial_the_space_cannot_produce_is_refused_before_any_trial(tmp_path):
    """Optuna kept an out-of-range enqueued value as given, and raised mid-sweep on an unknown choice."""
    for enqueued, message in [
        ("[{lora.r:12}]", "lora.r=12 is not one of its choices [4, 8, 16]"),
        ("[{optim.weight_decay:0.1}]", "optim.weight_decay is not searched"),
    ]:
        result = run_python(
            sweep_command(tmp_path, f"hydra.sweeper.enqueue_trials={enqueued}"),
            cwd=ROOT,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
        assert (
            "hydra.sweeper.enqueue_trials[0] cannot be a trial of this sweep" in output and message in output
        )
        assert load(tmp_path).trials == []  # refused before any trial was created


def test_a_trial_whose_values_cannot_be_sampled_is_failed_and_the_sweep_goes_on(tmp_path):
    """A trial queued into the study from outside (Optuna's API, a dashboard) with a value the space cannot
    produce used to crash the sweeper with a traceback and stay RUNNING forever."""
    run_sweep(tmp_path, "hydra.sweeper.n_trials=1")
    load(tmp_path).enqueue_trial({"lora.r": 12})
    output = run_sweep(tmp_path, "hydra.sweeper.n_trials=2")
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE], output
    assert trials[1].user_attrs["fail_reason"].startswith("its parameters could not be sampled: ValueError")
    assert "Traceback" not in output


def test_the_dashboard_serves_the_sweeps_trials_over_http(sweep_dir):
    """`python -m sweep.dashboard` starts the real optuna-dashboard server on the sweep's storage; its HTTP
    API lists the same trials, states and values as the study."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "sweep.dashboard", str(sweep_dir), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def get(path: str) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 60
        while True:
            try:
                studies = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["tiny_cpu"]
        served = get(f"/api/studies/{studies[0]['study_id']}?after=0")["trials"]
        study = load(sweep_dir)
        assert [(t["number"], t["state"]) for t in served] == [
            (t.number, t.state.name.capitalize()) for t in study.trials
        ]
        for shown, trial in zip(served, study.trials):
            if trial.state == TrialState.COMPLETE:
                assert shown["values"] == pytest.approx(trial.values)
                assert {p["name"] for p in shown["params"]} == set(trial.params)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_sweep_repeats_its_best_at_other_seeds_stops_itself_and_marks_ties(tmp_path):
    """The tiny sweep with noise repeats and a short stopping rule: trial 0's configuration runs again at
    seeds 43 and 44 (in the job's own config, never pruned though the median pruner is on), the sweep stops
    before n_trials with no trial left RUNNING, and every complete trial's TensorBoard run gets its regret."""
    from tests.sweep.test_hparams_regret import declared_metrics, scalars

    folder = tmp_path / "noise"
    output = run_sweep(
        folder,
        "hydra.sweeper.noise_repeats=2",
        "hydra.sweeper.stopping.patience=1",
        "hydra.sweeper.stopping.min_trials=4",
        "hydra.sweeper.n_trials=8",
    )
    study = load(folder)
    trials = study.trials
    assert [(t.user_attrs.get("noise_repeat_of"), t.user_attrs.get("seed")) for t in trials[:3]] == [
        (None, None),
        (0, 43),
        (0, 44),
    ]
    for trial in trials[:3]:
        assert trial.state == TrialState.COMPLETE and trial.params == trials[0].params
        config = (folder / f"trial_{trial.number}" / "config.yaml").read_text()
        assert f"seed: {trial.user_attrs.get('seed', 42)}\n" in config
    assert (
        trials[1].intermediate_values == trials[2].intermediate_values == {}
    )  # reported nothing to prune by
    assert len({t.value for t in trials[:3]}) == 3  # the seeds train differently: a floor above 0
    assert not study.get_trials(states=(TrialState.RUNNING,))
    decision = study.user_attrs["stop_decision"]
    assert decision["finished"] == len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) < 8
    spread = max(t.value for t in trials[:3]) - min(t.value for t in trials[:3])
    assert study.user_attrs["noise_floor"] == pytest.approx(spread)
    assert "Sweep stopped itself after" in output
    last = [line for line in output.splitlines() if "compute:" in line][-1]
    assert "stopping" in last and f"noise floor {spread:.4g}" in last
    results = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    best = results["best_trial"]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        tensorboard = folder / f"trial_{trial.number}" / "tensorboard"
        assert "hparam/regret_in_noise_floors" in declared_metrics(tensorboard)
        regret = scalars(tensorboard, "hparam/regret_in_noise_floors")[-1][1]
        assert regret == pytest.approx(0.0) if trial.number == best else regret >= 0.0
