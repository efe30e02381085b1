"""Parameter counts and the memory a run needs, from the model's architecture (conf/model) alone."""

from __future__ import annotations

from dataclasses import dataclass

from src.config import ConfigError
from src.patches import CpuLogProbs

GIB = 2**30
NF4_BITS = 4 + 0.127  # 4-bit codes + double-quantized absmax constants (block 64, second level 256)
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}
ADAMW_BYTES = 8  # two fp32 moments per trainable parameter (adamw_8bit: 2)


@dataclass
class Shapes:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool

    @classmethod
    def from_architecture(cls, arch: dict) -> Shapes:
        heads = arch["num_attention_heads"]
        return cls(
            hidden=arch["hidden_size"],
            intermediate=arch["intermediate_size"],
            layers=arch["num_hidden_layers"],
            heads=heads,
            kv_heads=arch.get("num_key_value_heads", heads),
            head_dim=arch.get("head_dim") or arch["hidden_size"] // heads,
            vocab=arch["vocab_size"],
            tied=arch.get("tie_word_embeddings", False),
            qkv_bias=arch.get("model_type") == "qwen2",
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each Linear in one decoder layer."""
        q, kv, h, i = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.hidden,
            self.intermediate,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }


def count_parameters(shapes: Shapes) -> dict[str, int]:
    linear = sum(i * o for i, o in shapes.projections().values())
    bias = (shapes.heads + 2 * shapes.kv_heads) * shapes.head_dim if shapes.qkv_bias else 0
    norms = 2 * shapes.hidden
    embeddings = shapes.vocab * shapes.hidden * (1 if shapes.tied else 2)
    return {
        "linear": shapes.layers * linear,  # what 4-bit quantization applies to
        "other": shapes.layers * (bias + norms) + shapes.hidden + embeddings,  # embeddings, norms, biases
    }


def lora_parameters(shapes: Shapes, lora) -> int:
    """Trainable parameters of the adapter, counted as PEFT counts them (checked on the meta device):
    r × (in + out) per adapted projection, plus DoRA's magnitude (one per output feature), plus full copies
    of modules_to_save. all-linear adapts every projection (PEFT leaves the output head out)."""
    projections = shapes.projections()
    targets = list(projections) if lora.target_modules == "all-linear" else list(lora.target_modules)
    unknown = set(targets) - set(projections)
    if unknown:
        raise ConfigError(f"lora.target_modules {sorted(unknown)} are not projections of this model.")
    per_layer = sum(lora.r * (projections[t][0] + projections[t][1]) for t in targets)
    if lora.use_dora:
        per_layer += sum(projections[t][1] for t in targets)
    saved = shapes.vocab * shapes.hidden * len(set(lora.modules_to_save))  # embed_tokens, lm_head
    return shapes.layers * per_layer + saved


# TRL's fused LM head (what this project's trainer uses) scores tokens in tiles of at most 4096 tokens ×
# 32768 vocabulary entries, in fp32 (trl.kernels.chunked_logprob / trl.trainer.utils); full logits are never
# materialised. On CPU src/patches.py::CpuLogProbs replaces it: it keeps the fp32 log-softmax of every labelled
# position for backward and, CpuLogProbs.ROWS positions at a time, about 18 bytes per position and vocabulary
# entry of temporaries (bf16 and fp32 logits, log-softmax, probabilities and their product for the entropy).
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768
CPU_HEAD_TEMPORARY_BYTES = 18


def layer_activation_bytes(shapes: Shapes) -> int:
    """Bytes one decoder layer keeps for backward, per token, in a QLoRA run (PEFT LoRA on the 7 projections
    over bitsandbytes 4-bit layers, bf16 autocast). Each term was checked against the tensors autograd saves
    (torch.autograd.graph.saved_tensors_hooks, SmolLM2-135M, 8 × 206 tokens: 50.7 kB per token and layer
    measured, 49.9 kB from this formula):
    - bf16: the input each 4-bit projection casts and keeps (q, k, v, gate, up: hidden; o: q width; down:
      intermediate), the same again for LoRA's dropout outputs, and attention's q and k before and after
      rotary, v and its output (3 q + 3 kv);
    - fp32: the residual stream around the two norms (prepare_model_for_kbit_training upcasts embeddings and
      norms, so it stays fp32: 3 × hidden) and the MLP's gate, up and activation (LoRA's fp32 update is
      added to them: 3 × intermediate)."""
    h, i = shapes.hidden, shapes.intermediate
    q, kv = shapes.heads * shapes.head_dim, shapes.kv_heads * shapes.head_dim
    projection_inputs = 5 * h + q + i
    bf16 = 2 * projection_inputs + 3 * q + 3 * kv
    fp32 = 3 * h + 3 * i
    return 2 * bf16 + 4 * fp32


def activation_bytes(
    shapes: Shapes, micro_batch: int, length: int, checkpointing: bool, on_cpu: bool = False
) -> int:
    """Activations at the peak of a training step for micro_batch rows of `length` tokens (a full row: the
    planner plans for the longest batch). With gradient checkpointing each layer keeps only its fp32 input,
    and one layer at a time is recomputed in full. The loss adds the fused LM head's fp32 tile and its
    gradient, the fp32 copies of the head's weight chunk it makes forward and backward (on devices without
    fp32-output bf16 matmuls) and the fp32 hidden states it scores; on CPU (`on_cpu`, CpuLogProbs) the fp32
    log-softmax of every position (planned as if all carried a label) and one piece's temporaries."""
    tokens = micro_batch * length
    per_layer = tokens * layer_activation_bytes(shapes)
    layers = (
        shapes.layers * tokens * shapes.hidden * 4 + per_layer if checkpointing else shapes.layers * per_layer
    )
    if on_cpu:
        head = (
            tokens * shapes.vocab * 4
            + min(tokens, CpuLogProbs.ROWS) * shapes.vocab * CPU_HEAD_TEMPORARY_BYTES
            + tokens * shapes.hidden * 4
        )
    else:
        head = (
            2 * min(tokens, HEAD_TILE_TOKENS) * min(shapes.vocab, HEAD_TILE_VOCAB) * 4
            + 2 * shapes.hidden * min(shapes.vocab, HEAD_TILE_VOCAB) * 4
            + tokens * shapes.hidden * 4
        )
    return layers + head


# On CPU the peak resident set size exceeds the tensors counted here by what glibc's arenas keep of freed
# blocks and oneDNN's scratch buffers: 0.24–0.51 GiB over the four SmolLM2 runs measured for
# docs/benchmarks.md (python -m src.bench "bench.variants=[ours]" …), so plans for CPU runs add 0.3 GiB.
# (On GPU the planner compares with torch.cuda.max_memory_allocated, which the CUDA context is not part of.)
CPU_RUNTIME_BYTES = 0.3 * GIB


def plan(cfg, micro_batch: int | None = None, on_cpu: bool = False) -> dict:
    arch = cfg.model.architecture
    if not arch:
        raise ConfigError(
            f"model {cfg.model.name} has no `architecture` in its conf/model file to plan from."
        )
    shapes = Shapes.from_architecture(dict(arch))
    counts = count_parameters(shapes)
    total = counts["linear"] + counts["other"]
    lora = cfg.lora
    trainable = lora_parameters(shapes, lora) if lora.enabled else total
    quantized = cfg.memory.load_in_4bit
    weight_bytes = BYTES[cfg.model.dtype]
    weights = counts["linear"] * NF4_BITS / 8 if quantized else counts["linear"] * weight_bytes
    # prepare_model_for_kbit_training upcasts the unquantized parameters (embeddings, norms) to fp32
    weights += counts["other"] * (4 if quantized else weight_bytes)
    adapter = trainable * 4 if lora.enabled else 0
    gradients = trainable * (4 if lora.enabled else weight_bytes)
    optimizer = trainable * (2 if "8bit" in cfg.optim.optimizer else ADAMW_BYTES)
    b = micro_batch or cfg.memory.per_device_train_batch_size
    length = cfg.data.max_length
    act = {ckpt: activation_bytes(shapes, b, length, ckpt, on_cpu) for ckpt in (False, True)}
    static = weights + adapter + gradients + optimizer + (CPU_RUNTIME_BYTES if on_cpu else 0)
    ckpt = cfg.memory.gradient_checkpointing
    peak = {c: static + act[c] for c in (False, True)}
    return {
        "total_params": total,
        "trainable_params": trainable,
        "weights": weights,
        "adapter": adapter,
        "gradients": gradients,
        "optimizer": optimizer,
        "runtime": CPU_RUNTIME_BYTES if on_cpu else 0,
        "activations": act[False],
        "activations_checkpointed": act[True],
        "peak_without_checkpointing": peak[False],
        "peak_with_checkpointing": peak[True],
        # "auto" (not yet resolved against a budget): the larger, i.e. what it takes to run without
        "peak": peak[True] if ckpt is True else peak[False],
        "micro_batch": b,
    }


def largest_micro_batch(cfg, budget_bytes: float, limit: int = 1024) -> int:
    best = 0
    for b in range(1, limit + 1):
        if plan(cfg, b)["peak"] > budget_bytes:
            break
        best = b
    return best
