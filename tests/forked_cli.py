"""`python -m <module> <args>` for the tests, without paying the libraries' import time on every command.

A run of the tiny model spends ~9 s of one core importing torch, transformers, TRL, PEFT, bitsandbytes and
datasets before it does anything, and the suite starts about a hundred such commands. Each pytest worker
therefore keeps one server process that has imported them once (`PRELOADED`, after the same process settings
`python -m src.train` makes first); a command runs in a fork of it: its own process, with the command's
arguments, working folder, environment, standard input, output and exit code, as `python -m` would give it.
What the fork shares with the server is only what the imports did.

A command gets a fresh interpreter instead (plain `subprocess.run`) where a fork could differ from one:
- its environment changes a variable that libraries read when they are imported (`READ_AT_IMPORT`: thread
  counts, CPU capability, Hugging Face settings, …);
- it runs from another folder than the repository root (a real `python -m` imports from there);
- it is not `python -m`, or `SFT_TESTS_FRESH_PROCESSES=1` is set (every command fresh, as before).
Tests that are about a process's own start (what a refusal imports, a killed run, two processes at once)
start their processes themselves."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOADED = (
    "src.train",
    "src.stages",
    "src.prepare",
    "src.chat",
    "sweep.optuna_sweeper",
    "sweep.report",
    "hydra_plugins.sft_optuna_sweeper.sft_optuna_sweeper",
)
READ_AT_IMPORT = (
    "OMP_",
    "MKL_",
    "ATEN_",
    "ONEDNN_",
    "KMP_",
    "TORCH",
    "PYTORCH",
    "CUDA",
    "HF_",
    "HUGGINGFACE",
    "TRANSFORMERS",
    "TOKENIZERS",
    "ACCELERATE",
    "BNB_",
    "BITSANDBYTES",
    "DATASETS",
    "TRL_",
    "PYTHON",
    "LD_",
    "MALLOC",
)
FRESH = "SFT_TESTS_FRESH_PROCESSES"

# The server: the process settings of src/train.py::run_cli that must precede the imports, the imports, then
# one command at a time from stdin (a JSON line): fork, answer "<pid>", wait, answer "<exit code>". The child
# takes the command's folder, environment and files, runs the module as __main__ and exits as python would.
SERVER = r"""
import json, os, runpy, sys, traceback
commands, answers = os.fdopen(0, "rb", buffering=0), os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # whatever an import prints goes to stderr, not into the answers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
for name in sys.argv[1:]:
    __import__(name)
while line := commands.readline():
    request = json.loads(line)
    pid = os.fork()
    if pid:
        answers.write(f"{pid}\n")
        answers.write(f"{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}\n")
        continue
    commands.close(); answers.close()
    os.chdir(request["cwd"])
    os.environ.clear(); os.environ.update(request["env"])
    for fd, (path, flags) in enumerate(
        [(request["stdin"], os.O_RDONLY), (request["stdout"], os.O_WRONLY), (request["stderr"], os.O_WRONLY)]
    ):
        opened = os.open(path, flags)  # may be `fd` itself: the command channel's 0 is closed above
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = request["cwd"]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    sys.exit(0)
"""


class _Server:
    """This worker's server process, started at its first command."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.environment: dict[str, str] = {}
        self.lock = threading.Lock()

    def start(self) -> None:
        self.environment = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, *PRELOADED],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=False,
        )

    def takes(self, env: dict[str, str], cwd: Path) -> bool:
        """Whether a fork of the server runs this command as a fresh interpreter would."""
        if os.environ.get(FRESH) or Path(cwd).resolve() != ROOT:
            return False
        base = self.environment if self.process else dict(os.environ)
        changed = {k for k in set(env) | set(base) if env.get(k) != base.get(k)}
        return not any(k.upper().startswith(READ_AT_IMPORT) for k in changed)

    def run(self, module: str, args: list[str], env: dict, input_text: str | None, timeout: float):
        if self.process is None or self.process.poll() is not None:
            self.start()
        with tempfile.TemporaryDirectory(prefix="forked-cli-") as folder:
            files = {name: Path(folder) / name for name in ("stdin", "stdout", "stderr")}
            files["stdin"].write_text(input_text or "")
            files["stdout"].touch()
            files["stderr"].touch()
            request = {"module": module, "args": args, "cwd": str(ROOT), "env": env}
            request.update({name: str(path) for name, path in files.items()})
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            pid = int(self._answer(30))
            try:
                code = int(self._answer(timeout))
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._answer(30)
                raise subprocess.TimeoutExpired([module, *args], timeout) from None
            out, err = (files[n].read_text(encoding="utf-8", errors="replace") for n in ("stdout", "stderr"))
        return subprocess.CompletedProcess([sys.executable, "-m", module, *args], code, out, err)

    def _answer(self, timeout: float) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("forked command", timeout)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the forked-command server died")
        return line.decode().strip()


_SERVER = _Server()


def run_python(
    command: list[str],
    cwd: Path | str = ROOT,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`subprocess.run(command, cwd=cwd, env=env, input=input, capture_output=True, text=True,
    timeout=timeout)`, run in a fork of this worker's server where that is the same (module docstring)."""
    full_env = dict(os.environ if env is None else env)
    module_command = len(command) > 2 and command[0] == sys.executable and command[1] == "-m"
    if module_command and _SERVER.takes(full_env, Path(cwd)):
        with _SERVER.lock:
            return _SERVER.run(command[2], list(command[3:]), full_env, input, timeout)
    return subprocess.run(
        command, cwd=cwd, env=full_env, input=input, capture_output=True, text=True, timeout=timeout
    )
