"""`corpus score`: the reading level of files, folders, scans and catalog books."""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from catalog.rules import DEFAULT_SEQ_LEN
from corpus.commands.common import (
    AT_LEAST_0,
    AT_LEAST_1,
    WORKERS,
    command,
    err_console,
    executor_options,
    lakehouse,
)


@command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE_OR_FOLDER_OR_BOOK...")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="A saved model folder (train.model.save_model or a checkpoint).")
@click.option("--run", "run_id", default=None,
              help="A training run from the runs table (default: the newest finished run).")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help=f"Window length in tokens (default: the run's; {DEFAULT_SEQ_LEN} with --model).")
@click.option("--stride", type=AT_LEAST_0, default=0, show_default=True,
              help="Tokens shared by consecutive windows of a long text.")
@click.option("--batch", type=AT_LEAST_1, default=16, show_default=True,
              help="Texts read and predicted together (memory holds one batch).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language for scans.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              help="csv and json (one object per line) stream rows as they are scored.")
@click.option("--save", is_flag=True,
              help="Write each scored catalog book (BOOK_ID[:VARIANT]) to predictions under "
                   "the run, with its window count and spread (one commit); needs a run "
                   "(--run or the newest), not --model. Files given by path are scored "
                   "but not saved: they are not catalog books.")
@click.option("--grade", is_flag=True,
              help="Add the calibrated Lexile and the U.S. grade band (K-1, 2-3, 4-5, 6-8, "
                   "9-10, 11-CCR, above CCR; CCSS Appendix A bands) of each prediction. "
                   "Needs a run that predicts bt_easiness and at least 10 training books "
                   "with both a bt_easiness and a lexile score: the calibration is fit on "
                   "them once and kept in the run's metrics.")
@click.option("--workers", type=WORKERS, default=None,
              help="Processes reading and scoring batches in parallel, each with its own copy "
                   "of the model (default 1: this process, the model on every core; with "
                   "--executor ray, one per CPU of the cluster).")
@executor_options
@click.pass_context
def score(ctx: click.Context, inputs: tuple[str, ...], model_dir: str | None,
          run_id: str | None, seq_len: int | None, stride: int, batch: int, lang: str,
          fmt: str, save: bool, grade: bool, workers: int | None, executor: str,
          ray_address: str | None) -> None:
    """Predict the reading level of files, folders of files, scans and catalog books.

    An input is a file (txt, docx, html, epub, pdf; a PDF without a text layer or a page
    image is OCR'd), a folder (every such file under it) or a catalog book as BOOK_ID or
    BOOK_ID:VARIANT (e.g. 9781234567897:ocr). Inputs that cannot be read are reported as
    rows with their error and the rest is scored; the exit status is then 1. Each row says
    what it is (the metric predicted and the run; with --model, what the folder's
    metadata says, else empty) and gives the number of windows the text was cut into and
    the spread of their predictions.

    With --grade, BT easiness becomes a Lexile measure through a monotone (isotonic) fit on
    the run's training books that have both scores, and the Lexile measure a grade band.

    With --executor ray each worker loads the model once (a run's checkpoint is fetched from
    the lakehouse; a --model folder must be on every node, as must the files given).

    Example: corpus score new_books/ scan.pdf 9781234567897:ocr --grade --format csv
    """
    from catalog import ConfigError, TableNotFoundError
    from catalog.executor import make_executor
    from corpus.score import (
        ScoreJob,
        expand,
        find_scoring_run,
        grade_calibration,
        iter_items,
        load_scorer,
        model_provenance,
        save_predictions,
        score_items,
        write_rows,
    )

    lh = lakehouse(ctx)
    run = None
    calibration = None
    if model_dir is None:
        run = find_scoring_run(lh, run_id)
        model_dir, seq_len = run["model_dir"], seq_len or run["seq_len"]
        metric, run_name = run["target"], run["run_id"]
        if grade:
            calibration, fitted = grade_calibration(lh, run)
            if fitted:
                err_console.print(f"grade calibration of run {run_name} fit on "
                                  f"{calibration.n_books} training books "
                                  f"({calibration.fit_on}) and kept in its metrics",
                                  highlight=False)
    elif run_id is not None:
        raise ConfigError("give either --model or --run, not both.")
    elif save:
        raise ConfigError("--save writes predictions under a training run: use --run RUN "
                          "(or neither, for the newest run) instead of --model.")
    elif grade:
        raise ConfigError("--grade needs a training run (its calibration is fit on the run's "
                          "training books): use --run RUN (or neither, for the newest run) "
                          "instead of --model.")
    else:
        metric, run_name = model_provenance(model_dir)
    texts_version = None
    if save:
        try:
            texts_version = lh.version("texts")  # pinned for the whole call, and recorded
        except TableNotFoundError:
            texts_version = None
    seq_len = seq_len or DEFAULT_SEQ_LEN
    ex = make_executor(executor, workers=workers or 1 if executor == "local" else workers,
                       address=ray_address)
    job = ScoreJob(seq_len=seq_len, stride=stride, lang=lang, model_dir=str(model_dir),
                   label=str(model_dir), metric=metric, run=run_name, grade=calibration)
    if run is not None and ex.kind == "ray":  # each worker fetches the run's checkpoint
        job = replace(job, model_dir=None, lakehouse=lh.config,
                      checkpoint_uri=run["checkpoint_uri"])
    here = ex.kind == "local" and ex.workers == 1
    scorer = load_scorer(model_dir=model_dir, seq_len=seq_len, stride=stride) if here else None
    names = list(expand(inputs))
    rows = score_items(iter_items(names, lakehouse=lh, lang=lang, texts_version=texts_version,
                                  read=False),
                       job=job, batch=batch, executor=ex, scorer=scorer, total=len(names))
    kept: list[dict] = []
    if save:
        def _tee(rows):
            for r in rows:
                if r["error"] is None and r["source"].startswith("catalog:"):
                    kept.append(r)
                yield r
        rows = _tee(rows)
    done, failed = write_rows(rows, fmt=fmt, stream=sys.stdout, grade=grade)
    err_console.print(f"{done} scored, {failed} failed {ex.where()} (model {job.label})",
                      markup=False, highlight=False)
    if save and run is not None:
        n, version = save_predictions(lh, kept, run_id=run["run_id"], target=run["target"],
                                      texts_version=texts_version)
        err_console.print(f"{n} prediction(s) saved under run {run['run_id']}"
                          + (f" (predictions@{version})" if version is not None else
                             ": no catalog book was scored"))
    if failed:
        sys.exit(1)


COMMANDS = [score]
