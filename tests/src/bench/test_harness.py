"""src.bench interleaves its variants' steps in rounds, one thread at a time (no model needed)."""

from __future__ import annotations

import contextlib
import threading

import pytest

from src.bench.harness import Rounds


def test_rounds_interleave_steps_one_variant_at_a_time():
    log, running = [], []
    turns = Rounds(["a", "b", "c"])

    def job(name: str, steps: int):
        def run():
            for step in range(steps):
                running.append(name)
                assert running == [name], running  # no other variant runs meanwhile
                log.append(f"{name}{step}")
                running.remove(name)
                turns.step_done(name)
            return {"variant": name}

        return run

    results = turns.run({"a": job("a", 3), "b": job("b", 1), "c": job("c", 2)})
    assert [r["variant"] for r in results] == ["a", "b", "c"]
    # b has one step: once it finishes, a and c keep alternating
    assert log == ["a0", "b0", "c0", "a1", "c1", "a2"]


def test_rounds_scope_a_patch_to_its_variant_and_report_failures():
    state = {"patched": False}

    @contextlib.contextmanager
    def patch():
        state["patched"] = True
        yield
        state["patched"] = False

    seen = {}
    threads_before = threading.active_count()  # pytest-xdist runs a thread of its own
    turns = Rounds(["ours", "plain"], scoped={"ours": patch})

    def job(name: str):
        def run():
            seen.setdefault(name, []).append(state["patched"])
            turns.step_done(name)
            seen[name].append(state["patched"])
            if name == "plain":
                raise ValueError("boom")
            return {"variant": name}

        return run

    with pytest.raises(RuntimeError, match="bench variant plain failed: boom"):
        turns.run({"ours": job("ours"), "plain": job("plain")})
    assert seen == {"ours": [True, True], "plain": [False, False]}
    assert not state["patched"] and threading.active_count() == threads_before  # every variant's thread ended
    with pytest.raises(ValueError, match="each variant once"):
        Rounds(["ours", "ours"])
