"""The reading-level model: a Hugging Face backbone with LoRA/QLoRA adapters and a small head.

The backbone is any ``AutoModel`` given by name or local path (a Mistral-7B on a GPU cluster,
SmolLM2-135M or all-MiniLM-L6-v2 from an installed package here). LoRA adapters (peft) sit on
the attention projections; with ``quant="4bit"`` the frozen base weights are NF4 through
bitsandbytes (QLoRA). The head is trained in full and kept *outside* the peft wrapper, so it is
saved and reloaded explicitly (the peft pitfall: a head that is not a ``modules_to_save`` entry
silently comes back freshly initialised).

Heads:
    ``attention``: learned queries attend over the masked token states, then a linear read-out.
    ``dense``: masked mean pooling, then a small MLP.

Both regress one number per window (MSE on the target); a book longer than one window is scored
by the mean of its windows' predictions (:func:`predict_windows`, :func:`predict`), or by the
head reading all of its windows' token states at once (:func:`predict_over_windows`: attention
over windows, one of the book-level aggregations R1 compares). An ensemble
of models scores a text by the plain mean of its members' predictions (:func:`average_members`).
The head reads standardised units: its output is multiplied by ``target_scale`` and shifted by
``target_mean`` (the training split's mean and standard deviation, set by the recipe), so a
fresh head starts near the training mean whatever the target's unit. Without that, a head
that starts at 0 and that AdamW moves by about the learning rate per step never reaches
targets in the hundreds (Lexile measures) in a run's few thousand steps.

What trains:
    LoRA adapters (``lora_r > 0``), every backbone weight (``full``), or the head alone
    (neither). Which states the head pools: the last layer's, the output of layer ``layer``
    (the backbone is cut after it: the layers above would cost time and, unused, break DDP),
    or with ``layer_mix`` a learned softmax mix of every layer's states up to that point
    (:class:`LayerMix`). :func:`param_groups` gives lower layers a smaller learning rate
    (layer-wise decay).

A saved model folder carries a model card, ``README.md`` (:class:`ModelCard`): what the model
is, what it was trained on (shards, their texts/scores versions), how well it did on
validation, and its limits. ``corpus eval`` refreshes its held-out section
(:func:`set_held_out_section`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catalog.errors import ConfigError
from catalog.rules import DEFAULT_SEQ_LEN, metric_label, metric_name
from train.backbones import resolve_backbone as _resolve

log = logging.getLogger(__name__)

HEADS = ("attention", "dense")
QUANTS = ("none", "4bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# LoRA targets per architecture (``config.model_type``): the attention projections.
LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    # MPNet names its projections q, k, v, o (peft has no entry for it); q, k, v as for BERT
    "mpnet": ["q", "k", "v"],
}

ADAPTER_FILE = "adapter.safetensors"
BACKBONE_FILE = "backbone.safetensors"  # full fine-tuning: the backbone's own weights
MIX_PREFIX = "mix."  # layer-mix weights are saved in the head file under this prefix
HEAD_FILE = "head.safetensors"
CONFIG_FILE = "model_config.json"
CARD_FILE = "README.md"
MIN_RELIABLE_N = 10  # metrics on fewer items than this are flagged as unreliable


@dataclass(frozen=True)
class ModelConfig:
    """What to build: backbone, head, adapters, quantisation.

    Attributes:
        backbone: A name from the backbone alias table (``all-minilm-l6-v2``, ``smollm2-135m``,
            ``all-mpnet-base-v2``) or a local folder with config.json and weights.
        head: ``attention`` (learned queries over token states) or ``dense`` (mean + MLP).
        quant: ``none`` (LoRA on full-precision weights) or ``4bit`` (NF4 QLoRA).
        lora_r: LoRA rank; 0 trains the head only (backbone frozen).
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: Dropout on the LoRA input.
        n_queries: Learned queries of the attention head.
        head_hidden: Hidden width of the dense head's MLP.
        gradient_checkpointing: Recompute backbone activations in backward (less memory).
        dtype: Compute dtype; ``auto`` is bf16 on a CUDA device that supports it, else fp32.
        lora_targets: Module names LoRA adapts (default: the architecture's attention
            projections, :data:`LORA_TARGETS`).
        full: Train every backbone weight (full fine-tuning); needs ``lora_r`` 0 and no 4-bit.
        layer: Pool the states after this layer (1-based; the backbone is cut there). None:
            the last layer.
        layer_mix: Pool a learned softmax-weighted mix of the embeddings' and every kept
            layer's states instead of one layer's.
        dropout: Dropout probability inside the backbone while training (None: the
            backbone's own, 0.1 in BERT-style models). 0 by default: a regression head
            fitted on states computed with dropout reads the states without it at evaluation
            as shifted; R1's systematic positive bias (+0.18 on held-out passages, +0.24 on
            the training passages themselves, but +0.01 and +0.07 with dropout left on at
            evaluation) was exactly that.
        target_mean: The head's output is shifted by this (the training targets' mean).
        target_scale: ... after being multiplied by this (their standard deviation).
    """

    backbone: str
    head: str = "attention"
    quant: str = "none"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    n_queries: int = 4
    head_hidden: int = 256
    gradient_checkpointing: bool = False
    dtype: str = "auto"
    lora_targets: tuple[str, ...] = field(default=())
    full: bool = False
    layer: int | None = None
    layer_mix: bool = False
    dropout: float | None = 0.0
    target_mean: float = 0.0
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.backbone:
            raise ConfigError("backbone is empty: expected a backbone name or a local folder.")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, found {self.head!r}.")
        if self.quant not in QUANTS:
            raise ConfigError(f"quant must be one of {QUANTS}, found {self.quant!r}.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, found {self.dtype!r}.")
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ConfigError(
                f"lora_r must be >= 0 and lora_alpha > 0, found r={self.lora_r}, "
                f"alpha={self.lora_alpha}; use e.g. --lora-r 8."
            )
        if self.quant == "4bit" and self.lora_r == 0:
            raise ConfigError("quant=4bit needs LoRA adapters (lora_r > 0): a 4-bit base is "
                              "frozen, so nothing but the head would train; use --quant none.")
        if self.n_queries < 1 or self.head_hidden < 1:
            raise ConfigError("n_queries and head_hidden must be >= 1.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), found {self.lora_dropout}.")
        if self.full and (self.lora_r > 0 or self.quant == "4bit"):
            raise ConfigError(
                f"full fine-tuning trains every backbone weight itself: it takes no LoRA "
                f"adapters and no 4-bit base (found lora_r={self.lora_r}, quant="
                f"{self.quant}); use --full with --lora-r 0 --quant none.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), found {self.dropout}.")
        if self.layer is not None and self.layer < 1:
            raise ConfigError(f"layer must be >= 1 (1: the first transformer layer), found "
                              f"{self.layer}; leave it out for the last layer.")
        if not (math.isfinite(self.target_mean) and math.isfinite(self.target_scale)
                and self.target_scale > 0):
            raise ConfigError(f"target_scale must be > 0 and both finite, found mean "
                              f"{self.target_mean}, scale {self.target_scale}.")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (saved next to every checkpoint)."""
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config from newer code)."""
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# backbones


def resolve_backbone(name_or_path: str) -> Path:
    """A local HF folder for a backbone alias or path (``train.backbones`` alias table;
    ``smollm2-135m`` is converted from the packaged GGUF once and cached)."""
    return Path(_resolve(name_or_path))


def compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The compute dtype: ``auto`` is bf16 on a CUDA device with bf16 support, else fp32.

    bf16 on this kind of CPU (no AMX) is slower than fp32 and changes gradients, so CPU
    training stays fp32 unless asked.
    """
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def lora_targets(model_type: str, override: Sequence[str] = ()) -> list[str]:
    """LoRA target module names for an architecture (``config.model_type``)."""
    if override:
        return list(override)
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_map

    if model_type in peft_map:
        return list(peft_map[model_type])
    raise ConfigError(
        f"No LoRA target modules known for architecture {model_type!r}. Expected one of "
        f"{sorted(set(LORA_TARGETS) | set(peft_map))}; pass lora_targets explicitly."
    )


def disable_bnb_cpu_repack(model: nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for AVX512-bf16 on CPU.

    An eval-mode forward of ``bnb.nn.Linear4bit`` on such a CPU converts the packed weights to
    another layout in place; later training backward passes then read them in the old layout
    and give silently wrong gradients. Returns the number of layers changed.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:  # no bitsandbytes: no 4-bit layers to fix
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_backbone(cfg: ModelConfig, device: torch.device) -> nn.Module:
    """The backbone (``AutoModel``) with LoRA adapters (peft) and optional 4-bit base weights."""
    from transformers import AutoModel

    path = resolve_backbone(cfg.backbone)
    dtype = compute_dtype(cfg.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.quant == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    backbone = AutoModel.from_pretrained(str(path), **kwargs)
    if cfg.layer is not None:
        cut_layers(backbone, cfg.layer)
    if cfg.dropout is not None:
        set_dropout(backbone, cfg.dropout)
    if getattr(backbone, "pooler", None) is not None:
        # BERT-style pooler (a dense layer on [CLS]): no head reads it, and an unused
        # trainable weight makes DDP wait for a gradient that never comes
        backbone.pooler = None
    if cfg.quant != "4bit":
        backbone.to(device)
    if cfg.quant == "4bit":
        from peft import prepare_model_for_kbit_training

        n = disable_bnb_cpu_repack(backbone)
        log.debug("4-bit layers: %d", n)
        backbone = prepare_model_for_kbit_training(
            backbone, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs and with DDP.
        backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=lora_targets(backbone.config.model_type, cfg.lora_targets),
            bias="none",
        )
        backbone = get_peft_model(backbone, lcfg)
    else:
        backbone.requires_grad_(cfg.full)
    if hasattr(backbone.config, "use_cache"):
        backbone.config.use_cache = False  # no KV cache while training
    return backbone


def layer_stack(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The backbone's stack of transformer layers: ``(dotted path, ModuleList)``.

    Found by shape, not by architecture name: the shallowest ``ModuleList`` with as many
    entries as ``config.num_hidden_layers`` (``encoder.layer`` in BERT, ``layers`` in Llama).

    Raises:
        ConfigError: no such list (an architecture this rule does not fit).
    """
    n = getattr(backbone.config, "num_hidden_layers", None)
    found = [(name, m) for name, m in backbone.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == n]
    if not n or not found:
        raise ConfigError(f"cannot find the {n} transformer layers of a "
                          f"{type(backbone).__name__}: choosing a layer or decaying the "
                          "learning rate by layer needs them; leave --layer out.")
    return min(found, key=lambda x: x[0].count("."))


def cut_layers(backbone: nn.Module, keep: int) -> None:
    """Drop every transformer layer above the first ``keep`` (in place)."""
    path, layers = layer_stack(backbone)
    if keep > len(layers):
        raise ConfigError(f"layer {keep} asked for, but the backbone has {len(layers)} "
                          f"layers: choose --layer 1..{len(layers)}.")
    parent = backbone.get_submodule(path.rpartition(".")[0]) if "." in path else backbone
    setattr(parent, path.rpartition(".")[2], nn.ModuleList(list(layers)[:keep]))
    backbone.config.num_hidden_layers = keep
    if isinstance(getattr(backbone.config, "layer_types", None), list):  # e.g. Llama, Qwen
        backbone.config.layer_types = backbone.config.layer_types[:keep]


def set_dropout(backbone: nn.Module, p: float) -> None:
    """Set every dropout of the backbone to ``p``: its ``nn.Dropout`` modules (BERT reads
    their ``p`` for attention too) and the ``attention_dropout`` rate Llama-style attention
    layers keep as a number."""
    for m in backbone.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = p


def layer_depths(backbone: nn.Module) -> dict[str, int]:
    """Each backbone parameter's depth: 0 for the embeddings, ``i + 1`` for the i-th
    transformer layer, ``n_layers + 1`` for what sits above them (a final norm)."""
    path, layers = layer_stack(backbone)
    top = len(layers) + 1
    depths: dict[str, int] = {}
    prefix = f"{path}."
    for name, _ in backbone.named_parameters():
        _, sep, rest = name.partition(prefix)
        if sep and rest.split(".", 1)[0].isdigit():
            depths[name] = int(rest.split(".", 1)[0]) + 1
        elif "embed" in name:
            depths[name] = 0
        else:
            depths[name] = top
    return depths


def param_groups(model: ReadingLevelModel, *, lr: float, decay: float = 1.0,
                 weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable weights with layer-wise learning-rate decay.

    The head, the layer mix, the last of L layers and what sits above it train at ``lr``;
    layer i (1-based) at ``lr * decay ** (L - i)``; the embeddings at ``lr * decay ** L``.
    ``decay`` 1 is one group at ``lr``. The group order is fixed, so a resumed optimizer
    state matches.
    """
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"lr_decay must be in (0, 1], found {decay}.")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay == 1.0:
        return [{"params": [p for _, p in trainable], "lr": lr, "weight_decay": weight_decay}]
    depths = layer_depths(model.backbone)
    n_layers = len(layer_stack(model.backbone)[1])
    by_scale: dict[int, list[torch.nn.Parameter]] = {}
    for name, p in trainable:
        sub = name.removeprefix("backbone.")
        below = max(0, n_layers - depths[sub]) if name.startswith("backbone.") else 0
        by_scale.setdefault(below, []).append(p)
    return [{"params": by_scale[k], "lr": lr * decay ** k, "weight_decay": weight_decay}
            for k in sorted(by_scale)]


class LayerMix(nn.Module):
    """A learned softmax-weighted sum of several layers' token states (a scalar mix)."""

    def __init__(self, n_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_states))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        w = torch.softmax(self.weights, dim=0)
        return self.gamma * sum(w[k] * s.float() for k, s in enumerate(states))


# ---------------------------------------------------------------------------------------------
# heads


def _n_heads(hidden: int) -> int:
    return next(h for h in (8, 6, 4, 3, 2, 1) if hidden % h == 0)


class AttentionPoolingHead(nn.Module):
    """Learned queries attend over the (masked) token states; their outputs give one number."""

    def __init__(self, hidden: int, n_queries: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, hidden) * 0.02)
        self.attn = nn.MultiheadAttention(hidden, _n_heads(hidden), batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(states.shape[0], -1, -1)
        pooled, _ = self.attn(q, states, states, key_padding_mask=~mask.bool(),
                              need_weights=False)
        return self.out(self.norm(pooled).mean(dim=1)).squeeze(-1)


class DenseHead(nn.Module):
    """Masked mean pooling of the token states, then an MLP."""

    def __init__(self, hidden: int, head_hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, head_hidden), nn.GELU(),
            nn.Linear(head_hidden, 1),
        )

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.mlp(mean).squeeze(-1)


def make_head(cfg: ModelConfig, hidden: int) -> nn.Module:
    """The head named by ``cfg.head`` for token states of width ``hidden`` (always fp32)."""
    if cfg.head == "attention":
        return AttentionPoolingHead(hidden, cfg.n_queries)
    return DenseHead(hidden, cfg.head_hidden)


# ---------------------------------------------------------------------------------------------
# the model


class ReadingLevelModel(nn.Module):
    """Backbone (with adapters) + head: token ids in, one reading-level number per window out."""

    def __init__(self, cfg: ModelConfig, backbone: nn.Module, head: nn.Module,
                 mix: LayerMix | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.head = head
        self.mix = mix

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.readout(self.token_states(input_ids, attention_mask), attention_mask)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                     ) -> torch.Tensor:
        """The token states the head reads (the backbone's last kept layer, or the learned
        mix of layers), in fp32 whatever the backbone computes in (bf16 or 4-bit)."""
        if self.mix is not None:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                output_hidden_states=True)
            states = self.mix(out.hidden_states)
        else:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            states = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return states.float()

    def readout(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head over token states, in the target's units (the head itself reads and
        predicts standardised units: see the module docstring)."""
        raw = self.head(states, attention_mask)
        return raw * self.cfg.target_scale + self.cfg.target_mean

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error in standardised units (divided by ``target_scale`` squared:
        the same optimisation whatever the target's unit). Multiply by
        ``target_scale ** 2`` for the MSE in the target's own units."""
        return nn.functional.mse_loss(pred, target.to(pred.dtype)) / self.cfg.target_scale ** 2

    def trainable_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """What training changes: LoRA adapter weights (``adapter``), the head with the
        layer mix (``head``, the mix under :data:`MIX_PREFIX`) and, with full fine-tuning,
        every backbone weight (``backbone``)."""
        def cpu(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().contiguous() for k, v in d.items()}

        adapter: dict[str, torch.Tensor] = {}
        if self.cfg.lora_r > 0:
            from peft import get_peft_model_state_dict

            adapter = get_peft_model_state_dict(self.backbone)
        head = dict(self.head.state_dict())
        if self.mix is not None:
            head.update({MIX_PREFIX + k: v for k, v in self.mix.state_dict().items()})
        return {"adapter": cpu(adapter), "head": cpu(head),
                "backbone": cpu(self.backbone.state_dict()) if self.cfg.full else {}}

    def load_trainable_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Inverse of :meth:`trainable_state_dict`; missing or unexpected keys raise."""
        if self.cfg.lora_r > 0:
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.backbone, state["adapter"])
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise ValueError(f"adapter weights with unknown names: {unexpected[:5]}")
        if self.cfg.full:
            if not state.get("backbone"):
                raise ConfigError("a fully fine-tuned model needs its backbone weights "
                                  f"({BACKBONE_FILE}), and none were saved with it.")
            self.backbone.load_state_dict(state["backbone"], strict=True)
        head = {k: v for k, v in state["head"].items() if not k.startswith(MIX_PREFIX)}
        mix = {k.removeprefix(MIX_PREFIX): v for k, v in state["head"].items()
               if k.startswith(MIX_PREFIX)}
        self.head.load_state_dict(head, strict=True)
        if self.mix is not None or mix:
            if self.mix is None:
                raise ValueError("layer-mix weights saved, but the config has no layer_mix")
            self.mix.load_state_dict(mix, strict=True)


def build_model(cfg: ModelConfig, *, device: torch.device | str = "cpu",
                seed: int | None = None) -> ReadingLevelModel:
    """Load the backbone, add adapters and a fresh head.

    Args:
        cfg: What to build.
        device: Where the model lives.
        seed: Seeds torch before the adapters and head are initialised (same seed, same init).
    """
    device = torch.device(device)
    if seed is not None:
        torch.manual_seed(seed)
    backbone = load_backbone(cfg, device)
    hidden = backbone.config.hidden_size
    head = make_head(cfg, hidden).to(device)
    # embeddings + every kept layer
    mix = LayerMix(backbone.config.num_hidden_layers + 1).to(device) if cfg.layer_mix else None
    return ReadingLevelModel(cfg, backbone, head, mix)


def save_model(model: ReadingLevelModel, folder: str | Path) -> Path:
    """Write the config, adapter and head weights into ``folder`` (safetensors + JSON).

    A frozen backbone is not copied: it is named by ``cfg.backbone``; a fully fine-tuned one
    is (``backbone.safetensors``). Not atomic by itself; :mod:`train.checkpoint` writes into a
    temporary folder and renames it.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.trainable_state_dict()
    save_file(state["head"], str(folder / HEAD_FILE))
    if state["adapter"]:
        save_file(state["adapter"], str(folder / ADAPTER_FILE))
    if state["backbone"]:
        save_file(state["backbone"], str(folder / BACKBONE_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    return folder


def load_model(folder: str | Path, *, device: torch.device | str = "cpu",
               backbone: str | None = None) -> ReadingLevelModel:
    """Rebuild a model saved by :func:`save_model` (backbone + saved adapter + saved head).

    Args:
        folder: A folder written by :func:`save_model` (or a checkpoint folder).
        device: Where to load it.
        backbone: Override the backbone name/path recorded in the config (moved weights).
    """
    folder = Path(folder)
    if not (folder / CONFIG_FILE).exists():
        raise ConfigError(f"{folder} holds no {CONFIG_FILE}: expected a folder written by "
                          "save_model or a training checkpoint.")
    d = json.loads((folder / CONFIG_FILE).read_text())
    if backbone:
        d["backbone"] = backbone
    cfg = ModelConfig.from_dict(d)
    model = build_model(cfg, device=device)
    model.load_trainable_state_dict(read_trainable(folder))
    return model


def read_trainable(folder: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The trained weights a model folder or checkpoint holds, as
    :meth:`ReadingLevelModel.load_trainable_state_dict` takes them (safetensors only)."""
    from safetensors.torch import load_file

    folder = Path(folder)

    def read(name: str) -> dict[str, torch.Tensor]:
        return load_file(str(folder / name)) if (folder / name).exists() else {}

    return {"adapter": read(ADAPTER_FILE), "head": load_file(str(folder / HEAD_FILE)),
            "backbone": read(BACKBONE_FILE)}


# ---------------------------------------------------------------------------------------------
# scoring


def aggregate_windows(keys: Iterable[Any], preds: Iterable[float]) -> dict[Any, float]:
    """Mean prediction per key (book id or text index) over its windows, in first-seen order."""
    sums: dict[Any, list[float]] = {}
    for k, p in zip(keys, preds, strict=True):
        acc = sums.setdefault(k, [0.0, 0])
        acc[0] += float(p)
        acc[1] += 1
    return {k: s / n for k, (s, n) in sums.items()}


def average_members(members: Mapping[str, Mapping[Any, float]]) -> dict[Any, float]:
    """An ensemble's predictions: per key, the plain mean of its members' predictions.

    The one averaging rule of ``corpus eval`` and ``corpus score`` with several runs or
    models. Each member predicts at the level the caller keys by (a book and variant, a
    text): its own window mean, made with its own tokenizer and window length, so members
    need not cut a text alike. Members weigh the same whatever their window counts.

    Args:
        members: ``{member id: {key: prediction}}``; every member must predict every key.

    Returns:
        ``{key: mean}``, keys in the first member's order.

    Raises:
        ConfigError: no members, or a member lacks keys another has (the mean would be over
            different members for different keys).
    """
    if not members:
        raise ConfigError("an ensemble needs at least one member's predictions.")
    names = list(members)
    first = members[names[0]]
    for name in names[1:]:
        missing = [k for k in first if k not in members[name]]
        extra = [k for k in members[name] if k not in first]
        if missing or extra:
            diff = [f"lacks {len(missing)} of {names[0]!r}'s (e.g. {missing[0]!r})"] if missing \
                else []
            diff += [f"has {len(extra)} that {names[0]!r} lacks (e.g. {extra[0]!r})"] if extra \
                else []
            raise ConfigError(f"ensemble members {names[0]!r} and {name!r} did not predict the "
                              f"same things: {name!r} {' and '.join(diff)}.")
    # fsum: the mean does not depend on the order the members are listed in
    return {k: math.fsum(float(members[n][k]) for n in names) / len(names) for k in first}


def pad_windows(windows: Sequence[Sequence[int]],
                pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id windows of any lengths as one right-padded batch: ``(input_ids,
    attention_mask)``, both ``long`` of shape ``(len(windows), longest)``."""
    width = max(len(w) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for j, w in enumerate(windows):
        ids[j, :len(w)] = torch.as_tensor(w, dtype=torch.long)
        mask[j, :len(w)] = 1
    return ids, mask


@torch.no_grad()
def predict_windows(texts: Sequence[str], *, model: ReadingLevelModel, tokenizer: Any,
                    seq_len: int = DEFAULT_SEQ_LEN, stride: int = 0, batch_size: int = 8
                    ) -> list[list[float]]:
    """Each text's per-window predictions: the text is cut into windows of ``seq_len``
    tokens (consecutive windows share ``stride`` tokens) and every window is scored.

    Args:
        texts: The texts to score (whole books are fine: they become several windows).
        model: A trained model (from :func:`load_model`).
        tokenizer: The backbone's fast tokenizer.
        seq_len: Window length in tokens (as the shards were cut).
        stride: Tokens shared by consecutive windows (0: consecutive chunks).
        batch_size: Windows per forward pass.

    Returns:
        One list per text, in order, of its windows' predictions (at least one each).
    """
    if not texts:
        return []
    owner, windows = _windows(texts, tokenizer, seq_len, stride)
    was_training = model.training
    model.eval()
    device = next(model.head.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    preds: list[float] = []
    # Longest windows first in each batch would pad less, but order must be kept: windows
    # of one text are contiguous and usually the same length, so plain batching is fine.
    for i in range(0, len(windows), batch_size):
        ids, mask = pad_windows(windows[i:i + batch_size], pad)
        preds.extend(model(ids.to(device), mask.to(device)).float().cpu().tolist())
    model.train(was_training)
    per_text: list[list[float]] = [[] for _ in texts]
    for k, p in zip(owner, preds, strict=True):
        per_text[k].append(float(p))
    return per_text


def _windows(texts: Sequence[str], tokenizer: Any, seq_len: int, stride: int
             ) -> tuple[list[int], list[list[int]]]:
    """Every text cut into windows of ``seq_len`` tokens: ``(owner text index per window,
    token ids per window)``, a text's windows contiguous and in order."""
    if seq_len < 8 or not 0 <= stride < seq_len // 2:
        raise ConfigError(f"seq_len must be >= 8 and 0 <= stride < seq_len/2, found "
                          f"seq_len={seq_len}, stride={stride}.")
    enc = tokenizer(list(texts), truncation=True, max_length=seq_len, stride=stride,
                    return_overflowing_tokens=True, padding=False)
    return list(enc["overflow_to_sample_mapping"]), enc["input_ids"]


@torch.no_grad()
def predict_over_windows(texts: Sequence[str], *, model: ReadingLevelModel, tokenizer: Any,
                         seq_len: int = DEFAULT_SEQ_LEN, batch_size: int = 8) -> list[float]:
    """Score texts with the head pooling over all of a text's windows at once: attention
    over windows.

    Each window goes through the backbone alone, as in training, and the head then reads
    the token states of every window of the text together: the attention head's queries
    attend over all of them in one softmax (a window full of headings or front matter gets
    the weight the head gives such tokens, not a fixed 1/n), the dense head averages all
    of them (a length-weighted mean of the windows' pooled states). No new weights: the
    trained head is applied as it is. Windows do not overlap (a shared token would count
    twice). Holds a text's token states in memory (~0.5 MB per 320-token window of a
    384-wide model).

    Returns one prediction per text, in order; a one-window text gets exactly what
    :func:`predict` gives it.
    """
    if not texts:
        return []
    owner, windows = _windows(texts, tokenizer, seq_len, 0)
    was_training = model.training
    model.eval()
    device = next(model.head.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    states: list[list[torch.Tensor]] = [[] for _ in texts]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        ids, mask = pad_windows(chunk, pad)
        out = model.token_states(ids.to(device), mask.to(device))
        for j, w in enumerate(chunk):
            states[owner[i + j]].append(out[j, :len(w)])
    preds = []
    for per_window in states:
        joined = torch.cat(per_window).unsqueeze(0)
        mask = torch.ones(joined.shape[:2], dtype=torch.long, device=joined.device)
        preds.append(float(model.readout(joined, mask)[0]))
    model.train(was_training)
    return preds


def predict(texts: Sequence[str], *, model: ReadingLevelModel, tokenizer: Any,
            seq_len: int = DEFAULT_SEQ_LEN, stride: int = 0, batch_size: int = 8) -> list[float]:
    """Score texts: the mean of each text's window predictions (:func:`predict_windows`,
    whose arguments these are). Returns one prediction per text, in order."""
    per_text = predict_windows(texts, model=model, tokenizer=tokenizer, seq_len=seq_len,
                               stride=stride, batch_size=batch_size)
    return [sum(w) / len(w) for w in per_text]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (4-bit weights count as their unpacked size)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0
    for p in model.parameters():
        n = p.numel()
        # bitsandbytes Params4bit store two 4-bit values per uint8
        total += n * 2 if p.dtype == torch.uint8 else n
    return trainable, total


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flattened tensors (used to compare gradients)."""
    a, b = a.flatten().double(), b.flatten().double()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# the model card

HELD_OUT_BEGIN = "<!-- corpus:held-out-evaluation -->"
HELD_OUT_END = "<!-- /corpus:held-out-evaluation -->"


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def reliability(n: int | None) -> str:
    """`` (n=3: unreliable)`` for a count below :data:`MIN_RELIABLE_N`, else empty."""
    return f" (n={n}: unreliable)" if n is not None and n < MIN_RELIABLE_N else ""


@dataclass(frozen=True)
class ModelCard:
    """A saved model's card (``README.md`` in its folder).

    Attributes:
        run_id: The training run.
        model: :meth:`ModelConfig.to_dict` of the model.
        dataset: Shards dataset trained on.
        shards_version: The pinned ``shards`` table version.
        target: The metric the model predicts (``bt_easiness`` ...), None if unknown.
        shards: The dataset's settings and provenance: ``tokenizer, seq_len, window, stride,
            texts_version, scores_version, build_id``, ``variants`` (of the training split)
            and ``splits`` (``{split: {books, samples, tokens, shards}}``).
        training: The run's training settings (:class:`train.recipe.TrainConfig` fields).
        result: The run's ``result.json``: the saved model's step and validation metrics,
            the best step, whether it stopped early, world size, device.
    """

    run_id: str
    model: dict[str, Any]
    dataset: str
    shards_version: int
    target: str | None
    shards: dict[str, Any]
    training: dict[str, Any]
    result: dict[str, Any]

    def render(self, held_out: str | None = None) -> str:
        """The card as Markdown; ``held_out`` is the body of the held-out section (a
        placeholder asking for ``corpus eval`` when None)."""
        m, sh, tr, res = self.model, self.shards, self.training, self.result
        name, label = metric_name(self.target), metric_label(self.target)
        seq_len = sh.get("seq_len") or tr.get("seq_len") or DEFAULT_SEQ_LEN
        splits = sh.get("splits") or {}
        train_split, val_split = splits.get("train", {}), splits.get("validation", {})
        if m.get("lora_r", 0) > 0:
            targets = ", ".join(m.get("lora_targets") or []) or "the attention projections"
            adapters = (f"LoRA r={m['lora_r']}, alpha={m.get('lora_alpha')}, dropout "
                        f"{m.get('lora_dropout')}, on {targets}")
        elif m.get("full"):
            adapters = "none: full fine-tuning, every backbone weight was trained"
        else:
            adapters = "none: the backbone is frozen, only the head is trained"
        pooled = (f"the states after layer {m['layer']} (the layers above are dropped)"
                  if m.get("layer") else "the last layer's states")
        if m.get("layer_mix"):
            pooled = ("a learned weighted mix of the embeddings' and every layer's states"
                      + (f" up to layer {m['layer']}" if m.get("layer") else ""))
        backbone_row = (f"`{m.get('backbone')}`, fine-tuned: its weights are in this folder "
                        f"(`{BACKBONE_FILE}`)" if m.get("full") else
                        f"`{m.get('backbone')}` (frozen, not in this folder: loaded by name)")
        scale = ""
        if m.get("target_scale", 1.0) != 1.0 or m.get("target_mean", 0.0) != 0.0:
            scale = (f"; it predicts in standardised units, mapped back as x "
                     f"{m.get('target_scale'):.4g} + {m.get('target_mean'):.4g} (the training "
                     "windows' target deviation and mean)")
        quant = ("4-bit NF4 base weights (QLoRA)" if m.get("quant") == "4bit"
                 else "none (full-precision base weights)")
        heads = {"attention": "learned queries attend over the token states, then a linear "
                              "read-out",
                 "dense": "mean of the token states, then an MLP"}
        device = str(res.get("device") or "unknown device")
        on_cpu = device.startswith("cpu")
        dtype = m.get("dtype", "auto")
        direction = label.partition(", ")[2]
        what = f"the {name}" + (f" ({direction})" if direction else "")
        lines = [
            f"# Reading-level model: run {self.run_id}", "",
            f"Predicts **{self.target or 'a reading level'}** ({label}) from a text's tokens. "
            f"A text longer than one window of {seq_len} tokens is scored by the mean of its "
            "windows' predictions.", "",
            "## Model", "", "| | |", "|---|---|",
            f"| backbone | {backbone_row} |",
            f"| head | {m.get('head')}: {heads.get(str(m.get('head')), '')}, over "
            f"{pooled}{scale} |",
            f"| adapters | {adapters} |",
            f"| quantisation | {quant} |",
            "| backbone dropout in training | " + (
                # a config from before the option trained with the backbone's own
                "the backbone's own" if m.get("dropout") is None
                else f"{m['dropout']:g}") + " |",
            f"| compute dtype | {dtype}"
            + (" (float32 on CPU)" if dtype == "auto" and on_cpu else "") + " |",
            f"| files | `{HEAD_FILE}`, `{ADAPTER_FILE}` (when LoRA), `{BACKBONE_FILE}` (when "
            f"fully fine-tuned), `{CONFIG_FILE}`; load "
            "with `train.model.load_model(FOLDER)` or `corpus score --model FOLDER ...` |", "",
            "## Training data", "",
            f"- Shards **{self.dataset}@{self.shards_version}** (dataset `{self.dataset}` at "
            f"`shards` table version {self.shards_version}), built from "
            f"**texts@{sh.get('texts_version')}** and **scores@{sh.get('scores_version')}** "
            f"(build `{sh.get('build_id')}`).",
            f"- Target: `{self.target}`, {label}: the book's current score at "
            f"scores@{sh.get('scores_version')}.",
            f"- Tokenizer `{sh.get('tokenizer')}`, windows `{sh.get('window')}` of "
            f"{seq_len} tokens" + (f", stride {sh['stride']}" if sh.get("stride") else "")
            + f"; text variants: {', '.join(sh.get('variants') or []) or 'unknown'}.", "",
            "| split | books | windows | tokens |", "|---|---:|---:|---:|",
            *[f"| {k} | {v.get('books')} | {v.get('samples')} | {v.get('tokens')} |"
              for k, v in sorted(splits.items())], "",
            "## Training", "",
            f"- {res.get('steps')} optimizer steps, {res.get('epochs')} epoch(s) of at most "
            f"{tr.get('epochs')}, on {res.get('world_size')} rank(s) ({device}); batch "
            f"{tr.get('batch')} windows per rank x {tr.get('grad_accum')} accumulation "
            f"step(s), learning rate {tr.get('lr')}, seed {tr.get('seed')}.",
            "- Validated " + (f"every {tr['eval_every']} steps, " if tr.get("eval_every")
                              else "") + "at each epoch's end and at the end of training.",
            "- Early stopping: " + (
                (f"patience {tr['early_stop']} validation(s); "
                 + (f"stopped early at step {res.get('steps')}." if res.get("stopped_early")
                    else "did not stop early.")) if tr.get("early_stop") else "off."),
            f"- Saved model: step {res.get('model_step')}, "
            + ("the best by validation book MAE." if tr.get("early_stop") else
               "the last step.")
            + (f" The best validation was at step {res.get('best_step')} (book MAE "
               f"{_num(res.get('best_val_book_mae'))})." if res.get("best_step") is not None
               else "")
            + (f" Its output is then shifted by {-res['calibration']['offset']:+.4f}: minus its "
               f"mean residual on {res['calibration']['windows']} training windows "
               "(`calibration.json`; the validation below is from before that shift)."
               if res.get("calibration") else ""), "",
            "## Validation (during training)", "",
            f"Book-level error of {name} on the validation split (a book's prediction is the "
            f"mean over its windows; lower is better), for the saved model:", "",
            "| metric | value |", "|---|---:|",
            f"| books | {res.get('val_books')}{reliability(res.get('val_books'))} |",
            f"| windows | {res.get('val_windows')} |",
            f"| loss (window MSE) | {_num(res.get('val_loss', res.get('val_window_mse')))} |",
            f"| book MAE | {_num(res.get('val_book_mae'))} |",
            f"| book RMSE | {_num(res.get('val_book_rmse'))} |", "",
            "## Held-out evaluation", "", HELD_OUT_BEGIN,
            held_out if held_out is not None else
            f"Not evaluated yet: `corpus eval {self.run_id}` scores the held-out books on every "
            "text variant against readability formulas and writes the results here.",
            HELD_OUT_END, "",
            "## Intended use and limits", "",
            f"- Intended use: estimating {what} of English texts like the training texts, "
            "to rank or triage them (e.g. which scans to review first). Not for decisions "
            "about individual readers, and not a judgement of a text's content.",
        ]
        if self.target == "bt_easiness":
            lines.append("- BT easiness comes from the CLEAR corpus: excerpts of about "
                         "140-200 words for grades 3-12, compared in pairs by teachers. "
                         "Expect the model to do best on passages like those; whole books, "
                         "poetry or technical text are outside what it saw.")
        lines += [
            f"- Small data: {train_split.get('books', '?')} training books, "
            f"{val_split.get('books', 0)} validation books"
            + (" (metrics on fewer than 10 books are unreliable)"
               if (val_split.get("books") or 0) < MIN_RELIABLE_N else "") + ".",
            f"- Trained on {device} ({res.get('world_size')} rank(s))"
            + (", in float32: a small model, small batches." if on_cpu else ".")
            + " GPU paths (CUDA, bfloat16, 4-bit QLoRA) are not exercised by this "
            "project's tests.",
            "- OCR errors and other noise shift predictions: see the held-out evaluation per "
            "text variant before scoring raw scans.",
            "",
        ]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path:
        """Write the card as ``README.md`` into a model folder; returns its path."""
        path = Path(folder) / CARD_FILE
        path.write_text(self.render())
        return path


def set_held_out_section(card: str, body: str) -> str:
    """The card with its held-out evaluation section replaced by ``body`` (appended when
    the card has none, e.g. a card written by hand)."""
    start, end = card.find(HELD_OUT_BEGIN), card.find(HELD_OUT_END)
    if start < 0 or end < start:
        return f"{card.rstrip()}\n\n## Held-out evaluation\n\n{HELD_OUT_BEGIN}\n{body}\n" \
               f"{HELD_OUT_END}\n"
    return f"{card[:start + len(HELD_OUT_BEGIN)]}\n{body}\n{card[end:]}"
