"""Which statements `corpus sql` runs: reads, and with ``allow_files`` a COPY to a file outside
the lakehouse. Nothing else, whatever the comments, quoting or nesting of the SQL.

DuckDB itself does the reading: ``extract_statements`` splits the SQL and gives every
statement's type, and ``tokenize`` (which knows comments and quoting) finds the parts that
decide what a statement may touch: the statement inside an EXPLAIN, the name of a PRAGMA, the
target and options of a COPY. A statement is refused unless it is shown to be harmless
(deny by default). The session's DuckDB settings are the other half of the guard (see
:class:`sql.session.SqlSession`): external access off or limited to the table folders,
extensions never installed or auto-loaded, configuration locked, so no SELECT can switch
logging, profiling or file access on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import duckdb

from catalog import QueryError

# PRAGMAs that only describe the session; the others change settings, run other SQL
# (import_database, copy_database) or write (force_checkpoint).
READ_PRAGMAS = frozenset({
    "collations", "database_list", "database_size", "extension_versions", "functions",
    "metadata_info", "platform", "show", "show_databases", "show_tables",
    "show_tables_expanded", "storage_info", "table_info", "user_agent", "version",
})
# COPY ... TO options whose values may contain '/' without naming a file (CSV formats).
_TEXT_OPTIONS = frozenset({
    "dateformat", "date_format", "timestampformat", "timestamp_format", "delim",
    "delimiter", "sep", "quote", "escape", "nullstr", "null", "prefix", "suffix",
})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_READS = "`corpus sql` is read-only: lakehouse tables change only through pipeline stages"


@dataclass(frozen=True)
class _Token:
    kind: str  # keyword, identifier, string_const, numeric_const, operator
    text: str
    start: int


def statement_type(stmt: duckdb.Statement) -> str:
    """``SELECT``, ``COPY``, ... of a statement from ``duckdb.extract_statements``."""
    try:
        return str(stmt.type).rsplit(".", 1)[-1].upper()
    except ValueError:  # a type the Python client has no name for (UPDATE EXTENSIONS)
        return " ".join(stmt.query.split()[:2]).upper()


def split(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> list[duckdb.Statement]:
    """The statements of ``sql`` as DuckDB parses them (QueryError for bad SQL).

    Parsed by ``con`` when given: the module-level function would first create DuckDB's
    default connection (~10 ms, a second database) just to parse.
    """
    try:
        return (con or duckdb).extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"Bad SQL: {str(e).strip()}") from None


def check(stmt: duckdb.Statement, *, allow_files: bool, root: str | None) -> None:
    """Raise :class:`QueryError` unless ``stmt`` only reads (or, with ``allow_files``, copies
    a result to a local file outside ``root``, the local lakehouse folder; None for S3)."""
    kind = statement_type(stmt)
    if kind == "SELECT":
        return
    tokens = _tokens(stmt.query)
    if kind == "EXPLAIN":
        _check_explain(stmt.query, tokens)
    elif kind == "PRAGMA":
        _check_pragma(tokens)
    elif kind == "COPY" and allow_files:
        _check_copy(tokens, root)
    else:
        hint = ("--allow-files adds reading local files and COPY ... TO a file outside the "
                "lakehouse, nothing else" if allow_files else
                "to read local files or COPY a result to one, pass --allow-files")
        raise QueryError(f"{kind} statements are not allowed: {_READS}; {hint}.")


def _tokens(sql: str) -> list[_Token]:
    raw = duckdb.tokenize(sql)
    out = []
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(sql)
        if kind.name != "comment":
            out.append(_Token(kind.name, sql[start:end].strip(), start))
    return out


def _word(tok: _Token) -> str:
    """A keyword or identifier as DuckDB names it (quotes removed, case folded)."""
    text = tok.text
    if tok.kind == "identifier" and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"').lower()
    return text.lower()


def _closing(tokens: list[_Token], i: int) -> int:
    """Index of the ')' that closes the '(' at ``tokens[i]`` (len(tokens) if none)."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].kind == "operator":
            depth += tokens[j].text.count("(") - tokens[j].text.count(")")
            if depth <= 0:
                return j
    return len(tokens)


def _check_explain(sql: str, tokens: list[_Token]) -> None:
    # EXPLAIN [ANALYZE] [(options)] statement; EXPLAIN ANALYZE runs the statement. DuckDB
    # reads "EXPLAIN (SELECT 1)" as a parenthesised query and "EXPLAIN (FORMAT json) ..." as
    # options: both readings are parsed, and every one that parses must be a single SELECT.
    i = 1
    if i < len(tokens) and _word(tokens[i]) in ("analyze", "analyse"):
        i += 1
    starts = [tokens[i].start] if i < len(tokens) else []
    if i < len(tokens) and tokens[i].text == "(":
        j = _closing(tokens, i) + 1
        if j < len(tokens):
            starts.append(tokens[j].start)
    kinds = []
    for start in starts:
        try:
            inner = duckdb.extract_statements(sql[start:])
        except duckdb.Error:
            continue
        kinds.append(statement_type(inner[0]) if len(inner) == 1 else "MULTI")
    if not kinds or any(k != "SELECT" for k in kinds):
        what = next((k for k in kinds if k != "SELECT"), "this statement")
        raise QueryError(
            f"EXPLAIN of {what} is not allowed: only a single SELECT query can be explained "
            f"(EXPLAIN ANALYZE runs the statement it explains, and {_READS})."
        )


def _check_pragma(tokens: list[_Token]) -> None:
    # IMPORT DATABASE and COPY FROM DATABASE parse as PRAGMA statements too.
    name = _word(tokens[1]) if len(tokens) > 1 and _word(tokens[0]) == "pragma" else None
    if name not in READ_PRAGMAS:
        shown = f"PRAGMA {name}" if name else " ".join(t.text for t in tokens[:3])
        raise QueryError(
            f"{shown} is not allowed: {_READS}. Read-only pragmas: "
            f"{', '.join(sorted(READ_PRAGMAS))}."
        )


def _check_copy(tokens: list[_Token], root: str | None) -> None:
    # COPY table [(columns)] TO 'file' [WITH] [(options)]  or  COPY (query) TO 'file' ...
    depth, at = 0, None
    for k, tok in enumerate(tokens[1:], start=1):
        if tok.kind == "operator":
            depth += tok.text.count("(") - tok.text.count(")")
        elif depth == 0 and tok.kind == "keyword" and _word(tok) in ("to", "from"):
            at = k
            break
    if at is None or _word(tokens[at]) == "from" or at + 1 >= len(tokens):
        raise QueryError(f"Only COPY ... TO 'file' is allowed: {_READS}.")
    target = tokens[at + 1]
    path = _copy_target(target)
    for candidate in _local_paths(path):
        _outside(candidate, root, shown=path)
    # Partitioned and per-thread output writes files named from these options inside the
    # target folder; a separator in them could climb out of it.
    for k in range(at + 2, len(tokens)):
        tok = tokens[k]
        if tok.kind not in ("string_const", "identifier") or not re.search(r"[/\\]", tok.text):
            continue
        prev = next((t for t in reversed(tokens[at + 2:k]) if t.text != "="), None)
        if prev is None or _word(prev) not in _TEXT_OPTIONS:
            raise QueryError(
                f"COPY option {prev.text if prev else ''} {tok.text}: file names and "
                "extensions may not contain path separators; give the folder as the target."
            )


def _copy_target(tok: _Token) -> str:
    text = tok.text
    if tok.kind == "string_const" and len(text) >= 2 and text[0] == text[-1] == "'":
        path = text[1:-1].replace("''", "'")
    elif tok.kind == "identifier":
        path = _word(tok) if text.startswith('"') else text
    else:
        shown = text if tok.kind == "keyword" else "an expression"
        raise QueryError(
            f"COPY ... TO {shown}: give the target as a plain quoted file path, e.g. "
            "TO 'out.csv' (no expression, escape string or STDOUT), so it can be checked."
        )
    if _SCHEME.match(path):
        raise QueryError(f"COPY ... TO {path!r}: write to a plain local path, not a URL.")
    return path


def _local_paths(path: str) -> set[str]:
    """Every reading of ``path`` as a local file: DuckDB expands a leading '~' to $HOME
    followed by the rest ('~x' is $HOMEx), Python to a user's home; an unquoted name may be
    case-folded."""
    out = {path, path.lower()} if "/" not in path else {path}
    if path.startswith("~"):
        out |= {os.environ.get("HOME", "") + path[1:], os.path.expanduser(path)}
    return out


def _outside(path: str, root: str | None, *, shown: str) -> None:
    if root is None:  # an S3 lakehouse: local files cannot reach it
        return
    real = os.path.realpath(os.path.join(os.getcwd(), path))
    base = os.path.realpath(root)
    inside = real == base or real.startswith(base.rstrip(os.sep) + os.sep)
    if inside or base.startswith(real.rstrip(os.sep) + os.sep):
        where = "inside" if inside else "a folder holding"
        raise QueryError(
            f"COPY ... TO {shown!r}: that is {where} the lakehouse {root}, which only pipeline "
            "stages write. Write the file somewhere else."
        )
