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
@click.option("--model", "model_dirs", type=click.Path(file_okay=False), multiple=True,
              help="A saved model folder (train.model.save_model or a checkpoint); repeat "
                   "it to average several models.")
@click.option("--run", "run_ids", multiple=True, metavar="RUN",
              help="A training run from the runs table (default: the newest finished run); "
                   "repeat it to average several runs.")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help=f"Window length in tokens, for every model (default: each run's own; "
                   f"{DEFAULT_SEQ_LEN} with --model).")
@click.option("--stride", type=AT_LEAST_0, default=0, show_default=True,
              help="Tokens shared by consecutive windows of a long text.")
@click.option("--batch", type=AT_LEAST_1, default=16, show_default=True,
              help="Texts read and predicted together (memory holds one batch).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language for scans.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              help="csv and json (one object per line) stream rows as they are scored.")
@click.option("--members", "show_members", is_flag=True,
              help="With several --run or --model: add each member's prediction as a "
                   "column prediction:<RUN or FOLDER> to the table or csv (json rows always "
                   "carry them, as an object `members`).")
@click.option("--save", is_flag=True,
              help="Write each scored catalog book (BOOK_ID[:VARIANT]) to predictions under "
                   "the run, with its window count and spread (one commit); needs a run "
                   "(--run or the newest), not --model. Several --run save the ensemble's "
                   "predictions under its id (ensemble-<hash>, as `corpus eval` names it), "
                   "not each run's. Files given by path are scored but not saved: they are "
                   "not catalog books.")
@click.option("--grade", is_flag=True,
              help="Add the calibrated Lexile and the U.S. grade band (K-1, 2-3, 4-5, 6-8, "
                   "9-10, 11-CCR, above CCR; CCSS Appendix A bands) of each prediction. "
                   "Needs one run that predicts bt_easiness and at least 10 training books "
                   "with both a bt_easiness and a lexile score: the calibration is fit on "
                   "them once and kept in the run's metrics. Not with several runs.")
@click.option("--workers", type=WORKERS, default=None,
              help="Processes reading and scoring batches in parallel, each with its own copy "
                   "of the model (default 1: this process, the model on every core; with "
                   "--executor ray, one per CPU of the cluster).")
@executor_options
@click.pass_context
def score(ctx: click.Context, inputs: tuple[str, ...], model_dirs: tuple[str, ...],
          run_ids: tuple[str, ...], seq_len: int | None, stride: int, batch: int, lang: str,
          fmt: str, show_members: bool, save: bool, grade: bool, workers: int | None,
          executor: str, ray_address: str | None) -> None:
    """Predict the reading level of files, folders of files, scans and catalog books.

    An input is a file (txt, docx, html, epub, pdf; a PDF without a text layer or a page
    image is OCR'd), a folder (every such file under it) or a catalog book as BOOK_ID or
    BOOK_ID:VARIANT (e.g. 9781234567897:ocr). Inputs that cannot be read are reported as
    rows with their error and the rest is scored; the exit status is then 1. Each row says
    what it is (the metric predicted and the run; with --model, what the folder's
    metadata says, else empty) and gives the number of windows the text was cut into and
    the spread of their predictions.

    Several --run (or several --model) score as an ensemble: each member cuts a text with
    its own tokenizer and window length, and the prediction is the plain mean of the
    members' predictions (the rule `corpus eval RUN RUN ...` uses). The members must
    predict the same metric. The run column is the ensemble's id (ensemble-<hash of the
    sorted run ids>; empty for folders that do not name their runs); the window columns are
    empty, the members cutting texts differently; --members shows each member's
    prediction. Each worker holds every member in memory.

    With --grade, BT easiness becomes a Lexile measure through a monotone (isotonic) fit on
    the run's training books that have both scores, and the Lexile measure a grade band.

    With --executor ray each worker loads the model (each member of an ensemble) once (a
    run's checkpoint is fetched from the lakehouse; a --model folder must be on every node,
    as must the files given).

    Example: corpus score new_books/ scan.pdf 9781234567897:ocr --grade --format csv
    """
    from catalog import ConfigError, TableNotFoundError
    from catalog.executor import make_executor
    from corpus.score import (
        ModelRef,
        ScoreJob,
        ensemble_target,
        expand,
        find_scoring_run,
        grade_calibration,
        iter_items,
        load_ref,
        model_provenance,
        save_predictions,
        score_items,
        write_rows,
    )
    from train.evaluate import ensemble_id

    lh = lakehouse(ctx)
    ensemble = len(run_ids) > 1 or len(model_dirs) > 1
    for given, what in ((run_ids, "--run"), (model_dirs, "--model")):
        twice = next((x for x in given if given.count(x) > 1), None)
        if twice is not None:
            raise ConfigError(f"{what} {twice} is given twice: an ensemble's members are "
                              "distinct (one listed twice would weigh double).")
    if model_dirs and run_ids:
        raise ConfigError("give either --model or --run, not both.")
    if grade and ensemble and not model_dirs:
        raise ConfigError("--grade calibrates one run's predictions on its own training "
                          "books: grade each run alone (--run RUN --grade), not an ensemble.")
    if model_dirs and save:
        raise ConfigError("--save writes predictions under a training run: use --run RUN "
                          "(or neither, for the newest run) instead of --model.")
    if model_dirs and grade:
        raise ConfigError("--grade needs a training run (its calibration is fit on the run's "
                          "training books): use --run RUN (or neither, for the newest run) "
                          "instead of --model.")
    runs: list[dict] = []
    calibration = None
    if model_dirs:
        refs = [ModelRef(seq_len=seq_len or DEFAULT_SEQ_LEN, model_dir=str(d), label=str(d))
                for d in model_dirs]
        known = [model_provenance(d) for d in model_dirs]
        targets = {str(d): metric for d, (metric, _) in zip(model_dirs, known, strict=True)}
        made_by = [run for _, run in known]
    else:
        runs = [find_scoring_run(lh, r) for r in (run_ids or (None,))]
        refs = [ModelRef(seq_len=seq_len or r["seq_len"] or DEFAULT_SEQ_LEN,
                         model_dir=r["model_dir"], label=r["run_id"] if ensemble else
                         str(r["model_dir"])) for r in runs]
        targets = {r["run_id"]: r["target"] for r in runs}
        made_by = [r["run_id"] for r in runs]
    if ensemble:
        metric = ensemble_target(targets)
        if metric is None:
            err_console.print("warning: none of the models says what it predicts; averaging "
                              "them assumes they predict the same metric on the same scale",
                              markup=False, highlight=False)
        # an ensemble of folders is named like one of runs when each folder names its run
        run_name = (ensemble_id(made_by) if all(made_by) and len(set(made_by)) == len(made_by)
                    else None)
        label = (f"ensemble {run_name}" if run_name else "ensemble") + \
            f" of {', '.join(r.label for r in refs)}"
    else:
        metric, run_name = next(iter(targets.values())), made_by[0]
        label = f"model {refs[0].label}"
    if grade:
        calibration, fitted = grade_calibration(lh, runs[0])
        if fitted:
            err_console.print(f"grade calibration of run {run_name} fit on "
                              f"{calibration.n_books} training books "
                              f"({calibration.fit_on}) and kept in its metrics",
                              highlight=False)
    texts_version = None
    if save:
        try:
            texts_version = lh.version("texts")  # pinned for the whole call, and recorded
        except TableNotFoundError:
            texts_version = None
    ex = make_executor(executor, workers=workers or 1 if executor == "local" else workers,
                       address=ray_address)
    if runs and ex.kind == "ray":  # each worker fetches the runs' checkpoints
        refs = [replace(ref, model_dir=None, checkpoint_uri=r["checkpoint_uri"])
                for ref, r in zip(refs, runs, strict=True)]
    job = ScoreJob(models=tuple(refs), stride=stride, lang=lang,
                   lakehouse=lh.config if runs else None, label=label, metric=metric,
                   run=run_name, grade=calibration)
    here = ex.kind == "local" and ex.workers == 1
    scorers = [load_ref(ref, stride=stride) for ref in refs] if here else None
    names = list(expand(inputs))
    rows = score_items(iter_items(names, lakehouse=lh, lang=lang, texts_version=texts_version,
                                  read=False),
                       job=job, batch=batch, executor=ex, scorers=scorers, total=len(names))
    kept: list[dict] = []
    if save:
        def _tee(rows):
            for r in rows:
                if r["error"] is None and r["source"].startswith("catalog:"):
                    kept.append(r)
                yield r
        rows = _tee(rows)
    done, failed = write_rows(rows, fmt=fmt, stream=sys.stdout, grade=grade,
                              members=job.members if show_members else ())
    err_console.print(f"{done} scored, {failed} failed {ex.where()} ({job.label})",
                      markup=False, highlight=False)
    if save and runs:
        under = f"ensemble {run_name}" if ensemble else f"run {run_name}"
        n, version = save_predictions(lh, kept, run_id=run_name, target=metric,
                                      texts_version=texts_version, members=job.members)
        err_console.print(f"{n} prediction(s) saved under {under}"
                          + (f" (predictions@{version})" if version is not None else
                             ": no catalog book was scored"))
    if failed:
        sys.exit(1)


COMMANDS = [score]
