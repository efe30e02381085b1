"""Typed config schemas for every group, registered in Hydra's ConfigStore, and the checks that turn
bad input into one clear sentence before any weights load.

Structured configs make Hydra refuse unknown keys and ill-typed values itself ("Key 'learnin_rate' not in
'OptimConfig'"); `validate` adds the value checks a type cannot express.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from src.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config groups (train.yaml and its folders)


LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRACKERS = ("mlflow", "wandb", "trackio")  # monitor.report_to (src/trackers.py)
SAVABLE_MODULES = ("embed_tokens", "lm_head")  # lora.modules_to_save: trained in full next to the adapter


@dataclass
class ModelConfig:
    name: str = MISSING  # Hub id or local folder (source=hub); a label otherwise
    source: str = MISSING  # hub | gguf | random
    revision: str | None = None  # Hub revision (branch, tag or commit)
    gguf_package: str | None = None  # Python package shipping the GGUF file (source=gguf, random)
    gguf_file: str | None = None
    dtype: str = MISSING  # bfloat16 | float16 | float32 | auto: weights' dtype when not quantized
    attn_implementation: str = (
        MISSING  # auto (flash_attention_2 on CUDA if installed, else sdpa) | sdpa | eager
    )
    trust_remote_code: bool = False
    chat_template: str | None = None  # override of the tokenizer's chat template: Jinja text or a .jinja file
    architecture: dict[str, Any] | None = None  # transformers config kwargs: random weights, and the planner
    random_seed: int = 0  # source=random: weight initialisation seed


@dataclass
class LoraConfigSchema:
    enabled: bool = MISSING  # false = full fine-tuning (lora=none)
    r: int = MISSING
    alpha: int | None = None  # null = 2 × r
    dropout: float = 0.0  # 0.05 measured no better than 0 within the seed noise (docs/benchmarks.md)
    bias: str = "none"  # none | all | lora_only
    # the projections to adapt, or all-linear (PEFT: every Linear layer but the output head); Any because
    # OmegaConf has no list-or-string type: validate() checks it
    target_modules: Any = field(default_factory=lambda: list(LLAMA_PROJECTIONS))
    use_dora: bool = False  # DoRA: a learned magnitude per output feature on top of LoRA's direction
    use_rslora: bool = False  # rsLoRA: scale alpha/sqrt(r) instead of alpha/r (stable at high rank)
    init: str = "default"  # default (PEFT's: Kaiming A, zero B) | gaussian | pissa | olora | loftq
    modules_to_save: list[str] = field(default_factory=list)  # fully trained too: embed_tokens, lm_head


@dataclass
class OptimConfig:
    learning_rate: float = 1e-4
    lr_scheduler_type: str = MISSING  # cosine | linear | constant (all after warmup)
    warmup_ratio: float = 0.05
    eta_min: float = 0.1  # cosine only: final learning rate as a fraction of the peak
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    optimizer: str = "adamw_torch"  # any transformers optim name: adamw_torch, paged_adamw_8bit, adamw_8bit …
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs


@dataclass
class DataConfig:
    name: str = MISSING
    source: str = MISSING  # builtin | hub | local
    # Hub dataset id (source=hub), or local file(s): a path or glob, a comma list (quoted inside -m, where an
    # unquoted comma list is a sweep), or a list: data.path=[a.jsonl,b.jsonl]
    path: Any = None
    revision: str | None = None  # Hub dataset revision (branch, tag or commit), source=hub only
    builtin_examples: int | None = None  # source=builtin: examples to generate (train + eval)
    format: str = MISSING  # auto | messages | sharegpt | prompt_completion | alpaca | text
    train_split: str = MISSING  # named training split (source=hub)
    eval_split: str | None = None  # named split (hub, or a save_to_disk DatasetDict folder) …
    eval_path: Any = None  # … or separate local file(s), given like path …
    eval_fraction: float = MISSING  # … or a held-out fraction of train, split with split_seed
    split_seed: int = 42
    max_train_examples: int | None = None  # cap after splitting (large Hub sets)
    max_eval_examples: int | None = None
    max_length: int = MISSING  # tokens per example (and per packed row)
    packing: bool = True  # pack examples into rows of max_length, isolated from each other
    packing_strategy: str = "bfd"  # bfd (whole examples) | bfd_split (long examples split, not truncated)
    eval_packing: bool = False  # eval unpacked so eval loss compares across trials
    assistant_only_loss: bool = True  # labels only on assistant tokens; false trains on the whole text
    on_bad_example: str = "fail"  # fail (stop at the first bad example, naming it) | skip (drop and count)
    num_proc: int | None = None  # tokenizer processes; null = the cores available, capped; not in cache key
    task_metric: str = MISSING  # none | exact_match | json_exact_match (scored on generated eval answers)


@dataclass
class MemoryConfig:
    load_in_4bit: bool = MISSING
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = MISSING
    # dtype the packed 4-bit weights are stored in: uint8 (bitsandbytes' default), or the compute dtype when
    # FSDP/DeepSpeed ZeRO-3 shard the model (they flatten all weights of a layer into one tensor of one dtype)
    bnb_4bit_quant_storage: str = MISSING
    # true | false | auto: recompute activations in backward (less memory, ~30% more compute); auto turns it
    # on only when the memory planner (src/plan/checkpointing.py) says the activations would not fit without it
    gradient_checkpointing: Union[bool, str] = MISSING  # noqa: UP007 (OmegaConf reads typing.Union)
    per_device_train_batch_size: int = MISSING  # b_micro
    gradient_accumulation_steps: int = MISSING  # G
    per_device_eval_batch_size: int = MISSING


@dataclass
class EvalConfig:
    # evaluate (and checkpoint) every N optimizer steps; below 1, a fraction of the run's total steps
    # (transformers' convention: 0.1 = ten evals per run, at the same phases whatever the run's length)
    steps: float = 15
    before_training: bool = True  # eval loss and task metric of the untouched base, as the baseline
    # read the untouched base's baseline from paths.cache_dir when measured before (src/baseline.py);
    # false measures it again in this run (and refreshes the cache)
    reuse_baseline: bool = True
    early_stopping_patience: int = 3  # evals without improvement before stopping; 0 disables
    early_stopping_threshold: float = 0.0  # minimum eval-loss improvement that counts
    # end on the best eval's weights (checkpoints line up with evals); false ends on the last step's weights
    load_best_model_at_end: bool = True
    task_examples: int = 32  # held-out examples generated and scored for data.task_metric
    max_new_tokens: int = 48


@dataclass
class MonitorConfig:
    logging_steps: int = 1
    sample_prompts: list[str] = field(default_factory=list)  # fixed prompts; empty = first eval prompts
    num_samples: int = 3  # how many eval prompts when sample_prompts is empty
    samples_every_evals: int = 2  # log generations at every Nth eval (0 = only before and after training)
    progress_bar: bool = True
    report_to: list[str] = field(
        default_factory=list
    )  # extra trackers: mlflow, wandb, trackio (src/trackers.py)
    experiment: str | None = None  # their experiment/group; null = the sweep's study name (or "sft-sweep")


@dataclass
class SaveConfig:
    adapter: bool = True
    merge: bool = False  # also write a standalone merged model (from a full-precision base)
    save_total_limit: int = 2  # checkpoints kept (the best one is always kept)


@dataclass
class PathsConfig:
    output_dir: str = MISSING  # this run's folder (Hydra's run dir)
    cache_dir: str = MISSING  # converted base models and tokenized datasets, shared by runs


@dataclass
class PlanConfig:
    gpu_gb: float = 24.0  # python -m src.plan: the GPU memory to check the run against


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfigSchema = field(default_factory=LoraConfigSchema)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 42
    use_cpu: bool = False  # train on CPU even when a GPU is present
    plan: PlanConfig = field(default_factory=PlanConfig)
    trial: int | None = None  # set by the Optuna sweeper: this job's trial number (folder trial_N)
    resume: bool = False  # continue the unfinished run in hydra.run.dir from its newest complete checkpoint


def register_configs() -> None:
    """Register the schemas so conf/ YAML files are validated against them when composed."""
    cs = ConfigStore.instance()
    if "train_schema.yaml" in cs.repo:  # once per process (the store is process-wide)
        return
    cs.store(name="train_schema", node=TrainConfig)
    for group, node in [
        ("model", ModelConfig),
        ("lora", LoraConfigSchema),
        ("optim", OptimConfig),
        ("data", DataConfig),
        ("memory", MemoryConfig),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=node)


CHOICES = {
    "model.source": {"hub", "gguf", "random"},
    "model.dtype": {"bfloat16", "float16", "float32", "auto"},
    "model.attn_implementation": {"auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"},
    "lora.bias": {"none", "all", "lora_only"},
    "lora.init": {"default", "gaussian", "pissa", "olora", "loftq"},
    "optim.lr_scheduler_type": {"cosine", "linear", "constant"},
    "data.source": {"builtin", "hub", "local"},
    "data.format": {"auto", "messages", "sharegpt", "prompt_completion", "alpaca", "text"},
    "data.task_metric": {"none", "exact_match", "json_exact_match"},
    "data.on_bad_example": {"fail", "skip"},
    "memory.bnb_4bit_quant_type": {"nf4", "fp4"},
    "memory.bnb_4bit_compute_dtype": {"bfloat16", "float16", "float32", "auto"},
    "memory.bnb_4bit_quant_storage": {"uint8", "bfloat16", "float16", "float32"},
}


def compose(overrides: list[str] | tuple[str, ...] = (), with_hydra: bool = False) -> DictConfig:
    """`train.yaml` composed with command-line overrides, as `python -m src.train` would, outside a Hydra
    app (plan, bench, replay, report and tests); `with_hydra` keeps the `hydra` node (sweeper settings)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=with_hydra)


def trains_on_cpu(cfg: Any) -> bool:
    """Whether this run trains on the CPU: asked for (use_cpu=true), or no CUDA device is there."""
    import torch

    return cfg.use_cpu or not torch.cuda.is_available()


def sharded_launch() -> bool:
    """accelerate launch was asked for FSDP or DeepSpeed (it tells its processes through these variables)."""
    return any(
        os.environ.get(v, "").lower() == "true" for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def saved_dataset(path: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset, or a DatasetDict of splits)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def local_files(spec: Any) -> list[Path]:
    """Expand paths and globs, given as a comma-separated string or a list; each must match a file or a
    save_to_disk folder."""
    parts = (
        str(spec).split(",") if isinstance(spec, str) else [str(p) for p in spec]
    )  # a list (or ListConfig)
    files: list[Path] = []
    for part in [p.strip() for p in parts if p.strip()]:
        matches = sorted(glob.glob(str(Path(part).expanduser())))
        if not matches:
            raise ConfigError(
                f"data.path: no file matches '{part}'; give an existing .jsonl/.json/.parquet/.csv file or glob "
                f"(relative paths start from {Path.cwd()})."
            )
        for match in matches:
            if Path(match).is_dir() and not saved_dataset(Path(match)):
                raise ConfigError(
                    f"data.path: '{match}' is a folder but not one written by datasets' save_to_disk; give "
                    f"its files or a glob (e.g. '{match}/*.jsonl')."
                )
        files.extend(Path(m) for m in matches)
    return files


def validate(cfg: Any) -> None:
    """Check values a type cannot express; raise ConfigError naming the field and the fix."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {sorted(allowed)}.")

    def positive(key: str, value: float, hint: str = "") -> None:
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{key}={value} must be a positive number{hint}.")

    model, lora, optim, data, memory = cfg.model, cfg.lora, cfg.optim, cfg.data, cfg.memory
    if memory.gradient_checkpointing not in (True, False, "auto"):
        raise ConfigError(
            f"memory.gradient_checkpointing={memory.gradient_checkpointing!r} must be true, false or auto."
        )
    looks_local = model.name.startswith(("/", "./", "../", "~")) or Path(model.name).expanduser().exists()
    if model.source == "hub" and looks_local and not Path(model.name).expanduser().is_dir():
        raise ConfigError(
            f"model.name={model.name} looks like a local path but is not an existing folder; give the folder "
            "that holds config.json and the weights, or a Hub id such as Qwen/Qwen2.5-1.5B-Instruct."
        )
    if model.source in {"gguf", "random"} and not (model.gguf_package and model.gguf_file):
        raise ConfigError(f"model.source={model.source} needs model.gguf_package and model.gguf_file.")
    if model.source == "random" and not model.architecture:
        raise ConfigError("model.source=random needs model.architecture (transformers config kwargs).")
    if lora.enabled:
        positive("lora.r", lora.r, " (LoRA rank, e.g. 8, 16, 32 or 64)")
        if lora.alpha is not None:
            positive("lora.alpha", lora.alpha, " (or null for 2 × r)")
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"lora.dropout={lora.dropout} must be in [0, 1).")
        targets = lora.target_modules
        if targets != "all-linear" and not (
            isinstance(targets, list | tuple) and all(isinstance(t, str) for t in targets)
        ):
            raise ConfigError(
                f"lora.target_modules={targets!r} must be a list of projection names or all-linear."
            )
        if not targets:
            raise ConfigError(
                "lora.target_modules is empty; list the projections to adapt, e.g. [q_proj, v_proj], or all-linear."
            )
        known = (model.architecture or {}).get("model_type") in ("llama", "qwen2")  # their projection names
        if known and targets != "all-linear" and set(targets) - set(LLAMA_PROJECTIONS):
            raise ConfigError(
                f"lora.target_modules: {sorted(set(targets) - set(LLAMA_PROJECTIONS))} are not projections of "
                f"{model.name}; choose from {LLAMA_PROJECTIONS} or all-linear."
            )
        unknown = sorted(set(lora.modules_to_save) - set(SAVABLE_MODULES))
        if unknown:
            raise ConfigError(
                f"lora.modules_to_save: {unknown} cannot be trained in full here; use {list(SAVABLE_MODULES)}."
            )
        if lora.init in {"pissa", "loftq"} and memory.load_in_4bit:
            why = {
                "pissa": "PiSSA initialises from the SVD of full-precision weights, which 4-bit weights are not",
                "loftq": "LoftQ quantizes the full-precision base itself while it initialises the adapter",
            }[lora.init]
            raise ConfigError(
                f"lora.init={lora.init} cannot work on 4-bit weights: {why}; load the base unquantized "
                "(memory=bf16), or use lora.init=olora, which supports 4-bit weights."
            )
    elif memory.load_in_4bit:
        raise ConfigError(
            "lora=none (full fine-tuning) cannot train 4-bit quantized weights; add memory=bf16."
        )
    if (
        sharded_launch()
        and memory.load_in_4bit
        and memory.bnb_4bit_quant_storage != memory.bnb_4bit_compute_dtype
    ):
        raise ConfigError(
            f"FSDP/DeepSpeed shard 4-bit weights only when they are stored in the compute dtype: set "
            f"memory.bnb_4bit_quant_storage={memory.bnb_4bit_compute_dtype} (memory=fsdp_qlora does), "
            f"not {memory.bnb_4bit_quant_storage}."
        )
    positive("optim.learning_rate", optim.learning_rate, " (1e-4 is a good start for LoRA)")
    if not 0 <= optim.warmup_ratio < 1:
        raise ConfigError(
            f"optim.warmup_ratio={optim.warmup_ratio} must be in [0, 1) (0.03–0.10 is typical)."
        )
    if not 0 <= optim.eta_min <= 1:
        raise ConfigError(
            f"optim.eta_min={optim.eta_min} is a fraction of the peak learning rate: use [0, 1]."
        )
    if optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={optim.weight_decay} must be ≥ 0.")
    positive("optim.max_grad_norm", optim.max_grad_norm)
    if optim.max_steps <= 0:
        positive("optim.num_train_epochs", optim.num_train_epochs, " (or set optim.max_steps)")
    positive("data.max_length", data.max_length)
    if not 0 < data.eval_fraction < 1 and not (data.eval_split or data.eval_path):
        raise ConfigError(
            f"data.eval_fraction={data.eval_fraction} must be in (0, 1), or set data.eval_split."
        )
    if (model.chat_template or "").endswith(".jinja") and not Path(
        model.chat_template
    ).expanduser().is_file():
        raise ConfigError(
            f"model.chat_template: no file {model.chat_template} (a .jinja value names a file)."
        )
    if data.source == "local":
        if not data.path:
            raise ConfigError("data=jsonl needs data.path=/path/to/train.jsonl (globs and comma lists work).")
        local_files(data.path)
        if data.eval_path:
            local_files(data.eval_path)
    if data.source == "builtin" and not (data.builtin_examples or 0) > 0:
        raise ConfigError(
            f"data.source=builtin needs data.builtin_examples > 0 (got {data.builtin_examples})."
        )
    if data.num_proc is not None and data.num_proc < 1:
        raise ConfigError(
            f"data.num_proc must be at least 1, or null for the cores available (got {data.num_proc})."
        )
    if data.source == "hub" and not (isinstance(data.path, str) and data.path):
        raise ConfigError("data.source=hub needs data.path=<dataset id> (one id, not a list).")
    if data.revision and data.source != "hub":
        raise ConfigError(
            f"data.revision applies to Hub datasets only; drop it for data.source={data.source}."
        )
    if data.packing_strategy == "wrapped":
        raise ConfigError(
            "data.packing_strategy=wrapped cuts examples mid-way and lets packed examples attend to each other "
            "across their boundaries; use bfd (or bfd_split to split long examples instead of truncating them)."
        )
    if data.packing_strategy not in {"bfd", "bfd_split"}:
        raise ConfigError(
            f"data.packing_strategy={data.packing_strategy!r} is not one of ['bfd', 'bfd_split']."
        )
    positive("memory.per_device_train_batch_size", memory.per_device_train_batch_size)
    positive("memory.gradient_accumulation_steps", memory.gradient_accumulation_steps)
    positive("memory.per_device_eval_batch_size", memory.per_device_eval_batch_size)
    positive("eval.steps", cfg.eval.steps)
    if cfg.eval.steps > 1 and cfg.eval.steps != int(cfg.eval.steps):
        raise ConfigError(
            f"eval.steps={cfg.eval.steps} must be a whole number of steps, or a fraction of the run below 1."
        )
    if cfg.eval.early_stopping_patience < 0:
        raise ConfigError("eval.early_stopping_patience must be ≥ 0 (0 disables early stopping).")
    positive("monitor.logging_steps", cfg.monitor.logging_steps)
    for tracker in cfg.monitor.report_to:
        if tracker not in TRACKERS:
            raise ConfigError(
                f"monitor.report_to: {tracker!r} is not one of {list(TRACKERS)} (TensorBoard is always on)."
            )
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError(
                f"monitor.report_to=[{tracker}] needs the {tracker} package: pip install -e '.[{tracker}]'."
            )
    if cfg.save.save_total_limit < 1:
        raise ConfigError("save.save_total_limit must be ≥ 1 (the best checkpoint must be kept).")
    optimizers = _optimizer_names()
    if optim.optimizer not in optimizers:
        raise ConfigError(
            f"optim.optimizer={optim.optimizer!r} is not a transformers optimizer; e.g. {optimizers[:6]}."
        )
    positive("eval.max_new_tokens", cfg.eval.max_new_tokens)
    for key in ("eval.task_examples", "monitor.num_samples", "monitor.samples_every_evals", "seed"):
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}={_get(cfg, key)} must be ≥ 0.")


def _optimizer_names() -> list[str]:
    from transformers.training_args import OptimizerNames  # light import: no torch model code

    return [name.value for name in OptimizerNames]
