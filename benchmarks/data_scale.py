"""The data stage at the scale users bring: N generated multi-turn chats (3 user/assistant turns), tokenized by
`python -m src.prepare` (ours: assistant-only labels, refusals, report, cache) and by the library path
(`datasets` JSON loading, then `map` with batched `apply_chat_template` and batched encoding, no masks), each
with 1 process and with all cores, in fresh processes, one after another.

Each row of the CSV: wall seconds, rows/s, tokens/s, and peak memory: the largest sampled sum of `Pss_Anon`
(/proc/<pid>/smaps_rollup, every 0.2 s) over the process tree, so worker processes count, shared pages count
once and memory-mapped Arrow pages (which the kernel can drop) do not. Then ours a second time (the cache
hit), and ours broken down by part on the first 2,000 rows, in this process.

    python benchmarks/data_scale.py                       # N = 200,000 (~800 MB of JSONL)
    python benchmarks/data_scale.py --rows 50000 --out benchmarks/data_scale_50k.csv

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `src`, as `python -m src.prepare` from ROOT imports it
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
    """Run `command`; its wall seconds, peak process-tree Pss_Anon (GB) and its last stdout line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss_anon_kb(process.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    output = process.stdout.read()
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
    return {part: seconds * 1000 / rows for part, seconds in clock.items()}


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
    parser.add_argument(
        "--library-run", nargs=3, metavar=("DATA", "TOKENIZER", "NUM_PROC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.library_run:
        data, tokenizer_path, num_proc = args.library_run
        library_path(data, tokenizer_path, int(num_proc))
        return

    from omegaconf import OmegaConf

    from src.config import compose
    from src.model import load_tokenizer, resolve_base

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    data = args.work / "chats.jsonl"
    write_chats(data, args.rows)
    cores = len(os.sched_getaffinity(0))
    overrides = [
        "model=tiny",
        "data=jsonl",
        f"data.path={data}",
        "data.max_length=2048",
        "data.eval_fraction=0.01",
    ]
    cfg = OmegaConf.to_object(compose([*overrides, "paths.output_dir=unused"]))
    base = resolve_base(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, base)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["path", "processes", "rows", "tokens", "wall_s", "rows_per_s", "tokens_per_s"]
        writer.writerow([*header, "peak_pss_anon_gb"])

        def write(r: dict) -> None:  # each row as soon as it is measured: a long run keeps what it finished
            speed = [f"{r['rows'] / r['wall_s']:.0f}", f"{r['tokens'] / r['wall_s']:.0f}"]
            writer.writerow(
                [r["path"], r["processes"], r["rows"], r["tokens"], f"{r['wall_s']:.1f}", *speed]
                + [f"{r['peak_pss_anon_gb']:.2f}"]
            )
            handle.flush()

        for processes in args.processes or (1, cores):
            cache = args.work / f"cache-{processes}"
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "models").symlink_to(Path(cfg.paths.cache_dir) / "models")  # the converted base as is
            ours = [sys.executable, "-m", "src.prepare", *overrides, f"data.num_proc={processes}"]
            run_env = {**env, "SFT_CACHE_DIR": str(cache)}
            run = measured(ours, run_env)
            report = json.loads(next((cache / "data").glob("*/report.json")).read_text())
            tokens = report["train"]["tokens"] + report["eval"]["tokens"]
            rows = report["train"]["examples"] + report["eval"]["examples"]
            write({"path": "ours", "processes": processes, "rows": rows, "tokens": tokens, **run})
            again = measured(ours, run_env)
            write(
                {"path": "ours, cache hit", "processes": processes, "rows": rows, "tokens": tokens, **again}
            )
            shutil.rmtree(cache)
            library_cache = args.work / f"hf-{processes}"
            library = [sys.executable, __file__, "--library-run", str(data), base, str(processes)]
            run = measured(library, {**env, "HF_DATASETS_CACHE": str(library_cache)})
            made = json.loads(run["output"].strip().splitlines()[-1])
            write({"path": "library", "processes": processes, **made, **run})
            shutil.rmtree(library_cache, ignore_errors=True)
        for part, seconds in parts(data, tokenizer).items():
            writer.writerow(
                [f"ours part: {part} (s per 1000 rows)", 1, 2000, "", f"{seconds:.3f}", "", "", ""]
            )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
