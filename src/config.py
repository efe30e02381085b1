"""Typed config schemas for every group, registered in Hydra's ConfigStore, and `compose`, which builds a
run's config outside a Hydra app.

Structured configs make Hydra refuse unknown keys and ill-typed values itself ("Key 'learnin_rate' not in
'OptimConfig'"); `validate` (src/config_checks.py) adds the value checks a type cannot express. ConfigError
(src/errors.py) and `validate` are importable from here, where the schemas they check live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from src.config_checks import LLAMA_PROJECTIONS
from src.config_checks import sharded_launch as sharded_launch  # re-exported: the model loader asks it too
from src.config_checks import validate as validate
from src.errors import ConfigError as ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config groups (train.yaml and its folders)


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
