"""How the bench runs its variants: in rounds of one step each, in one process with one malloc arena."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable


class Rounds:
    """Runs the variants' steps in rounds, one step of each in turn (A B C … A B C …): each variant lives in
    its own thread and only the thread holding the turn runs, so work never overlaps, but drift of a shared
    machine (other jobs, frequency changes) falls on every variant alike instead of on whichever ran while it
    lasted (docs/benchmarks.md). `scoped[name]` makes a context manager that is entered whenever that variant
    holds the turn and exited when it passes it on, so a process-wide library patch stays its variant's alone.

    Raises ValueError when a name is listed twice."""

    def __init__(self, names: list[str], scoped: dict[str, Callable] | None = None):
        if len(set(names)) != len(names):
            raise ValueError(f"bench.variants: each variant once, got {names}")
        self.order, self.scoped = list(names), scoped or {}
        self._turn, self._finished = 0, set()
        self._cond = threading.Condition()
        self._entered = None

    def take(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.order[self._turn] == name)
        if name in self.scoped:
            self._entered = self.scoped[name]()
            self._entered.__enter__()

    def give(self, name: str, finished: bool = False) -> None:
        if self._entered is not None:
            self._entered.__exit__(None, None, None)
            self._entered = None
        with self._cond:
            if finished:
                self._finished.add(name)
            for k in range(1, len(self.order) + 1):
                following = (self._turn + k) % len(self.order)
                if self.order[following] not in self._finished:
                    self._turn = following
                    break
            self._cond.notify_all()

    def step_done(self, name: str) -> None:
        """Between two steps of `name`: let every other variant run one step."""
        self.give(name)
        self.take(name)

    def run(self, jobs: dict[str, Callable[[], dict]]) -> list[dict]:
        """Run every job (setup, steps calling `step_done`, gradient check) in its own thread; results in order.
        Raises RuntimeError naming the first variant that failed, once every thread has ended."""
        results, errors = {}, {}

        def work(name: str) -> None:
            self.take(name)
            try:
                results[name] = jobs[name]()
            except BaseException as error:  # reported after every thread ended, so none waits forever
                errors[name] = error
            finally:
                self.give(name, finished=True)

        threads = [threading.Thread(target=work, args=(name,), name=f"bench-{name}") for name in self.order]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, error in errors.items():
            raise RuntimeError(f"bench variant {name} failed: {error}") from error
        return [results[name] for name in self.order]


def one_malloc_arena(argv: list[str]) -> None:
    """Run `python -m src.bench <argv>` with glibc's malloc limited to one arena (MALLOC_ARENA_MAX=1),
    re-executing it once if need be (Linux only; returns when the limit already holds). glibc reads the limit
    when a thread first needs an arena, which torch and tokenizers threads may already have done, so setting
    it later (mallopt) does not hold; with one arena per thread the variants' threads keep several steps of
    freed activations (figures: docs/benchmarks.md). One thread runs at a time, so the shared lock costs
    nothing."""
    if os.environ.get("MALLOC_ARENA_MAX") != "1" and sys.platform == "linux":
        os.environ["MALLOC_ARENA_MAX"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "src.bench", *argv])
