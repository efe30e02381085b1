"""K sweep trials at once per GPU, without a batch barrier: K worker processes per GPU on one Optuna study.

    python -m sweep.workers --per-device 4 -- hparams_search=default
    python -m sweep.workers --per-device 2 --devices 0,1 -- hparams_search=default model=qwen2_5_1_5b

starts `python -m src.train -m <overrides>` K times per GPU (K times in all when no GPU is visible), each
worker pinned to its GPU (CUDA_VISIBLE_DEVICES) and given an equal share of the cores (OMP_NUM_THREADS),
all on the study the overrides name; it prefixes their output with the worker's name, adds each worker's
output to <sweep dir>/workers/<name>.log, forwards Ctrl-C, waits, and exits non-zero if any worker failed.

Why workers, not hydra.sweeper.n_jobs: the sweeper asks n_jobs trials, hands them to Hydra's launcher as one
batch and gets the batch's results back together (Launcher.launch returns a list; the joblib launcher is one
joblib.Parallel call), so a pruned or short trial's slot sits idle until the batch's longest trial ends. An
asynchronous launcher would need a sweeper loop that tells results one by one, i.e. a second sweeper. A
worker runs one trial at a time (n_jobs=1) and asks the study for the next as soon as its trial ends, and
everything workers must agree on already lives in the study's storage and in the sweeper: n_trials as a
total and races for the last place (sweep.places), dead workers' trials (sweep.liveness), one best trial
reported by all. This module therefore only starts, pins, watches and stops processes. A worker's trials run
in its own process one after another, so a GPU holds K models at a time; each worker frees its trial's
memory before the next (src.train's release_memory). The trials share the caches as any parallel trials
do: the tokenized data behind a file lock (src/data/cache.py), the baseline written atomically but unlocked
(src/baseline.py: workers whose first trials start together may each measure it once, with equal results).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SWEEPER = (
    "sft_optuna_sweeper"  # the only sweeper whose processes can share a study (hydra/sweeper=sft_optuna)
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's CPU thread pools read these at start
STOP_GRACE_SECONDS = 10.0  # after a forwarded Ctrl-C, how long a worker may take to stop before SIGTERM


@dataclass
class Worker:
    """One sweep process: its name in log lines and the environment it gets on top of this one's."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


def thread_budget() -> int:
    """The CPU threads all workers may use together: OMP_NUM_THREADS if set, else the cores this process may
    run on (its affinity, which taskset, cgroups or SLURM may have narrowed)."""
    with contextlib.suppress(KeyError, ValueError):
        return max(int(os.environ["OMP_NUM_THREADS"]), 1)
    with contextlib.suppress(AttributeError):  # no sched_getaffinity on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def plan_workers(devices: list[str], per_device: int, threads: int) -> list[Worker]:
    """`per_device` workers for each GPU in `devices` (CUDA_VISIBLE_DEVICES entries), or `per_device` CPU
    workers when the list is empty; `threads` divided evenly among them, at least one each, so K workers do
    not oversubscribe the cores (each would otherwise start one thread per core)."""
    slots = [(f"gpu{d}", {"CUDA_VISIBLE_DEVICES": d}) for d in devices] or [("cpu", {})]
    share = str(max(threads // (len(slots) * per_device), 1))
    return [
        Worker(f"{name}/{k}", {**pin, **dict.fromkeys(THREAD_VARIABLES, share)})
        for name, pin in slots
        for k in range(per_device)
    ]


class RefusedSweep(ValueError):
    """The overrides do not describe a sweep workers can share; its message is one sentence."""


def sweep_folder(overrides: list[str]) -> tuple[str, bool]:
    """(hydra.sweep.dir as every worker must see it, use_cpu) from the overrides, composed once here.

    Hydra's default sweep folder has a timestamp and would differ per worker (and with it a storage URL that
    names it), so the resolved folder is given to every worker. Sweep overrides (`a=1,2`, `tag(…)`) are left
    out of this composition: they are the sweeper's, and composing them outside -m is refused by Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from src.config import compose

    if any(o.split("=", 1)[0].lstrip("+~") == "hydra.sweeper.n_jobs" for o in overrides):
        raise RefusedSweep(
            "each worker runs one trial at a time (hydra.sweeper.n_jobs=1, so no batch waits for its slowest "
            "trial): drop hydra.sweeper.n_jobs and set the number of trials at once with --per-device"
        )
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        cfg = compose([o.input_line for o in parsed if not o.is_sweep_override()], with_hydra=True)
        sweeper = cfg.hydra.sweeper
        if SWEEPER not in str(sweeper.get("_target_", "")) or sweeper.get("storage") is None:
            raise RefusedSweep(
                "workers share one Optuna study: give a preset (hparams_search=default, tiny_cpu, …) or "
                "hydra/sweeper=sft_optuna with hydra.sweeper.storage"
            )
        return str(cfg.hydra.sweep.dir), bool(cfg.use_cpu)
    except (HydraException, OmegaConfBaseException) as error:
        raise RefusedSweep(" ".join(line.strip() for line in str(error).splitlines()[:2])) from error


def worker_command(overrides: list[str], sweep_dir: str) -> list[str]:
    """One worker: the usual sweep command, its folder pinned, one trial at a time."""
    quoted = sweep_dir.replace("\\", "\\\\").replace("'", "\\'")
    return [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        *overrides,
        f"hydra.sweep.dir='{quoted}'",
        "hydra.sweeper.n_jobs=1",
    ]


def run_workers(workers: list[Worker], command: list[str], log_dir: Path) -> int:
    """Start every worker, relay its output line by line as `[name] line` (and whole to log_dir/<name>.log),
    wait for all; 0 if all succeeded, else the first failed worker's exit status (130 after Ctrl-C).

    Each worker is its own process group, so a terminal's Ctrl-C reaches it once, through this process: the
    first Ctrl-C (or SIGTERM) is passed on as SIGINT (the worker stops; the next sweep on this host fails its
    interrupted trial at once, sweep.liveness). Python drops a KeyboardInterrupt raised inside a finalizer
    ("Exception ignored in …"), so a worker still running STOP_GRACE_SECONDS later gets SIGTERM; a second
    Ctrl-C kills the workers at once."""
    log_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    processes: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []
    stops: list[float] = []  # when each Ctrl-C or SIGTERM arrived

    def send(sent: signal.Signals, why: str) -> None:
        with lock:
            print(f"[sweep.workers] {why}: sending {sent.name} to the workers", flush=True)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sent)

    def stop(signum: int, frame: object) -> None:
        stops.append(time.monotonic())
        send(signal.SIGINT if len(stops) == 1 else signal.SIGKILL, signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for worker in workers:
            process, relay = _start(worker, command, log_dir, lock)
            processes.append(process)
            relays.append(relay)
        escalated = False
        while any(process.poll() is None for process in processes):
            time.sleep(0.2)
            if stops and not escalated and time.monotonic() - stops[0] > STOP_GRACE_SECONDS:
                escalated = True
                send(signal.SIGTERM, f"still running {STOP_GRACE_SECONDS:.0f} s after SIGINT")
        for relay in relays:
            relay.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = [process.returncode for process in processes]
    for worker, code in zip(workers, codes):
        if code:
            how = f"was stopped by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
            print(f"[sweep.workers] worker {worker.name} {how}; its output: {log_dir}", flush=True)
    if stops:
        return 130
    return next((code if code > 0 else 128 - code for code in codes if code), 0)  # 128 + N: killed by N


def _start(
    worker: Worker, command: list[str], log_dir: Path, lock: threading.Lock
) -> tuple[subprocess.Popen, threading.Thread]:
    """The worker's process, in its own process group, and the thread relaying its output."""
    env = {**os.environ, **worker.env, "PYTHONUNBUFFERED": "1"}  # lines reach the relay as printed
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    log_file = log_dir / f"{worker.name.replace('/', '-')}.log"
    relay = threading.Thread(target=_relay, args=(worker.name, process.stdout, log_file, lock))
    relay.start()
    return process, relay


def _relay(name: str, stream: IO[str], log_file: Path, lock: threading.Lock) -> None:
    with open(log_file, "a") as log_stream:  # a resumed sweep adds to it
        for line in stream:
            log_stream.write(line)
            with lock:
                sys.stdout.write(f"[{name}] {line}")
                sys.stdout.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sweep.workers",
        description="K sweep workers per GPU (or K on the CPU) on one Optuna study: each runs one trial at a "
        "time and asks for the next as soon as it ends.",
        epilog="example: python -m sweep.workers --per-device 4 -- hparams_search=default",
    )
    p.add_argument(
        "--per-device", type=int, required=True, metavar="K", help="workers per GPU (or on the CPU)"
    )
    p.add_argument(
        "--devices",
        help="GPUs to use, as CUDA_VISIBLE_DEVICES entries (default: every visible GPU; none: the CPU)",
    )
    p.add_argument("overrides", nargs="*", help="the sweep's overrides, as for python -m src.train -m")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.per_device < 1:
        parser().error(f"--per-device {args.per_device}: give at least 1 worker per device")
    try:
        sweep_dir, use_cpu = sweep_folder(args.overrides)
    except RefusedSweep as error:
        print(f"sweep.workers: {error}.", file=sys.stderr)
        return 2
    from sweep.launch import visible_gpus

    if use_cpu:
        devices = []
    elif args.devices is not None:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    else:
        devices = visible_gpus()
    workers = plan_workers(devices, args.per_device, thread_budget())
    where = f"{len(devices)} GPU(s) ({', '.join(devices)})" if devices else "the CPU"
    print(
        f"[sweep.workers] {len(workers)} workers on {where}, {workers[0].env['OMP_NUM_THREADS']} CPU threads "
        f"each, sweep folder {sweep_dir}",
        flush=True,
    )
    return run_workers(workers, worker_command(args.overrides, sweep_dir), Path(sweep_dir) / "workers")


if __name__ == "__main__":
    sys.exit(main())
