"""The trainer stage: the optim presets map to transformers schedules that do what their names promise, and
training is right on every CPU: evaluating never changes training, a step equals a plain autograd reference,
and the objective does not depend on batching.

Each test of training correctness forces the CPU-specific path it covers instead of relying on the machine
(docs/cpu-paths.md): `packed_4bit` makes bitsandbytes believe the CPU has AVX512-BF16, so its in-place
repacking of 4-bit weights for inference (the fault src/patches.py::keep_4bit_training_layout fixes) happens on
AVX2-only CPUs too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import get_scheduler

from src.compute import Compute
from src.data.tokenization import IGNORE_INDEX
from src.train import train
from src.trainer import training_arguments
from tests.conftest import TINY, compose_config, typed_config

# ---------------------------------------------------------------------------------------------------------
# From test_schedule.py

TOTAL = 200


def learning_rates(overrides, tmp_path):
    cfg = typed_config(["model=tiny", "memory=bf16", *overrides])
    args = training_arguments(cfg, tmp_path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    warmup = args.get_warmup_steps(TOTAL)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=TOTAL,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    rates = []
    for _ in range(TOTAL + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return cfg, warmup, rates


def test_cosine_peaks_after_warmup_and_ends_at_eta_min(tmp_path):
    cfg, warmup, rates = learning_rates(
        ["optim=cosine", "optim.warmup_ratio=0.05", "optim.eta_min=0.1"], tmp_path
    )
    peak = cfg.optim.learning_rate
    assert warmup == 10
    assert rates[0] == 0.0
    assert rates[warmup] == pytest.approx(peak)
    assert max(rates) == pytest.approx(peak)
    assert rates[TOTAL] == pytest.approx(0.1 * peak)
    # halfway through the decay the cosine is at the midpoint between peak and floor
    assert rates[warmup + (TOTAL - warmup) // 2] == pytest.approx(0.55 * peak, rel=1e-3)


def test_linear_decays_to_zero(tmp_path):
    cfg, warmup, rates = learning_rates(["optim=linear"], tmp_path)
    assert rates[warmup] == pytest.approx(cfg.optim.learning_rate)
    assert rates[TOTAL] == pytest.approx(0.0)


def test_constant_holds_after_warmup(tmp_path):
    cfg, warmup, rates = learning_rates(["optim=constant"], tmp_path)
    assert rates[warmup] == rates[TOTAL] == pytest.approx(cfg.optim.learning_rate)
    assert rates[warmup // 2] < cfg.optim.learning_rate


def test_training_arguments_use_current_names(tmp_path):
    cfg = typed_config(["model=tiny", "memory=qlora", "eval.steps=7"])
    args = training_arguments(cfg, tmp_path)
    assert args.eval_strategy == "steps" and args.eval_steps == args.save_steps == 7
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.warmup_steps == cfg.optim.warmup_ratio
    assert args.max_length == cfg.data.max_length and args.packing and args.packing_strategy == "bfd"
    assert args.gradient_accumulation_steps == 4 and args.per_device_train_batch_size == 4
    assert args.bf16  # 4-bit compute dtype


# ---------------------------------------------------------------------------------------------------------
# From test_training_correctness.py

NF4 = [
    "memory=qlora_cpu",
    "memory.gradient_checkpointing=false",
    "memory.per_device_train_batch_size=2",
    "memory.per_device_eval_batch_size=4",
]
FP32_COMPUTE = ["memory.bnb_4bit_compute_dtype=float32"]  # fp32 compute forced (AVX2's path, exact numbers)
BF16_COMPUTE = ["memory.bnb_4bit_compute_dtype=bfloat16"]  # AVX512-BF16's path (emulated on AVX2)


@pytest.fixture
def packed_4bit(monkeypatch):
    """bitsandbytes 0.50.2 decides at Linear4bit init whether the CPU has AVX512-BF16; say yes. On an AVX2-only
    CPU no packed kernel is registered, so inference then computes garbage there, but training must not care."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)


def lora_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


# ---------------------------------------------------------------------------------------------------------
# 4-bit weights on AVX512-BF16 CPUs: the layer's own weight never leaves bitsandbytes' training layout


def test_an_eval_forward_leaves_4bit_weights_in_the_training_layout_and_gradients_unchanged(packed_4bit):
    import bitsandbytes as bnb

    from src import stages

    cfg = OmegaConf.to_object(
        compose_config([*TINY, *NF4, *BF16_COMPUTE, "lora.dropout=0", "lora.target_modules=all-linear"])
    )
    base, _ = stages.build_tokenizer(cfg)
    model = stages.build_model(cfg, base)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and all(layer.support_avx512bf16_for_cpu for layer in layers)
    originals = [(layer.weight.data.clone(), layer.weight.quant_state.absmax.clone()) for layer in layers]
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))

    def gradients() -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # bitsandbytes' inference path: packs a copy, not the layer's weight
    assert all("_cpu_inference_copy" in layer.__dict__ for layer in layers)
    for layer, (data, absmax) in zip(layers, originals):
        assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
        assert torch.equal(layer.weight.data, data) and torch.equal(layer.weight.quant_state.absmax, absmax)
        assert layer.weight.quant_state.nested  # double quantization kept (packing drops it)
    after = gradients()
    b_matrices = [g for name, g in before.items() if "lora_B" in name]
    assert len(b_matrices) == 14 and all(g.abs().sum() > 0 for g in b_matrices)  # q/k/v/gate/up too
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert "_cpu_inference_copy" not in model.state_dict()  # the copy is never saved


@pytest.mark.skipif(
    not __import__("bitsandbytes").functional.has_avx512bf16(), reason="the packed kernel needs AVX512-BF16"
)
def test_the_packed_inference_copy_computes_what_the_training_layout_does():
    """On a CPU that has the packed kernel (AVX512-BF16), inference through the packed copy gives the
    training layout's logits within the packed layout's bf16 block scales. (On AVX2-only CPUs bitsandbytes
    never packs: that path is exercised by the forced tests above and below.)"""
    from src import stages

    cfg = typed_config([*TINY, *NF4, *BF16_COMPUTE, "lora.target_modules=all-linear"])
    base, _ = stages.build_tokenizer(cfg)
    model = stages.build_model(cfg, base).eval()
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        packed = model(input_ids=ids).logits.float()
        ids_grad = model.get_input_embeddings()(ids).requires_grad_()  # input that requires grad: unpacked
    training_layout = model(inputs_embeds=ids_grad).logits.detach().float()
    assert (packed - training_layout).norm() / training_layout.norm() < 2e-2


# ---------------------------------------------------------------------------------------------------------
# Evaluation invariance: measuring the baseline, evaluating, scoring the task and generating samples at
# every step end with the same LoRA weights as the same run without any of it


SHORT_RUN = [
    *TINY,
    "optim.max_steps=4",
    "lora.dropout=0.1",  # dropout draws from the global RNG: an eval that consumed randomness would show
    "eval.early_stopping_patience=0",
    "eval.load_best_model_at_end=false",
    "save.save_total_limit=1",
]
WITH_EVALUATION = [
    "eval.steps=1",
    "eval.before_training=true",
    "eval.reuse_baseline=false",
    "data.task_metric=json_exact_match",
    "monitor.samples_every_evals=1",
    "monitor.num_samples=2",
]
WITHOUT_EVALUATION = [
    "eval.steps=1000",
    "eval.before_training=false",
    "data.task_metric=none",
    "monitor.samples_every_evals=0",
    "monitor.num_samples=0",
]
VARIANTS = {
    "nf4": [*NF4, *BF16_COMPUTE],
    "nf4_fp32_compute": [*NF4, *FP32_COMPUTE],
    "bf16_weights": ["model.dtype=bfloat16"],
    "dora_nf4": [*NF4, *BF16_COMPUTE, "lora.use_dora=true"],
    "nf4_gradient_checkpointing": [*NF4, *BF16_COMPUTE, "memory.gradient_checkpointing=true"],
}


@pytest.mark.slow  # ~30 s per variant on one core: two short runs each
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_evaluation_leaves_training_unchanged(variant, packed_4bit, tmp_path):
    runs = {}
    for name, evaluation in (("with", WITH_EVALUATION), ("without", WITHOUT_EVALUATION)):
        overrides = [*SHORT_RUN, *VARIANTS[variant], *evaluation]
        metrics = train(compose_config(overrides, output_dir=tmp_path / name))
        assert metrics["global_step"] == 4
        runs[name] = lora_weights(tmp_path / name)
    with_evals = json.loads((tmp_path / "with" / "metrics.json").read_text())
    assert len(with_evals["eval_history"]) == 4 and with_evals["baseline_eval_loss"] is not None
    assert runs["with"].keys() == runs["without"].keys() and runs["with"]
    for key, value in runs["without"].items():
        torch.testing.assert_close(runs["with"][key], value, rtol=0, atol=1e-6, msg=key)


# ---------------------------------------------------------------------------------------------------------
# Gradient parity: our first optimizer step's LoRA gradients equal a plain PEFT forward/backward


def parity_rows() -> list[dict]:
    """Two training conversations of different answer lengths (a packed batch must weight tokens, not rows)
    and one held-out."""
    from src.builtin_data import extract_json_examples

    rows = extract_json_examples(3, seed=7)
    rows[1]["messages"][1]["content"] += " Done, the JSON above has every field."
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class FirstStepGradients:
    """Copies every trainable parameter's gradient just before the first optimizer step (after clipping,
    which the comparison switches off)."""

    def __init__(self):
        self.gradients: dict[str, torch.Tensor] | None = None

    def __getattr__(self, name):  # every other TrainerCallback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.gradients is None:
            self.gradients = {
                name.replace(".default", ""): p.grad.detach().float().clone()
                for name, p in model.named_parameters()
                if p.requires_grad
            }


def our_first_step(overrides: list[str], tmp_path: Path) -> tuple[dict[str, torch.Tensor], object, object]:
    """Our whole path (data stage, packing collator, patches, RunTrainer, TRL's fused loss) for one step;
    returns the gradients, the config and the model as it was built (before the step)."""
    from src import stages

    cfg = typed_config(overrides, output_dir=tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    base, tokenizer = stages.build_tokenizer(cfg)
    data = stages.build_data(cfg, tokenizer, tmp_path)
    model = stages.build_model(cfg, base)
    run = stages.build_run(cfg, Compute.of(cfg), model, tokenizer, data, tmp_path)
    capture = FirstStepGradients()
    run.trainer.add_callback(capture)
    run.train()
    assert capture.gradients
    return capture.gradients, cfg, base


def reference_gradients(cfg, base: str, rows: list[dict]) -> dict[str, torch.Tensor]:
    """The same step by hand: transformers + PEFT, each conversation tokenized on its own (the template's
    prompt with its generation header unlabelled, the answer and its end-of-turn token labelled), summed
    cross-entropy over every labelled token of the batch divided by their number."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = getattr(torch, cfg.model.dtype)
    compute = getattr(torch, cfg.memory.bnb_4bit_compute_dtype)
    quantization = (
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.memory.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=cfg.memory.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute,
        )
        if cfg.memory.load_in_4bit
        else None
    )
    torch.manual_seed(cfg.seed)  # the LoRA A matrices' init, as our model stage seeds it
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, quantization_config=quantization)
    lora = cfg.lora
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.r,
            lora_dropout=0.0,
            target_modules=lora.target_modules
            if isinstance(lora.target_modules, str)
            else list(lora.target_modules),
            use_dora=lora.use_dora,
            use_rslora=lora.use_rslora,
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(base)
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    for row in rows:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        answer = messages[-1]["content"] + "<|im_end|>"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        labels = torch.tensor([[IGNORE_INDEX] * len(prompt_ids) + answer_ids])
        logits = model(input_ids=ids, use_cache=False).logits.float()
        total = total + torch.nn.functional.cross_entropy(
            logits[0, :-1], labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum"
        )
        tokens += int((labels[0, 1:] != IGNORE_INDEX).sum())
    (total / tokens).backward()
    return {
        name.replace(".default", ""): p.grad.detach().float()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


PARITY_VARIANTS = {
    "nf4": [*NF4, *FP32_COMPUTE],
    "fp32_weights": ["model.dtype=float32"],
    "bf16_weights": ["model.dtype=bfloat16"],
    "dora_nf4": [*NF4, *FP32_COMPUTE, "lora.use_dora=true"],
    "rslora": ["lora.use_rslora=true"],
    "all_linear_nf4": [*NF4, *FP32_COMPUTE, "lora.target_modules=all-linear"],
}


def parity_overrides(train_file: Path, eval_file: Path) -> list[str]:
    return [
        *TINY,
        "data=jsonl",
        f"data.path={train_file}",
        f"data.eval_path={eval_file}",
        "data.max_length=256",
        "data.task_metric=none",
        "lora.dropout=0",
        "optim.max_steps=1",
        "optim.max_grad_norm=1e9",  # no clipping: the raw gradients are compared
        "eval.before_training=false",
        "eval.steps=1",
        "eval.early_stopping_patience=0",
        "monitor.num_samples=0",
        "save.adapter=false",
    ]


@pytest.mark.parametrize("variant", sorted(PARITY_VARIANTS))
def test_first_step_gradients_equal_a_plain_peft_reference(variant, tmp_path):
    rows = parity_rows()
    train_file, eval_file = (
        write_rows(tmp_path / "train.jsonl", rows[:2]),
        write_rows(tmp_path / "eval.jsonl", rows[2:]),
    )
    overrides = [*parity_overrides(train_file, eval_file), *PARITY_VARIANTS[variant]]
    ours, cfg, base = our_first_step(overrides, tmp_path / "run")
    reference = reference_gradients(cfg, base, rows[:2])
    assert ours.keys() == reference.keys() and len(ours) > 0
    # fp32 compute: fp32 precision; bf16 weights compute in bf16 on both paths (summed in other orders)
    tolerance = {"rtol": 2e-2, "atol": 1e-3} if variant == "bf16_weights" else {"rtol": 1e-4, "atol": 1e-6}
    nonzero = 0
    for name, gradient in reference.items():
        torch.testing.assert_close(ours[name], gradient, msg=name, **tolerance)
        nonzero += bool(gradient.abs().sum() > 0)
    assert nonzero >= len(reference) // 2  # B matrices (zero-initialised A products aside) carry gradient


def test_gradient_accumulation_2_equals_one_batch_twice_the_size(tmp_path):
    rows = parity_rows()
    train_file, eval_file = (
        write_rows(tmp_path / "train.jsonl", rows[:2]),
        write_rows(tmp_path / "eval.jsonl", rows[2:]),
    )
    common = [*parity_overrides(train_file, eval_file), *NF4, *FP32_COMPUTE]
    accumulated, _, _ = our_first_step(
        [*common, "memory.per_device_train_batch_size=1", "memory.gradient_accumulation_steps=2"],
        tmp_path / "accumulated",
    )
    one_batch, cfg, base = our_first_step(
        [*common, "memory.per_device_train_batch_size=2", "memory.gradient_accumulation_steps=1"],
        tmp_path / "one_batch",
    )
    for name, gradient in one_batch.items():
        torch.testing.assert_close(accumulated[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------
# The objective: eval loss is the token-weighted mean, whatever the eval batch size


def test_eval_loss_is_the_token_weighted_mean_at_every_eval_batch_size(tmp_path):
    """Four held-out answers of very different lengths: transformers' per-batch mean moved with the batch
    size (10.832 at 1 vs 10.809 at 2 on such a set); the token-weighted mean cannot."""
    from src.builtin_data import extract_json_examples

    rows = extract_json_examples(6, seed=3)
    long_answer = " ".join(["The JSON object has the fields name, age, job and city."] * 4)
    rows[3]["messages"][1]["content"] = "OK"
    rows[4]["messages"][1]["content"] = long_answer
    rows[5]["messages"][1]["content"] = "No"
    train_file, eval_file = (
        write_rows(tmp_path / "train.jsonl", rows[:2]),
        write_rows(tmp_path / "eval.jsonl", rows[2:]),
    )
    losses = {}
    for batch_size in (1, 2, 3, 4):
        from src import stages

        overrides = [
            *parity_overrides(train_file, eval_file),
            "model.dtype=float32",
            f"memory.per_device_eval_batch_size={batch_size}",
        ]
        run_dir = tmp_path / f"b{batch_size}"
        run_dir.mkdir()
        cfg = typed_config(overrides, output_dir=run_dir)
        base, tokenizer = stages.build_tokenizer(cfg)
        data = stages.build_data(cfg, tokenizer, run_dir)
        run = stages.build_run(cfg, Compute.of(cfg), stages.build_model(cfg, base), tokenizer, data, run_dir)
        losses[batch_size] = run.trainer.evaluate()["eval_loss"]
    reference = reference_eval_loss(cfg, base, rows[2:])
    for batch_size, loss in losses.items():
        assert loss == pytest.approx(reference, rel=1e-6), batch_size


def reference_eval_loss(cfg, base: str, rows: list[dict]) -> float:
    """Summed cross-entropy over every labelled answer token of the eval set, divided by their number, on the
    untouched model (a fresh LoRA adapter adds exactly zero)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:
            messages = row["messages"]
            prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(messages[-1]["content"] + "<|im_end|>", add_special_tokens=False)[
                "input_ids"
            ]
            ids = torch.tensor([prompt_ids + answer_ids])
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
            total += torch.nn.functional.cross_entropy(
                logits, torch.tensor(answer_ids), reduction="sum"
            ).item()
            tokens += len(answer_ids)
    return total / tokens


# ---------------------------------------------------------------------------------------------------------
# Which compute path `auto` takes on each CPU kind, forced both ways


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_compute_dtype_follows_the_cpu_kind(native_bf16, expected, monkeypatch):
    """AVX512-BF16/AMX CPUs compute QLoRA in bf16, AVX2-only CPUs in float32 (emulated bf16 is ~4x slower
    there); the resolved dtype also keys the cached baseline, so the two kinds never share one."""
    import src.model
    from src.baseline import baseline_key

    monkeypatch.setattr(src.model, "cpu_has_native_bf16", lambda: native_bf16)
    cfg = typed_config([*TINY, "memory=qlora_cpu", "use_cpu=true"])
    assert cfg.memory.bnb_4bit_compute_dtype == "auto"
    compute = Compute.of(cfg)
    assert (compute.on_cpu, compute.dtype, compute.device) == (True, expected, "cpu")
    key = baseline_key(cfg, Path("data-cache"), compute)
    monkeypatch.setattr(src.model, "cpu_has_native_bf16", lambda: not native_bf16)
    assert baseline_key(cfg, Path("data-cache"), Compute.of(cfg)) != key
