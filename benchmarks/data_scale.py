"""The data stage at the scale users bring: N generated multi-turn chats (3 user/assistant turns), tokenized by
`python -m src.prepare` (ours: assistant-only labels, refusals, report, cache) and by the library path
(`datasets` JSON loading, then `map` with batched `apply_chat_template` and batched encoding, no masks), each
with 1 process and with all cores, in fresh processes, one after another.

Each row of the CSV: wall seconds, rows/s, tokens/s, and peak memory: the largest sampled sum of `Pss_Anon`
(/proc/<pid>/smaps_rollup, every SAMPLE_SECONDS) over the process tree, so worker processes count, shared pages count
once and memory-mapped Arrow pages (which the kernel can drop) do not. Then ours a second time (the cache
hit), and ours broken down by part on the first 2,000 rows, in this process.

`--train-step` measures instead a training run of one optimizer step (`python -m src.train
optim.max_steps=1`, eval capped by data.max_eval_examples) on the N-row cache and on a 1,000-row one, each
prepared first by `python -m src.prepare` (kept in WORK/train-cache, so a rerun reads it): what of the
training run grows with the data. `--tokenizers-parallelism` sets TOKENIZERS_PARALLELISM for ours (the
tokenizer's own threads; default false, as `python -m src.train` sets it).

    python benchmarks/data_scale.py                       # N = 200,000 (587 MB of JSONL)
    python benchmarks/data_scale.py --rows 50000 --out benchmarks/data_scale_50k.csv
    python benchmarks/data_scale.py --train-step --out benchmarks/data_scale_train_step.csv
    python benchmarks/data_scale.py --rows 20000 --processes 1 --tokenizers-parallelism true

Figures and the CPU they came from: docs/benchmarks.md, "Data at scale"."""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `src`, as `python -m src.prepare` from ROOT imports it
# Reading smaps_rollup walks each process's page tables: ~77 ms of CPU per sample of a 3-process tree
# tokenizing 40,000 rows (2-core AMD EPYC). Every 0.2 s that took ~40% of a core from the measured command,
# which slowed the runs using both cores (2 worker processes) and not the 1-process ones; every 1 s it
# takes ~8%, and the data stage's peak (its workers' steady state) lasts minutes.
SAMPLE_SECONDS = 1.0
WORDS = "the a of to and in is it that for on with as was be by this are or at from but not have can".split()
WORDS += "model data token answer question reason example value result train learn number list point".split()


def write_chats(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` chats of 3 turns: questions of ~40 words, answers of ~150 (about 700 SmolLM2 tokens a row)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for index in range(rows):
            messages = []
            for turn in range(3):
                question = " ".join(rng.choices(WORDS, k=rng.randint(30, 50)))
                answer = " ".join(rng.choices(WORDS, k=rng.randint(120, 180)))
                messages.append({"role": "user", "content": f"Q{index}.{turn}: {question}?"})
                messages.append({"role": "assistant", "content": answer.capitalize() + "."})
            handle.write(json.dumps({"messages": messages}) + "\n")


def tree_pss_anon_kb(pid: int) -> int:
    """Pss_Anon of a process and all its descendants, in kB (0 for those gone meanwhile)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measured(command: list[str], env: dict[str, str]) -> dict:
    """Run `command`; its wall seconds, peak process-tree Pss_Anon (GB) and its output (stdout and stderr,
    through a file: a training run's logs would fill a pipe nobody reads while it runs)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        peak = 0
        while True:
            peak = max(peak, tree_pss_anon_kb(process.pid))
            try:  # the end is seen at once, not at the next sample
                process.wait(timeout=SAMPLE_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - started
        log.seek(0)
        output = log.read()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-2000:]}")
    return {"wall_s": wall, "peak_pss_anon_gb": peak / 1e6, "output": output}


def library_path(data: str, tokenizer_path: str, num_proc: int) -> None:
    """The library path in this process: JSON loading, batched apply_chat_template and encoding, no masks.
    Prints the rows and tokens it made."""
    import pyarrow.compute as pc
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    def encode(batch):
        texts = tokenizer.apply_chat_template(batch["messages"], tokenize=False)
        return {"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]}

    rows = load_dataset("json", data_files=data, split="train")
    tokenized = rows.map(
        encode, batched=True, num_proc=num_proc if num_proc > 1 else None, remove_columns=rows.column_names
    )
    batches = tokenized.with_format("arrow").iter(batch_size=10_000)
    tokens = sum(pc.sum(pc.list_value_length(batch["input_ids"])).as_py() for batch in batches)
    print(json.dumps({"rows": len(tokenized), "tokens": tokens}))


def parts(data: Path, tokenizer, rows: int = 2000) -> dict[str, float]:
    """Seconds per 1,000 rows of each part of ours, in this process: reading (JSON decode), normalising
    (to_messages), rendering (the template, spans included), encoding (one batched call with offsets),
    labelling (labels from offsets, pieces where a token straddles an answer's edge)."""
    from src.data.formats import to_messages
    from src.data.tokenization import labelled_tokens, text_and_spans

    with data.open() as handle:
        lines = [next(handle) for _ in range(rows)]
    clock = {}
    started = time.perf_counter()
    decoded = [json.loads(line) for line in lines]
    clock["reading"] = time.perf_counter() - started
    started = time.perf_counter()
    examples = [to_messages(row, "messages") for row in decoded]
    clock["normalising"] = time.perf_counter() - started
    started = time.perf_counter()
    rendered = [text_and_spans(tokenizer, example, True) for example in examples]
    clock["rendering"] = time.perf_counter() - started
    started = time.perf_counter()
    encodings = tokenizer(
        [text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    clock["encoding"] = time.perf_counter() - started
    started = time.perf_counter()
    for i, (text, spans) in enumerate(rendered):
        labelled_tokens(
            tokenizer,
            text,
            spans,
            {"input_ids": encodings["input_ids"][i], "offset_mapping": encodings["offset_mapping"][i]},
        )
    clock["labelling"] = time.perf_counter() - started
    clock.update(encoding_threads(tokenizer, [text for text, _ in rendered]))
    return {part: seconds * 1000 / rows for part, seconds in clock.items()}


def encoding_threads(tokenizer, texts: list[str], rounds: int = 5) -> dict[str, float]:
    """Seconds of the batched encoding with the tokenizer's own threads on and off (TOKENIZERS_PARALLELISM,
    which the Rust tokenizer reads at each call), the median of `rounds` alternated runs of each, so load
    from other jobs that changes meanwhile weighs on both alike."""
    times: dict[str, list[float]] = {"true": [], "false": []}
    for _ in range(rounds):
        for setting, measured_times in times.items():
            os.environ["TOKENIZERS_PARALLELISM"] = setting
            started = time.perf_counter()
            tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            measured_times.append(time.perf_counter() - started)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return {
        f"encoding, tokenizer threads {'on' if on == 'true' else 'off'}": sorted(t)[rounds // 2]
        for on, t in times.items()
    }


OVERRIDES = ["model=tiny", "data=jsonl", "data.max_length=2048", "data.eval_fraction=0.01"]
HEADER = ["path", "processes", "rows", "tokens", "wall_s", "rows_per_s", "tokens_per_s", "peak_pss_anon_gb"]
# one optimizer step of the tiny model on the CPU, eval capped, short generations
TRAIN_STEP = [
    "memory=bf16",
    "data.max_eval_examples=200",
    "optim.max_steps=1",
    "eval.task_examples=4",
    "eval.max_new_tokens=8",
    "monitor.num_samples=2",
    "monitor.progress_bar=false",
]


class Table:
    """The CSV, each row written as soon as it is measured: a long run keeps what it finished."""

    def __init__(self, path: Path):
        self.handle = path.open("w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(HEADER)

    def write(self, r: dict) -> None:
        counted = isinstance(r["tokens"], int)  # the training rows count no tokens
        speed = (
            [f"{r['rows'] / r['wall_s']:.0f}", f"{r['tokens'] / r['wall_s']:.0f}"] if counted else ["", ""]
        )
        self.writer.writerow(
            [r["path"], r["processes"], r["rows"], r["tokens"], f"{r['wall_s']:.1f}", *speed]
            + [f"{r['peak_pss_anon_gb']:.2f}"]
        )
        self.handle.flush()


def cache_folder(folder: Path, cache_dir: str) -> Path:
    """A data cache of its own that reads the converted base models of `cache_dir` as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "models").exists():
        (folder / "models").symlink_to(Path(cache_dir) / "models")
    return folder


def report_of(cache: Path) -> dict:
    """Rows and tokens of the one tokenized data set in `cache` (from its report.json)."""
    report = json.loads(next((cache / "data").glob("*/report.json")).read_text())
    return {
        "rows": report["train"]["examples"] + report["eval"]["examples"],
        "tokens": report["train"]["tokens"] + report["eval"]["tokens"],
    }


def compare(args, data: Path, base: str, cache_dir: str, env: dict, table: Table) -> None:
    """Ours (and its cache hit) against the library path, with each process count."""
    overrides = [*OVERRIDES, f"data.path={data}"]
    ours_env = {**env, "TOKENIZERS_PARALLELISM": args.tokenizers_parallelism}
    for processes in args.processes or (1, len(os.sched_getaffinity(0))):
        shutil.rmtree(args.work / f"cache-{processes}", ignore_errors=True)  # a miss first
        cache = cache_folder(args.work / f"cache-{processes}", cache_dir)
        ours = [sys.executable, "-m", "src.prepare", *overrides, f"data.num_proc={processes}"]
        run_env = {**ours_env, "SFT_CACHE_DIR": str(cache)}
        run = measured(ours, run_env)
        made = report_of(cache)
        table.write({"path": "ours", "processes": processes, **made, **run})
        table.write({"path": "ours, cache hit", "processes": processes, **made, **measured(ours, run_env)})
        shutil.rmtree(cache)
        library_cache = args.work / f"hf-{processes}"
        library = [sys.executable, __file__, "--library-run", str(data), base, str(processes)]
        run = measured(library, {**env, "HF_DATASETS_CACHE": str(library_cache)})
        made = json.loads([line for line in run["output"].splitlines() if line.startswith("{")][-1])
        table.write({"path": "library", "processes": processes, **made, **run})
        shutil.rmtree(library_cache, ignore_errors=True)


def train_step(args, data: Path, cache_dir: str, env: dict, table: Table) -> None:
    """One optimizer step on a 1,000-row cache and on the N-row one: the peak each run reaches."""
    cache = cache_folder(args.work / "train-cache", cache_dir)
    small = args.work / "chats-1000.jsonl"
    write_chats(small, 1000)
    for rows, path in ((1000, small), (args.rows, data)):
        overrides = [*OVERRIDES, *TRAIN_STEP, f"data.path={path}"]
        run_env = {**env, "SFT_CACHE_DIR": str(cache)}
        prepared = measured([sys.executable, "-m", "src.prepare", *overrides], run_env)
        state = "cache hit" if "read from the cache" in prepared["output"] else "tokenized"
        table.write(
            {
                "path": f"prepare for training ({state})",
                "processes": "all",
                "rows": rows,
                "tokens": "",
                **prepared,
            }
        )
        run_dir = args.work / f"train-{rows}"
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [sys.executable, "-m", "src.train", *overrides, f"hydra.run.dir={run_dir}"]
        table.write(
            {"path": "train 1 step", "processes": 1, "rows": rows, "tokens": "", **measured(command, run_env)}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sft-data-scale"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data_scale.csv")
    parser.add_argument(
        "--processes",
        type=lambda text: [int(n) for n in text.split(",")],
        help="e.g. 1,2 (default: 1 and all cores)",
    )
    parser.add_argument("--train-step", action="store_true", help="measure a 1-step training run instead")
    parser.add_argument("--tokenizers-parallelism", choices=("true", "false"), default="false")
    parser.add_argument(
        "--library-run", nargs=3, metavar=("DATA", "TOKENIZER", "NUM_PROC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.library_run:
        data, tokenizer_path, num_proc = args.library_run
        library_path(data, tokenizer_path, int(num_proc))
        return

    from omegaconf import OmegaConf

    from src.base_model import resolve_base
    from src.config import compose
    from src.tokenizer import load_tokenizer

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "chats.jsonl"
    write_chats(data, args.rows)  # the same bytes every time: a kept cache of them is read, not rebuilt
    cfg = OmegaConf.to_object(compose([*OVERRIDES, f"data.path={data}", "paths.output_dir=unused"]))
    base = resolve_base(cfg.model, cfg.paths.cache_dir)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    table = Table(args.out)
    if args.train_step:
        train_step(args, data, cfg.paths.cache_dir, env, table)
    else:
        compare(args, data, base, cfg.paths.cache_dir, env, table)
        for part, seconds in parts(data, load_tokenizer(cfg.model, base)).items():
            table.writer.writerow(
                [f"ours part: {part} (s per 1000 rows)", 1, 2000, "", f"{seconds:.3f}", "", "", ""]
            )
    table.handle.close()
    print(args.out.read_text())


if __name__ == "__main__":
    main()
