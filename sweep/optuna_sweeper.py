"""The sweep loop: the Hydra Optuna sweeper, extended where SFT sweeps need more than the plugin
(hydra-optuna-sweeper 1.4.0rc3):

- resume: re-running a sweep continues its study up to `n_trials` finished (complete + pruned) trials in
  total, instead of running `n_trials` more;
- parallel workers: the same command started by several processes or machines on one storage URL shares
  the study: `n_trials` stays the total, no trial runs twice (see `sweep.places.why_not_run`), and each
  worker waits for the others' running trials before it reports, so all of them name the same best trial;
- trial identity: each job receives its Optuna trial number (`trial=N`), so it writes to `trial_N/` (never a
  reused Hydra job number) and reports eval losses to its own trial for pruning;
- pruning: a trial the job stopped through the pruner is told PRUNED, not COMPLETE or FAIL;
- failures: a raising job (NaN loss, out of memory, bad sampled value) is told FAIL with the reason as a user
  attribute; the sweep goes on until `max_failures` trials have failed in this invocation;
- seeding: `enqueue_trials` queues fixed parameter sets (known-good baselines) before the sampler's picks;
  trial N draws its random choices from `sampler.seed + N`, so workers sharing a seed do not repeat
  each other's parameters;
- GPUs: parallel trials of the joblib launcher are pinned to one visible GPU each;
- noise: after its first complete trial the sweep re-runs its best configuration at
  `hydra.sweeper.noise_repeats` other seeds (sweep/repeats.py), ranks configurations by seed mean and stores
  the seed spread as the study's noise floor (sweep/noise.py, sweep/convergence.py);
- stopping: n_trials is the most it runs; before each ask, the stopping rule (sweep/stopping.py) over the
  finished trials may stop the study for good (`hydra.sweeper.stopping`, sweep/convergence.py).

This module is the loop (open the study, queue the noise repeats, check the stop decision, ask, launch, tell,
wait for other workers, report) and how a job's result becomes the trial's outcome; it calls sweep.preflight (the refusals before the first trial),
sweep.study (the study, and Optuna's private API), sweep.space (the search space), sweep.places (the n_trials
rule), sweep.liveness (dead workers' trials), sweep.launch (jobs and GPUs), sweep.repeats and sweep.convergence
(noise and stopping) and sweep.results (the report). hydra_plugins/sft_optuna_sweeper
makes Hydra find it as a plugin.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf
from optuna.trial import TrialState

from src.errors import JobFailed
from src.redact import redact
from sweep.convergence import (
    check_stop,
    noise_and_stopping_line,
    record_noise_floor,
    stopping_off_because,
    stopping_rule,
)
from sweep.cost import record_cost
from sweep.first_trial import data_sized
from sweep.launch import JobLost, launch_trials
from sweep.liveness import WORKER, describe_worker, fail_stale_trials, heartbeats, worker_identity
from sweep.lr_prior import model_prior, sweep_line, uses_prior
from sweep.places import finished_trials, free_places, runnable_trials
from sweep.preflight import (
    SweepRefused,
    check_enqueued_trials,
    check_searched_settings,
    check_storage,
    open_checked_study,
)
from sweep.repeats import queue_noise_repeats, seed_override
from sweep.results import write_results
from sweep.space import grid_choices, search_space
from sweep.study import FAIL_REASON, OPTUNA_TARGETS, PRUNED_AT, stored_trial, sweep_identity, tell

log = logging.getLogger(__name__)

LEARNING_RATE = "optim.learning_rate"
POLL_SECONDS = 2.0  # how often a worker with nothing left to start looks at the others' trials


def objective_view(metrics: dict[str, Any]) -> dict[str, float]:
    """The values a sweep can optimise, from a job's metrics: every number in metrics.json (best_eval_loss,
    wall_seconds, train_seconds, peak_memory_gb …), `task_metric` (the score data.task_metric names, after
    training) and `task_metric.<score>` (each score the task metric reports, e.g. task_metric.valid_json)."""
    view = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    task = metrics.get("task_metric") or {}
    after = task.get("after") or {}
    for name, value in after.items():
        view[f"task_metric.{name}"] = float(value)
    if task.get("name") in after:
        view["task_metric"] = float(after[task["name"]])
    return view


def objective_values(returned: Any, objectives: list[str]) -> list[float]:
    """The job's values of the sweep's objectives (a job that returns one number has one objective)."""
    if not isinstance(returned, dict):
        return [float(returned)]
    view = objective_view(returned)
    missing = [name for name in objectives if name not in view]
    if missing:
        raise ValueError(
            f"hydra.sweeper.objective {missing} not among the job's metrics; choose from {sorted(view)}"
        )
    return [view[name] for name in objectives]


class SFTOptunaSweeper(OptunaSweeper):
    """OptunaSweeper with resume-to-total, parallel workers, per-trial folders, pruning, a failure budget,
    noise repeats and a stopping rule."""

    def __init__(
        self,
        *,
        max_failures: int,
        enqueue_trials: list | None,
        pruner: Any = None,
        wait_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        grace_period: float | None = None,
        search_data_and_model: bool = False,
        report_at: str = "schedule",
        objective: Any = "best_eval_loss",
        noise_repeats: int = 2,
        stopping: Any = None,
        **kwargs: Any,
    ):
        if report_at not in ("schedule", "step"):
            raise ValueError(f"hydra.sweeper.report_at={report_at!r} must be 'schedule' or 'step'.")
        if int(noise_repeats) < 0:
            raise ValueError(f"hydra.sweeper.noise_repeats={noise_repeats} must be 0 (none) or more.")
        self.noise_repeats = int(noise_repeats)
        self.stopping = stopping_rule(stopping)
        self.report_at = report_at
        self.objectives = [objective] if isinstance(objective, str) else [str(o) for o in objective]
        directions = kwargs.get("direction")
        count = 1 if isinstance(directions, str) or not hasattr(directions, "__len__") else len(directions)
        if count != len(self.objectives):
            raise ValueError(
                f"hydra.sweeper.objective names {len(self.objectives)} objective(s) {self.objectives} but "
                f"hydra.sweeper.direction gives {count} direction(s); give one direction per objective."
            )
        super().__init__(**kwargs)
        self.max_failures = max_failures
        self.enqueue_trials = [dict(t) for t in enqueue_trials or []]
        self.pruner_config = pruner  # instantiated by the jobs (sweep/pruning.py), which report to the trial
        self.wait_timeout = wait_timeout
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.search_data_and_model = search_data_and_model
        self.sampler_config = kwargs["sampler"]
        self.grid: dict[str, list] | None = None  # the grid's choices per param under sampler=grid
        self.noise_off: str | None = None  # why this study takes no repeats and no stopping rule
        self.stop_logged = False

    def sweep(self, arguments: list[str]) -> None:
        try:  # every refusal comes before the first trial is created: one sentence, no traceback
            study, space, fixed_params, fixed_overrides = self._prepare(arguments)
        except SweepRefused as refusal:
            log.error("%s", refusal)
            sys.exit(2)
        self._fail_stale_trials(study)
        self._enqueue_new(study)
        self._log_start(study)
        self._run_trials(study, space, fixed_params, fixed_overrides)
        self._write_results(study)

    def _prepare(
        self, arguments: list[str]
    ) -> tuple[optuna.Study, dict[str, Any], dict[str, Any], list[str]]:
        """The search space (distributions, fixed params, fixed overrides) and the opened study, after the
        preflight checks (sweep/preflight.py); raises SweepRefused."""
        # The plugin's OptunaSweeperImpl: its params parsing, directions and trial configuring are private
        # methods, which hydra-optuna-sweeper 1.4.0rc3 exposes no public equivalent of.
        impl = self.sweeper
        impl._process_searchspace_config()
        params_conf = impl._parse_sweeper_params_config() + list(arguments)
        space, fixed_params, fixed_overrides = search_space(params_conf)
        self._announce_learning_rate_prior(space, arguments)
        self._use_grid(space)
        check_searched_settings(space, self.search_data_and_model)
        check_storage(impl.storage)
        study = open_checked_study(
            impl.storage,
            impl.study_name,
            sweep_identity(space, fixed_params, fixed_overrides),
            sampler=impl.sampler,
            directions=impl._get_directions(),
            metric_names=self.objectives,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
        )
        check_enqueued_trials(self.enqueue_trials, space)
        return study, space, fixed_params, fixed_overrides

    def _use_grid(self, space: dict[str, Any]) -> None:
        """hydra/sweeper/sampler=grid: every combination of the (discrete) params once, in a seeded order."""
        impl = self.sweeper
        self.grid = None
        if isinstance(impl.sampler, functools.partial) and impl.sampler.func is optuna.samplers.GridSampler:
            self.grid = grid_choices(space)
            impl.sampler = impl.sampler(self.grid)
            impl.n_trials = min(impl.n_trials, math.prod(len(choices) for choices in self.grid.values()))

    def _log_start(self, study: optuna.Study) -> None:
        impl = self.sweeper
        self.noise_off = stopping_off_because(study, self.grid is not None)
        log.info(noise_and_stopping_line(self.noise_off, self.noise_repeats, self.stopping))
        done = finished_trials(study)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        log.info(
            "Study %r in %s: %d finished trials, %d to go (n_trials=%d)%s",
            study.study_name,
            impl.storage,
            done,
            max(impl.n_trials - done, 0),
            impl.n_trials,
            f", {running} of them running in other workers" if running else "",
        )

    def _run_trials(self, study: optuna.Study, space, fixed_params, fixed_overrides) -> None:
        """Launch batches while places are free, then wait for the other workers' running trials (up to
        hydra.sweeper.wait_timeout), so every worker reports the same best; exits 1 past max_failures."""
        impl = self.sweeper
        failures, waiting_since, waiting_for = 0, None, None
        while True:
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            free = free_places(trials, impl.n_trials)
            if free > 0 and not self._stopped(study, trials):
                self._queue_noise_repeats(study, trials)
                failures += self._run_batch(
                    study, min(free, impl.n_jobs), space, fixed_params, fixed_overrides
                )
                if failures > self.max_failures:  # one sentence, no traceback: the reasons are in the study
                    log.error(
                        "Sweep stopped: %d trials failed, more than hydra.sweeper.max_failures=%d; see %s in "
                        "the study (python -m sweep.report) or the trials' train.log.",
                        failures,
                        self.max_failures,
                        FAIL_REASON,
                    )
                    sys.exit(1)
                waiting_since = None
                continue
            if not running:
                return
            waiting_since = waiting_since or time.monotonic()
            if [t.number for t in running] != waiting_for:
                waiting_for = [t.number for t in running]
                log.info(
                    "Nothing left to start; waiting for %s running in other workers before reporting "
                    "(hydra.sweeper.wait_timeout=%s s)",
                    ", ".join(f"trial {t.number} ({describe_worker(t)})" for t in running),
                    self.wait_timeout,
                )
            if self.wait_timeout is not None and time.monotonic() - waiting_since > self.wait_timeout:
                log.warning(
                    "Stopped waiting after %s s: trials %s are still running, so this report leaves them out",
                    self.wait_timeout,
                    waiting_for,
                )
                return
            time.sleep(POLL_SECONDS)
            self._fail_stale_trials(study)  # a worker on this host that died mid-trial frees its place

    def _queue_noise_repeats(self, study: optuna.Study, trials: list) -> None:
        """Once the study has a complete trial: queue the repeats of its best (sweep/repeats.py)."""
        if self.noise_off is None:
            base_seed = int(OmegaConf.select(self.sweeper.config, "seed", default=0))
            queue_noise_repeats(study, trials, self.noise_repeats, base_seed)

    def _stopped(self, study: optuna.Study, trials: list) -> bool:
        """Whether the study has stopped itself (stored by any worker, or decided now and stored); refreshes
        the study's noise floor. Logs the decision's line once per worker."""
        if self.noise_off is not None:
            return False
        record_noise_floor(study, trials)
        if self.stopping is None:
            return False
        stopped = check_stop(study, trials, self.stopping, self.sweeper.n_trials)
        if stopped is not None and not self.stop_logged:
            log.info(stopped.line())
            self.stop_logged = True
        return stopped is not None

    def _announce_learning_rate_prior(self, space: dict[str, Any], arguments: list[str]) -> None:
        """The sweep's first line, before any trial can fail: the learning-rate range and first trial the
        preset derived from the composed model (sweep/lr_prior.py), or that they were given explicitly, and
        the preset's first trial's epochs from the training set's size (sweep/first_trial.py). Silent for
        presets that use no prior."""
        node = OmegaConf.select(self.sweeper.config, "hydra.sweeper")
        raw = OmegaConf.to_container(node, resolve=False) if node is not None else {}
        given = {override.split("=", 1)[0].lstrip("+~") for override in arguments}  # sweep overrides
        range_from_prior = (
            uses_prior((raw.get("params") or {}).get(LEARNING_RATE)) and LEARNING_RATE not in given
        )
        first_from_prior = uses_prior(raw.get("enqueue_trials"))
        if not (range_from_prior or first_from_prior):
            return
        prior = model_prior(self.sweeper.config.model)
        searched = space.get(LEARNING_RATE)
        sized = ""
        if first_from_prior and self.enqueue_trials:  # the preset's first trial: its length follows the data
            self.enqueue_trials[0], sentence = data_sized(self.enqueue_trials[0], self.sweeper.config)
            sized = f"; {sentence}"
        log.info(sweep_line(prior, searched, self.enqueue_trials, range_from_prior, first_from_prior) + sized)

    def _run_batch(self, study: optuna.Study, size: int, space, fixed_params, fixed_overrides) -> int:
        """Ask `size` trials, drop those another worker's race took the place of, run the rest as one launch
        and tell their outcomes; returns how many failed."""
        impl, identity = self.sweeper, worker_identity()
        # Optuna warns that heartbeats are meant for study.optimize(); this ask/tell loop records them itself
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Heartbeat of storage")
            batch = [study.ask() for _ in range(size)]
        for trial in batch:  # who runs it, so a restarted sweep can tell a dead worker's trial
            trial.set_user_attr(WORKER, identity)
        runnable = runnable_trials(study, batch, impl.n_trials)
        overrides, configured, failed = [], [], 0
        for trial in runnable:
            self._reseed(study, trial.number)
            try:
                configured_overrides = impl._configure_trials([trial], space, fixed_params, fixed_overrides)
                overrides += [(*o, *seed_override(trial)) for o in configured_overrides]
            # the sampler could not produce its values: fail the trial, never leave it RUNNING
            except Exception as error:
                self._fail(
                    study, trial, f"its parameters could not be sampled: {type(error).__name__}: {error}"
                )
                failed += 1
                continue
            configured.append(trial)
        runnable = configured
        if not runnable:
            return failed
        with heartbeats(study, runnable, self.heartbeat_interval):
            returns = launch_trials(impl, study, runnable, overrides)
        return failed + sum(not self._tell(study, trial, result) for trial, result in zip(runnable, returns))

    def _reseed(self, study: optuna.Study, number: int) -> None:
        """Trial N samples with seed + N: reproducible per trial, and distinct across workers (which would
        otherwise all draw the same first parameters from one seed)."""
        seed = self.sampler_config.get("seed") if self.sampler_config else None
        if seed is None or self.grid is not None:  # GridSampler's seed orders the grid: one for all trials
            return
        study.sampler = instantiate(
            self.sampler_config, seed=int(seed) + number, _execution_whitelist_=OPTUNA_TARGETS
        )

    def _fail_stale_trials(self, study: optuna.Study) -> None:
        """Fail the trials of dead workers (sweep/liveness.py). In a grid sweep, each one's point is queued
        again: Optuna's GridSampler counts a failed trial's point as visited, so the grid would never be
        completed and, once every point was visited, it re-runs a random finished one instead (optuna
        4.x `GridSampler.before_trial`). Other samplers simply go on sampling."""
        for number in fail_stale_trials(study):
            if self.grid is not None:
                params = study.trials[number].params
                study.enqueue_trial(params, user_attrs={"retry_of": number})
                log.info("Grid point of interrupted trial %d queued again: %s", number, params)

    def _enqueue_new(self, study: optuna.Study) -> None:
        """Queue each configured parameter set once per study (a resumed sweep does not queue it again)."""
        for params in self.enqueue_trials:
            study.enqueue_trial(params, skip_if_exists=True)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result) -> bool:
        """Record one job's outcome; True if the trial counts as finished (complete or pruned)."""
        try:
            values = objective_values(result.return_value, self.objectives)
        except Exception as error:  # the job raised: JobReturn re-raises it here
            # src.train raises JobFailed("<original exception type>: <message>") for failed jobs
            message = (
                str(error) if isinstance(error, JobFailed | JobLost) else f"{type(error).__name__}: {error}"
            )
            self._fail(study, trial, message)
            return False
        record_cost(trial, result.return_value)
        attrs = stored_trial(study, trial).user_attrs
        if PRUNED_AT in attrs:
            tell(study, trial, state=TrialState.PRUNED)
            log.info("Trial %d pruned at step %s", trial.number, attrs[PRUNED_AT])
            return True
        if not all(math.isfinite(v) for v in values):
            trial.set_user_attr(FAIL_REASON, f"objective is {values}")
            tell(study, trial, state=TrialState.FAIL)
            return False
        tell(study, trial, values=values)
        return True

    @staticmethod
    def _fail(study: optuna.Study, trial: optuna.Trial, message: str) -> None:
        reason = redact(message)[:2000]  # stored in the study and shown by sweep.report: no secrets
        trial.set_user_attr(FAIL_REASON, reason)
        tell(study, trial, state=TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, reason)

    def _write_results(self, study: optuna.Study) -> None:
        if self.noise_off is None:
            record_noise_floor(study, study.get_trials(deepcopy=False))
        write_results(study, Path(self.sweeper.config.hydra.sweep.dir), self.objectives)
