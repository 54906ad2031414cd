"""`corpus score`: reading level of files, scans and catalog books, streamed.

Composes the two stages without either knowing the other: ``ingest`` reads a file (txt,
docx, html, epub, a PDF's text layer) or OCRs a scan in memory, ``train`` predicts. Inputs
are consumed in small batches, so scoring thousands of books holds only one batch of texts
in memory and the first rows appear before the last file is read.

An input is:
* a file: read by its format; a PDF without a text layer, or a page image, is OCR'd;
* a folder: every readable file under it, in sorted order;
* a catalog book: ``BOOK_ID`` (its ``edited`` text) or ``BOOK_ID:VARIANT``
  (e.g. ``9781234567897:ocr``), read from ``texts`` pinned at one version for the call.
A bad input becomes a row with its error; the others are still scored.

:func:`score_items` maps the work over an executor (:mod:`catalog.executor`): the driver
reads catalog texts at the pinned version and names the files; each worker loads the model
once, reads and OCRs its files and predicts, and the rows stream back in input order. On
Ray the files must be at the same path on every node; the model is fetched by each worker
from the run's checkpoint (or is a folder every node sees).

An ensemble (several runs or model folders, :class:`ScoreJob` ``models``) is scored the same
way: each worker loads every member once, each member cuts a text with its own tokenizer and
window length, and a text's prediction is the plain mean of the members' window means
(:func:`train.model.average_members`, the rule ``corpus eval`` averages runs by). Rows then
carry each member's prediction (``members``) and no window count: the members' windows
differ. The members must predict the same metric (:func:`ensemble_target`).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog import ConfigError, Lakehouse, LakehouseConfig, TableNotFoundError
from catalog.executor import Executor, Failed, make_executor
from catalog.rules import parse_text_ref

log = logging.getLogger(__name__)


UNREAD = "file"  # the source of an Item that names a file still to read


@dataclass(frozen=True)
class Item:
    """One thing to score: its name as given, how its text was obtained, the text or an
    error."""

    name: str
    source: str                # txt|docx|html|epub|pdf|scan|catalog:<variant>
    text: str | None = None
    error: str | None = None


def expand(inputs: Iterable[str]) -> Iterator[str]:
    """Inputs with every folder replaced by the readable files under it (sorted)."""
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            from ingest.readers import DOCUMENT_SUFFIXES, IMAGE_SUFFIXES

            for f in sorted(p.rglob("*")):
                # not only regular files: a pipe or a dangling link named like a book
                # becomes an error row instead of vanishing from the output
                if not f.is_dir() and f.suffix.lower() in DOCUMENT_SUFFIXES | IMAGE_SUFFIXES:
                    yield str(f)
        else:
            yield raw


def read_file(path: Path, *, lang: str = "eng") -> Item:
    """Text of one file: its format's reader, or OCR for a scan (never raises)."""
    from ingest.ocr import OcrError, ocr_document
    from ingest.readers import IMAGE_SUFFIXES, NoTextLayerError, ReaderError, read_document
    from ingest.share import check_readable_file, read_regular_file

    name = str(path)
    suffix = path.suffix.lower()
    problem = check_readable_file(path)  # a FIFO or device is never opened: it could block
    if problem:
        return Item(name, "file", error=f"{name}: {problem}")
    try:
        data = read_regular_file(path)
    except OSError as e:
        return Item(name, "file", error=f"{name}: cannot be read: {e.strerror or e}")
    try:
        if suffix in IMAGE_SUFFIXES:
            return Item(name, "scan", text=ocr_document(data, name=name, lang=lang)[0])
        try:
            doc = read_document(path, data)
            return Item(name, "html" if suffix == ".htm" else suffix[1:], text=doc.text)
        except NoTextLayerError:
            return Item(name, "scan", text=ocr_document(data, name=name, lang=lang)[0])
    except (ReaderError, OcrError) as e:
        return Item(name, suffix.lstrip(".") or "file", error=str(e))


def catalog_items(lakehouse: Lakehouse, refs: Sequence[str], *, version: int) -> list[Item]:
    """Texts of catalog books at one ``texts`` version, in the order asked."""
    from sql import SqlSession

    want = [parse_text_ref(r) for r in refs]
    ids = ", ".join("'" + b.replace("'", "''") + "'" for b in sorted({b for b, _ in want}))
    with SqlSession(lakehouse, as_of={"texts": version}) as session:
        got = session.query(f"SELECT book_id, variant, text FROM texts WHERE book_id IN ({ids})")
    found = {(r["book_id"], r["variant"]): r["text"] for r in got.to_pylist()}
    out = []
    for ref, (book, variant) in zip(refs, want, strict=True):
        text = found.get((book, variant))
        if text is None:
            have = sorted(v for b, v in found if b == book)
            why = (f"book {book} has no {variant!r} text (it has {', '.join(have)})" if have
                   else f"{ref}: neither a file nor a book in the catalog (texts@{version})")
            out.append(Item(ref, f"catalog:{variant}", error=why))
        else:
            out.append(Item(ref, f"catalog:{variant}", text=str(text)))
    return out


def iter_items(inputs: Iterable[str], *, lakehouse: Lakehouse | None, lang: str = "eng",
               chunk: int = 64, texts_version: int | None = None,
               read: bool = True) -> Iterator[Item]:
    """Every input as an :class:`Item`, lazily: files are read one at a time, catalog refs
    looked up ``chunk`` at a time, all at one pinned ``texts`` version (``texts_version``,
    else the latest when the first ref is looked up). With ``read=False`` a file is named,
    not read (``source`` ``file``, no text, no error): a worker reads it (:func:`read_item`).
    """
    version: int | None = texts_version
    pending: list[str] = []

    def flush() -> Iterator[Item]:
        nonlocal version
        if not pending:
            return
        if lakehouse is None:
            for ref in pending:
                yield Item(ref, "catalog", error=f"{ref}: no such file (and no lakehouse to "
                                                 "look it up as a book)")
        else:
            if version is None:
                try:
                    version = lakehouse.version("texts")
                except TableNotFoundError:
                    for ref in pending:
                        yield Item(ref, "catalog", error=f"{ref}: no such file, and the "
                                   "lakehouse has no texts yet")
                    pending.clear()
                    return
            yield from catalog_items(lakehouse, pending, version=version)
        pending.clear()

    for raw in expand(inputs):
        p = Path(raw)
        if p.exists():
            yield from flush()
            yield read_file(p, lang=lang) if read else Item(raw, UNREAD)
        else:
            pending.append(raw)
            if len(pending) >= chunk:
                yield from flush()
    yield from flush()


def score_stream(items: Iterable[Item],
                 predict: Callable[[list[str]], Sequence[float | Sequence[float]
                                                         | Mapping[str, Sequence[float]]]],
                 *, batch: int = 16, metric: str | None = None, run: str | None = None,
                 grade: GradeCalibration | None = None,
                 members: Sequence[str] = ()) -> Iterator[dict]:
    """Rows ``{name, source, metric, run, n_chars, prediction, n_windows, window_sd, error}``
    in input order (:data:`COLUMNS`), predicting ``batch`` texts at a time.

    ``predict`` gives one value per text, or one list of window predictions per text
    (:meth:`Scorer.windows`): then the prediction is their mean and ``n_windows`` and
    ``window_sd`` (sample standard deviation, None for one window) are filled in.
    ``metric`` and ``run`` say what the prediction is (the metric the model predicts, the
    training run it comes from; None when not known) and are the same on every row. With a
    ``grade`` calibration, rows also have ``lexile`` and ``grade`` (:data:`GRADE_COLUMNS`).

    For an ensemble, ``members`` names its members and ``predict`` gives per text a mapping
    ``{member: window predictions}`` (:func:`member_windows`): the prediction is the plain
    mean of the members' window means (:func:`train.model.average_members`), every row has
    ``members`` (``{member: its prediction}``, None on an error row), and ``n_windows`` and
    ``window_sd`` are empty (the members cut a text their own way).
    """
    from catalog.readiness import window_stats

    buf: list[Item] = []

    def row(it: Item, p: float | None, n: int | None, sd: float | None,
            each: dict[str, float] | None = None) -> dict:
        out = {"name": it.name, "source": it.source, "metric": metric, "run": run,
               "n_chars": None if it.error else len(it.text or ""), "prediction": p}
        if grade is not None:
            lexile = None if p is None else grade.lexile_of(p)
            out["lexile"] = lexile
            out["grade"] = None if lexile is None else grade_band(lexile)
        if members:
            out["members"] = each
        out.update(n_windows=n, window_sd=sd, error=it.error)
        return out

    def flush() -> Iterator[dict]:
        texts = [it.text for it in buf if it.error is None]
        preds = list(predict(texts)) if texts else []
        means: dict[str, dict[int, float]] = {}
        ensemble: dict[int, float] = {}
        if members and preds:
            from train.model import average_members

            means = {m: {i: sum(p[m]) / len(p[m]) for i, p in enumerate(preds)}
                     for m in members}
            ensemble = average_members(means)
        k = 0
        for it in buf:
            if it.error is not None:
                yield row(it, None, None, None)
                continue
            p = preds[k]
            if members:
                yield row(it, ensemble[k], None, None, {m: means[m][k] for m in members})
            elif isinstance(p, Sequence):
                n, sd = window_stats(p)
                yield row(it, float(sum(p) / n), n, sd)
            else:
                yield row(it, float(p), None, None)
            k += 1
        buf.clear()

    for it in items:
        buf.append(it)
        if len(buf) >= batch:
            yield from flush()
    yield from flush()


@dataclass
class Scorer:
    """A loaded model with its tokenizer and window settings: ``scorer(texts) -> preds``."""

    model: object
    tokenizer: object
    seq_len: int
    stride: int = 0
    batch_size: int = 8
    label: str = ""

    def __call__(self, texts: list[str]) -> list[float]:
        from train.model import predict

        return predict(texts, model=self.model, tokenizer=self.tokenizer,
                       seq_len=self.seq_len, stride=self.stride, batch_size=self.batch_size)

    def windows(self, texts: list[str]) -> list[list[float]]:
        """Each text's window predictions (their mean is what calling the scorer gives)."""
        from train.model import predict_windows

        return predict_windows(texts, model=self.model, tokenizer=self.tokenizer,
                               seq_len=self.seq_len, stride=self.stride,
                               batch_size=self.batch_size)


def load_scorer(*, model_dir: str | Path, seq_len: int, stride: int = 0,
                label: str = "") -> Scorer:
    """A :class:`Scorer` from a folder written by ``train.model.save_model`` (or a
    checkpoint folder)."""
    from train.backbones import load_tokenizer
    from train.model import load_model

    model = load_model(model_dir)
    return Scorer(model=model, tokenizer=load_tokenizer(model.cfg.backbone), seq_len=seq_len,
                  stride=stride, label=label or str(model_dir))


def read_item(item: Item, *, lang: str = "eng") -> Item:
    """``item`` with its text: a named file (:data:`UNREAD`) read now, others as they are."""
    if item.source == UNREAD and item.text is None and item.error is None:
        return read_file(Path(item.name), lang=lang)
    return item


@dataclass(frozen=True)
class ModelRef:
    """One model a worker scores with: a folder, or a run's checkpoint in the lakehouse
    (fetched by the worker); its window length; its ``label`` (the run id or the folder,
    what an ensemble's rows name it by)."""

    seq_len: int
    model_dir: str | None = None
    checkpoint_uri: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if (self.model_dir is None) == (self.checkpoint_uri is None):
            raise ConfigError("a model to score with is a folder or a run's checkpoint: give "
                              "exactly one of model_dir and checkpoint_uri.")


@dataclass(frozen=True)
class ScoreJob:
    """What a worker scores with: the model, or the members of an ensemble (``models``,
    each with its own window length), the shared window overlap, the OCR language, the
    lakehouse checkpoints are fetched from, and what every row says it is (``metric``,
    ``run``, the ``grade`` calibration)."""

    models: tuple[ModelRef, ...]
    stride: int = 0
    lang: str = "eng"
    lakehouse: LakehouseConfig | None = None
    label: str = ""
    metric: str | None = None
    run: str | None = None
    grade: GradeCalibration | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        labels = [m.label for m in self.models]
        if not labels:
            raise ConfigError("nothing to score with: give a run or a model folder.")
        if len(set(labels)) != len(labels):
            twice = next(x for x in labels if labels.count(x) > 1)
            raise ConfigError(f"{twice} is given twice: an ensemble's members are distinct "
                              "models (one listed twice would weigh double).")
        if len(labels) > 1 and self.grade is not None:
            raise ConfigError("--grade calibrates one run's predictions: grade each run alone.")

    @property
    def members(self) -> tuple[str, ...]:
        """The labels of an ensemble's members; empty for one model."""
        return tuple(m.label for m in self.models) if len(self.models) > 1 else ()


def _load_job(job: ScoreJob, scorers: Sequence[Scorer] | None = None,
              ) -> tuple[ScoreJob, list[Scorer]]:
    """A worker's state: each model loaded once (``scorers``: the ones already loaded here)."""
    from catalog.executor import in_worker

    if scorers is None:
        if in_worker():
            import torch

            torch.set_num_threads(1)  # one worker per core: no threads fighting
        scorers = [load_ref(ref, stride=job.stride, lakehouse=job.lakehouse)
                   for ref in job.models]
    return job, list(scorers)


def load_ref(ref: ModelRef, *, stride: int = 0,
             lakehouse: LakehouseConfig | None = None) -> Scorer:
    """The :class:`Scorer` of a :class:`ModelRef`: its folder, or its run's checkpoint
    fetched from ``lakehouse``."""
    model_dir = ref.model_dir
    if ref.checkpoint_uri is not None:
        from train.evaluate import fetch_model

        model_dir = str(fetch_model(Lakehouse(lakehouse), ref.checkpoint_uri))
    return load_scorer(model_dir=model_dir, seq_len=ref.seq_len, stride=stride,
                       label=ref.label)


def member_windows(scorers: Sequence[Scorer], texts: list[str],
                   ) -> list[dict[str, list[float]]]:
    """Per text, each ensemble member's window predictions, ``{label: windows}`` (each
    member cuts the text with its own tokenizer and window length)."""
    per = {s.label: s.windows(texts) for s in scorers}
    return [{label: w[i] for label, w in per.items()} for i in range(len(texts))]


def _score_batch(state: tuple[ScoreJob, list[Scorer]], batch: list[Item]) -> list[dict]:
    """The worker function: read what is still to read, predict, one row per item."""
    job, scorers = state
    items = [read_item(it, lang=job.lang) for it in batch]
    predict = (scorers[0].windows if len(scorers) == 1
               else functools.partial(member_windows, scorers))
    return list(score_stream(items, predict, batch=max(1, len(items)), metric=job.metric,
                             run=job.run, grade=job.grade, members=job.members))


def _item_name(item: Item) -> str:
    return item.name


def score_items(items: Iterable[Item], *, job: ScoreJob, batch: int = 16,
                executor: Executor | None = None, scorers: Sequence[Scorer] | None = None,
                total: int | None = None) -> Iterator[dict]:
    """Rows of :func:`score_stream` for ``items`` (files may be unread: :func:`read_item`),
    in input order, ``batch`` items at a time over ``executor`` (default: this process).

    An item whose batch fails is retried alone; one that still fails is a row with its
    error. ``scorers`` are the job's models already loaded in this process, in its order
    (used when the work runs here). A worker holds every model of an ensemble at once.
    """
    from collections import deque

    from catalog.executor import batched

    executor = executor or make_executor("local", workers=1)
    here = executor.kind == "local" and executor.workers == 1
    fed: deque[Item] = deque()  # items handed to the executor, not yet answered

    def feed() -> Iterator[Item]:
        for it in items:
            fed.append(it)
            yield it

    for row in executor.map(_score_batch, batched(feed(), size=batch), setup=_load_job,
                            setup_args=(job, scorers) if here else (job,), desc="score",
                            unit="text", total=total, key=_item_name,
                            summary=False):  # `corpus score` says how many were scored
        item = fed.popleft()  # results come in input order, one per item
        if isinstance(row, Failed):
            failed = Item(item.name, item.source, error=f"{item.name}: {row.reason}")
            row = next(score_stream([failed], _no_prediction, metric=job.metric,
                                    run=job.run, grade=job.grade, members=job.members))
        yield row


def _no_prediction(texts: list[str]) -> list[float]:
    raise AssertionError("an item with an error is never predicted")


# the columns of a scored row, in output order; with --grade, GRADE_COLUMNS follow prediction
COLUMNS = ("name", "source", "metric", "run", "n_chars", "prediction", "n_windows",
           "window_sd", "error")
GRADE_COLUMNS = ("lexile", "grade")


def columns(*, grade: bool = False, members: Sequence[str] = ()) -> tuple[str, ...]:
    """The output columns: with the grade columns when ``grade``, and one
    ``prediction:<member>`` column per ensemble member named in ``members``, after the
    prediction."""
    at = COLUMNS.index("prediction") + 1
    extra = (*(GRADE_COLUMNS if grade else ()), *(member_column(m) for m in members))
    return (*COLUMNS[:at], *extra, *COLUMNS[at:])


def member_column(member: str) -> str:
    """The table and csv column of an ensemble member's prediction."""
    return f"prediction:{member}"


def write_rows(rows: Iterable[dict], *, fmt: str, stream, grade: bool = False,
               members: Sequence[str] = ()) -> tuple[int, int]:
    """Write rows as they come (csv, json lines) or as one table at the end; returns
    ``(scored, failed)``. ``members``: the ensemble members whose predictions get a column
    each in a table or csv (json rows carry them all in ``members`` anyway)."""
    from sql.output import write_rows as write

    counts = {"scored": 0, "failed": 0}
    flat = members and fmt != "json"

    def counted(rows: Iterable[dict]) -> Iterator[dict]:
        for r in rows:
            counts["failed" if r["error"] is not None else "scored"] += 1
            if flat:
                each = r.get("members") or {}
                r = {**r, **{member_column(m): each.get(m) for m in members}}
            yield r

    write(counted(rows), columns=columns(grade=grade, members=members), fmt=fmt,
          stream=stream, cell=_cell,
          right=("n_chars", "prediction", "lexile", "n_windows", "window_sd",
                 *(member_column(m) for m in members)))
    return counts["scored"], counts["failed"]


def _cell(column: str, v: Any) -> str:
    if v is None:
        return ""
    if column in ("prediction", "window_sd") or column.startswith("prediction:"):
        return f"{v:.3f}"
    return f"{v:,}" if column == "n_chars" else str(v)


def check_format(fmt: str) -> str:
    """Validate ``--format``."""
    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json, got {fmt!r}.")
    return fmt


def resolve_run(lakehouse: Lakehouse, run_id: str | None) -> tuple[str, int | None]:
    """The local model folder and window length of a training run (the newest finished
    run with a checkpoint when ``run_id`` is None)."""
    run = find_scoring_run(lakehouse, run_id)
    return run["model_dir"], run["seq_len"]


def find_scoring_run(lakehouse: Lakehouse, run_id: str | None) -> dict:
    """``{run_id, model_dir, checkpoint_uri, seq_len, target, row}`` of a training run (the
    newest finished run with a checkpoint when ``run_id`` is None); ``target`` is the metric
    it predicts, ``row`` its ``runs`` row."""
    from train.evaluate import fetch_model, find_run, run_seq_len, run_target

    run = find_run(lakehouse, run_id)
    return {"run_id": run["run_id"],
            "model_dir": str(fetch_model(lakehouse, run["checkpoint_uri"])),
            "checkpoint_uri": run["checkpoint_uri"],
            "seq_len": run_seq_len(run), "target": run_target(lakehouse, run), "row": run}


def model_provenance(model_dir: str | Path) -> tuple[str | None, str | None]:
    """``(metric, run)`` of a saved model folder, each when the folder says: the metric it
    predicts (a ``target`` or ``metric`` entry in its ``model_config.json`` or checkpoint
    ``meta.json``) and the training run it comes from (``run_id`` in ``meta.json``, which a
    run's final model records); else None."""
    import json

    found: dict[str, str] = {}
    for name in ("model_config.json", "meta.json"):
        try:
            d = json.loads((Path(model_dir) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict):
            for key, what in (("metric", "metric"), ("target", "metric"), ("run_id", "run")):
                if isinstance(d.get(key), str) and d[key]:
                    found.setdefault(what, d[key])
    return found.get("metric"), found.get("run")


def ensemble_target(targets: Mapping[str, str | None]) -> str | None:
    """The metric an ensemble predicts: the one every member predicts (None when no member
    says).

    Args:
        targets: ``{member: the metric it predicts, None when unknown}``.

    Raises:
        ConfigError: members predict different metrics, or some say what they predict and
            others do not (averaging them could mix scales).
    """
    known = {m: t for m, t in targets.items() if t}
    first = next(iter(known.items()), None)
    for m, t in known.items():
        if first is not None and t != first[1]:
            raise ConfigError(f"{first[0]} predicts {first[1]} but {m} predicts {t}: an "
                              "ensemble's members must predict the same metric.")
    unknown = [m for m, t in targets.items() if not t]
    if first is not None and unknown:
        raise ConfigError(f"{unknown[0]} does not say what it predicts (no target in its "
                          f"run's shards or its folder's meta.json) while {first[0]} predicts "
                          f"{first[1]}: an ensemble's members must predict the same metric.")
    return first[1] if first is not None else None


def save_predictions(lakehouse: Lakehouse, rows: Iterable[dict], *, run_id: str,
                     target: str | None, texts_version: int | None,
                     members: Sequence[str] = ()) -> tuple[int, int | None]:
    """Write the scored catalog refs among ``rows`` to ``predictions`` in one commit.

    Each ``BOOK_ID:VARIANT`` that was scored becomes a row of run ``run_id`` with split
    ``scored``, its window count and spread; files given by path are not catalog books and
    are left out, as are failed rows. A ref scored again replaces its earlier ``scored``
    row (the merge key includes the split, so ``corpus eval``'s rows are kept). An
    ensemble's rows go under its id (``run_id``, :func:`train.evaluate.ensemble_id`) with
    no window count or spread, and the commit's lineage names its ``members``.

    Returns:
        ``(rows written, new predictions version or None when nothing was written)``.
    """
    from datetime import UTC, datetime

    from catalog import Lineage

    now = datetime.now(UTC)
    out: dict[tuple[str, str], dict] = {}  # a ref given twice is written once
    for r in rows:
        if r["error"] is not None or not r["source"].startswith("catalog:"):
            continue
        book, variant = parse_text_ref(r["name"])
        out[(book, variant)] = {
            "run_id": run_id, "book_id": book, "variant": variant, "target": target,
            "prediction": r["prediction"], "truth": None, "split": "scored",
            "n_windows": r["n_windows"], "window_sd": r["window_sd"], "created_at": now}
    if not out:
        return 0, None
    inputs = {"runs": lakehouse.version("runs")}
    if texts_version is not None:
        inputs["texts"] = texts_version
    config: dict[str, Any] = {"run_id": run_id}
    if members:
        config["members"] = list(members)
    lineage = Lineage(operation="score", inputs=inputs, config=config)
    data = list(out.values())
    return len(data), lakehouse.upsert("predictions", data, lineage=lineage,
                                       on=("run_id", "book_id", "variant", "target", "split"))


# ---- grade bands: BT easiness -> Lexile -> U.S. grade band ---------------------------------
#
# No corpus the project reads has a grade per text. CLEAR has two human-anchored scores per
# passage: BT easiness (what the models predict) and the Lexile band it was filed under
# ("Lexile Band", in 100L steps; imported as metric `lexile`). So a grade takes two steps:
# 1. BT easiness -> Lexile: a monotone (easier text, lower Lexile) least-squares fit on the
#    run's training books that have both scores, the scores the run's shards were built from.
#    Isotonic regression assumes nothing but the direction; it never extrapolates past the
#    Lexile range it saw (the ends are flat). Fit once per run, kept in its runs.metrics.
# 2. Lexile -> grade band: the published table below. The bands overlap; a measure in an
#    overlap goes to the lower band below the overlap's middle and to the upper one above it.

# Grade bands and their Lexile ranges: Common Core State Standards, Appendix A supplement
# (2012), "Updated text complexity grade bands and associated ranges from multiple measures".
GRADE_BANDS = (("2-3", 420, 820), ("4-5", 740, 1010), ("6-8", 925, 1185),
               ("9-10", 1050, 1335), ("11-CCR", 1185, 1385))
BELOW_BANDS, ABOVE_BANDS = "K-1", "above CCR"  # below 420L; above 1385L (college texts)
GRADE_METRIC, LEXILE_METRIC = "bt_easiness", "lexile"
MIN_CALIBRATION_BOOKS = 10
CALIBRATION_KEY = "grade_calibration"  # its key in runs.metrics


def grade_band(lexile: float) -> str:
    """The U.S. grade band (:data:`GRADE_BANDS`) of a Lexile measure."""
    if lexile < GRADE_BANDS[0][1]:
        return BELOW_BANDS
    if lexile > GRADE_BANDS[-1][2]:
        return ABOVE_BANDS
    for (name, _lo, hi), (_next, next_lo, _hi) in itertools.pairwise(GRADE_BANDS):
        if lexile < (hi + next_lo) / 2:  # the middle of the overlap with the next band
            return name
    return GRADE_BANDS[-1][0]


def isotonic_fit(x: Sequence[float], y: Sequence[float], *,
                 increasing: bool = True) -> tuple[list[float], list[float]]:
    """The monotone least-squares fit of ``y`` on ``x`` (pool adjacent violators), as knots:
    sorted distinct ``x`` values where the fit changes slope and the fitted ``y`` there.

    Between knots the fit is read by linear interpolation, outside them it is flat.
    """
    sign = 1.0 if increasing else -1.0
    by_x: dict[float, list[float]] = {}
    for xi, yi in zip(x, y, strict=True):
        by_x.setdefault(float(xi), []).append(sign * float(yi))
    xs = sorted(by_x)
    # blocks of [sum of y, count, first index, last index]: merged while they decrease
    blocks: list[list[float]] = []
    for i, xi in enumerate(xs):
        blocks.append([sum(by_x[xi]), len(by_x[xi]), i, i])
        while len(blocks) > 1 and (blocks[-2][0] / blocks[-2][1]
                                   > blocks[-1][0] / blocks[-1][1]):
            s, n, _, last = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
            blocks[-1][3] = last
    kx: list[float] = []
    ky: list[float] = []
    for s, n, first, last in blocks:
        for i in sorted({int(first), int(last)}):  # a flat block: its two ends
            kx.append(xs[i])
            ky.append(sign * s / n)
    return kx, ky


@dataclass(frozen=True)
class GradeCalibration:
    """BT easiness -> Lexile (an isotonic fit, see above) and its provenance.

    Attributes:
        easiness: Knots, increasing.
        lexile: The fitted Lexile at each knot (non-increasing).
        n_books: Training books the fit is on.
        fit_on: Where those books and scores are from (``dataset@shards_version train
            split, scores@version``).
    """

    easiness: tuple[float, ...]
    lexile: tuple[float, ...]
    n_books: int
    fit_on: str = ""

    def lexile_of(self, easiness: float) -> int:
        """The calibrated Lexile of a BT easiness, rounded to 10L."""
        import numpy as np

        return int(round(float(np.interp(easiness, self.easiness, self.lexile)), -1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (stored under ``grade_calibration`` in the run's metrics)."""
        return {"method": "isotonic", "from": GRADE_METRIC, "to": LEXILE_METRIC,
                "easiness": list(self.easiness), "lexile": list(self.lexile),
                "n_books": self.n_books, "fit_on": self.fit_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GradeCalibration:
        """Inverse of :meth:`to_dict`."""
        return cls(easiness=tuple(d["easiness"]), lexile=tuple(d["lexile"]),
                   n_books=int(d["n_books"]), fit_on=d.get("fit_on", ""))


def fit_grade_calibration(easiness: Sequence[float], lexile: Sequence[float], *,
                          fit_on: str = "") -> GradeCalibration:
    """Fit BT easiness -> Lexile on books that have both (easier text, lower Lexile).

    Raises:
        ConfigError: fewer than :data:`MIN_CALIBRATION_BOOKS` books, or the fit is one flat
            level (BT easiness says nothing about Lexile in these books).
    """
    if len(easiness) < MIN_CALIBRATION_BOOKS:
        raise ConfigError(
            f"--grade needs a calibration: at least {MIN_CALIBRATION_BOOKS} training books "
            f"with both a {GRADE_METRIC} and a {LEXILE_METRIC} score, found {len(easiness)}"
            + (f" ({fit_on})" if fit_on else "") + ".")
    kx, ky = isotonic_fit(easiness, lexile, increasing=False)
    if max(ky) - min(ky) <= 0:
        raise ConfigError(f"--grade: {GRADE_METRIC} does not order {LEXILE_METRIC} in the "
                          f"training books ({fit_on}): no calibration can be fit.")
    return GradeCalibration(easiness=tuple(kx), lexile=tuple(ky), n_books=len(easiness),
                            fit_on=fit_on)


def grade_calibration(lakehouse: Lakehouse, run: dict) -> tuple[GradeCalibration, bool]:
    """The grade calibration of a run (:func:`find_scoring_run`): the one kept in its
    ``runs.metrics``, else fit now on its training books and kept there (one commit).

    Returns:
        ``(calibration, fit now)``.

    Raises:
        ConfigError: the run does not predict BT easiness, or no calibration can be fit.
    """
    import json

    import pyarrow.compute as pc

    from catalog import Lineage
    from catalog.rules import current_values
    from train.shards import books_by_split

    run_id, row = run["run_id"], run["row"]
    if run["target"] != GRADE_METRIC:
        raise ConfigError(f"--grade maps {GRADE_METRIC} to grade bands; run {run_id} predicts "
                          f"{run['target'] or 'an unknown metric'}.")
    metrics = json.loads(row.get("metrics") or "{}")
    if isinstance(metrics.get(CALIBRATION_KEY), dict):
        return GradeCalibration.from_dict(metrics[CALIBRATION_KEY]), False
    shards_version = int(row["shards_version"])
    manifest = lakehouse.read("shards", version=shards_version)
    manifest = manifest.filter(pc.equal(manifest.column("dataset"), row["dataset"]))
    train_books = books_by_split(manifest, dataset=row["dataset"],
                                 where=f"shards@{shards_version}").get("train", set())
    scores_version = manifest.column("scores_version")[0].as_py()
    scores = lakehouse.read("scores", version=scores_version)
    easy, lex = current_values(scores, GRADE_METRIC), current_values(scores, LEXILE_METRIC)
    books = sorted(b for b in train_books if b in easy and b in lex)
    fit_on = (f"{row['dataset']}@shards {shards_version} train split, "
              f"scores@{scores_version}")
    cal = fit_grade_calibration([easy[b] for b in books], [lex[b] for b in books],
                                fit_on=fit_on)
    metrics[CALIBRATION_KEY] = cal.to_dict()
    lineage = Lineage(operation="calibrate", inputs={
        "runs": lakehouse.version("runs"), "shards": shards_version, "scores": scores_version},
        config={"run_id": run_id, "method": "isotonic", "from": GRADE_METRIC,
                "to": LEXILE_METRIC})
    lakehouse.merge("runs", [{**row, "metrics": json.dumps(metrics, sort_keys=True)}],
                    lineage=lineage, columns=["metrics"], insert=False)
    return cal, True
