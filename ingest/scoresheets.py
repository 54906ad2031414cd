"""Score spreadsheets of an editorial share -> rows of the ``scores`` table.

Editorial teams export scores from whatever tool they used that year, so one kind of sheet
arrives with drifting headers (``ISBN`` / ``book_id`` / ``ISBN-13``), separators (``,`` or
``;``), encodings, date styles (ISO, US, Excel date cells) and ISBN forms (ISBN-10, hyphenated,
numbers). This module

* finds the header row and maps each header to a field by normalising it (case, accents,
  punctuation, word order, filler words) and looking it up in a table of synonyms per field,
* normalises every ISBN to a checksum-validated ISBN-13 (python-stdnum),
* parses dates and metric values, and reports every row or value it cannot use with its data
  row number and a reason that says how to fix it, and
* keeps the history: every dated score is a row; which one is current ("a later dated score
  supersedes an earlier one") is the catalog's rule, :func:`catalog.rules.current_scores`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from pathlib import Path

import pyarrow as pa
from stdnum import isbn as stdnum_isbn
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
    ValidationError,
)

from catalog.errors import CorpusError
from catalog.schemas import TABLES
from ingest.readers import ReaderError, decode_text

logger = logging.getLogger(__name__)

SCORES_SCHEMA: pa.Schema = TABLES["scores"].schema

# How many rows above the header a sheet may have (a title line, an export note, blank rows).
_HEADER_SEARCH_ROWS = 10
_CSV_DELIMITERS = (",", ";", "\t", "|")


class ScoreSheetError(CorpusError):
    """A file is not a readable score sheet (no ISBN column, no score column, not a table)."""


@dataclass(frozen=True)
class SheetRejected:
    """A row, or one value of a row, that did not become a score.

    Attributes:
        source_file: The sheet, as given to :func:`read_score_sheet`.
        source_row: 1-based data row number: the first row below the header row is 1, blank
            rows count (for a sheet whose header is its first line, the spreadsheet row is
            ``source_row + 1``). The same numbering as ``scores.source_row``.
        reason: What is wrong and how to fix it.
    """

    source_file: str
    source_row: int
    reason: str


@dataclass(frozen=True)
class SheetResult:
    """What one score sheet holds.

    Attributes:
        scores: One row per (book, metric) value, exactly the ``scores`` table schema.
        rejected: Rows and values that were kept out, in sheet order.
        columns: Which source header was mapped to which field, e.g.
            ``{"book_id": "ISBN-13", "bt_easiness": "BT Easiness", "scored_at": "Scored"}``.
    """

    scores: pa.Table
    rejected: list[SheetRejected]
    columns: dict[str, str]


# ---------------------------------------------------------------------------------------------
# ISBNs

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
_ISBN_LABEL = re.compile(r"^ISBN(?:[-\s]?1[03])?\s*:?\s*", re.IGNORECASE)
_SCIENTIFIC = re.compile(r"^\d(?:[.,]\d+)?E\+?\d+$", re.IGNORECASE)


def _isbn13(value: object) -> tuple[str | None, str]:
    """``(ISBN-13, "")`` or ``(None, why it is not an ISBN)``."""
    if value is None or isinstance(value, bool):
        return None, "it is empty"
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None, "a number with decimals is not an ISBN"
        value = int(value)
    if isinstance(value, int):
        text = str(value)
    else:
        text = unicodedata.normalize("NFKC", str(value)).translate(_DASHES).strip()
        # A leading apostrophe is how spreadsheet users force a cell to text.
        text = _ISBN_LABEL.sub("", text.lstrip("'").strip())
        text = re.sub(r"[\s-]", "", text)
        if _SCIENTIFIC.match(text):
            return None, (
                "it is in scientific notation, which has lost digits; format the column as "
                "text and re-enter the ISBN"
            )
        # "9781234567897.0": a float column exported as text.
        text = re.sub(r"^(\d+)\.0*$", r"\1", text)
    # A spreadsheet drops the leading zero of an ISBN-10 like 0306406152 stored as a number;
    # nine digits are also the old SBN, which becomes an ISBN-10 by the same leading zero.
    if len(text) == 9 and text.isdigit():
        text = "0" + text
    try:
        number = stdnum_isbn.validate(text)
    except InvalidChecksum:
        return None, "checksum"
    except InvalidLength:
        return None, f"{len(text)} characters, an ISBN has 10 or 13"
    except InvalidComponent:
        return None, "an ISBN-13 starts with 978 or 979 (979-0 is an ISMN, for music)"
    except InvalidFormat:
        return None, "only digits (and a final X in an ISBN-10) belong in an ISBN"
    except ValidationError as e:  # a subclass stdnum may add later
        return None, str(e)
    return stdnum_isbn.to_isbn13(number), ""


def normalise_isbn(value: object) -> str | None:
    """Normalise an ISBN in any common form to a checksum-validated ISBN-13.

    Accepts ISBN-10 and ISBN-13, hyphenated or spaced, with an ``ISBN``/``ISBN-13:`` label,
    and numbers from spreadsheets (``9781234567897``, ``9781234567897.0``, an ISBN-10 whose
    leading zero was dropped).

    Args:
        value: A string, an int or a float.

    Returns:
        The 13-digit ISBN without hyphens, or None if ``value`` is not a valid ISBN (wrong
        length, characters or checksum).
    """
    return _isbn13(value)[0]


# ---------------------------------------------------------------------------------------------
# Header mapping

# Words that change nothing about what a column holds ("ISBN No.", "Lexile score").
_FILLER = frozenset({"no", "nr", "num", "number", "code", "value", "score", "of", "the"})


def _header_key(header: object) -> frozenset[str]:
    """A header as a set of words: case, accents, punctuation and word order do not matter."""
    # Accents go (NFKD, then drop combining marks); any other non-ASCII character separates
    # words, so "Bradley–Terry" (en dash) is two words like "Bradley-Terry".
    decomposed = unicodedata.normalize("NFKD", str(header))
    text = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    # Letters and digits split, so "ISBN13", "isbn_13" and "ISBN-13" are the same header.
    words = re.findall(r"[a-z]+|\d+", text)
    kept = [w for w in words if w not in _FILLER]
    return frozenset(kept or words)


# Accepted headers per field, most specific first: when two columns map to one field, the
# earlier synonym wins (an "ISBN-13" column over an "ISBN-10" column). Matching uses
# _header_key, so "Ease (BT)", "BT ease" and "bt-ease" are all the second bt_easiness entry.
HEADER_SYNONYMS: dict[str, tuple[str, ...]] = {
    "book_id": ("ISBN-13", "ISBN", "ISBN-10", "book_id", "book ISBN", "EAN-13", "EAN"),
    "bt_easiness": (
        "BT Easiness",
        "Ease (BT)",
        "Bradley-Terry easiness",
        "Easiness",
        "BT",
    ),
    "lexile": ("Lexile", "Lexile Band", "Lexile level", "Lexile measure"),
    "scored_at": (
        "scored_at",
        "Scored on",
        "Scored",
        "Date scored",
        "Scoring date",
        "Date of scoring",
        "Score date",
        "Rated on",
        "Date",
    ),
}
_SYNONYM_KEYS = {
    field: tuple(_header_key(h) for h in names) for field, names in HEADER_SYNONYMS.items()
}
METRICS = ("bt_easiness", "lexile")


def _map_headers(headers: Sequence[object]) -> dict[str, int]:
    """``{field: column index}`` for every header that is a synonym of a field."""
    best: dict[str, tuple[int, int]] = {}  # field -> (synonym rank, column)
    for col, header in enumerate(headers):
        if header is None or not str(header).strip():
            continue
        key = _header_key(header)
        for field, keys in _SYNONYM_KEYS.items():
            if key in keys:
                rank = keys.index(key)
                if field not in best or rank < best[field][0]:
                    best[field] = (rank, col)
    return {field: col for field, (_, col) in best.items()}


def _is_score_header(row: Sequence[object]) -> bool:
    mapped = _map_headers(row)
    return "book_id" in mapped and any(m in mapped for m in METRICS)


def _find_header(rows: Sequence[Sequence[object]]) -> int | None:
    for i, row in enumerate(rows[:_HEADER_SEARCH_ROWS]):
        if _is_score_header(row):
            return i
    return None


def _accepted_headers() -> str:
    return "; ".join(
        f"{field}: {', '.join(repr(h) for h in names)}" for field, names in HEADER_SYNONYMS.items()
    )


def _not_a_score_sheet(source_file: str, rows: Sequence[Sequence[object]]) -> ScoreSheetError:
    # The header is the widest of the top rows (a title line above it has one cell).
    top = [r for r in rows[:_HEADER_SEARCH_ROWS] if any(not _blank(c) for c in r)]
    if not top:
        return ScoreSheetError(f"{source_file} is not a score sheet: it holds no rows.")
    first = max(top, key=lambda r: sum(not _blank(c) for c in r))
    found = [str(c).strip() for c in first if not _blank(c)]
    mapped = _map_headers(first)
    missing = "an ISBN column" if "book_id" not in mapped else "a score column"
    if "book_id" not in mapped and not any(m in mapped for m in METRICS):
        missing = "an ISBN column and a score column"
    return ScoreSheetError(
        f"{source_file} is not a score sheet: no header row (in its first "
        f"{_HEADER_SEARCH_ROWS} rows) has {missing}. Headers found: "
        f"{', '.join(repr(h) for h in found)}. Headers accepted (case, spaces, punctuation "
        f"and word order do not matter): {_accepted_headers()}. Rename the header in the "
        "sheet if it holds scores."
    )


# ---------------------------------------------------------------------------------------------
# Cell values

_MISSING = frozenset({"", "na", "n/a", "n.a.", "nan", "none", "null", "-", "--", "?", "#n/a"})
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().translate(_DASHES).lower() in _MISSING
    return False


def _to_float(value: object) -> float | None:
    """A finite float from a number or a numeric string (decimal point or comma), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        x = float(value)
        return x if math.isfinite(x) else None
    if not isinstance(value, str):
        return None
    text = value.strip().translate(_DASHES).replace(" ", "").replace("\u00a0", "")
    if _DECIMAL_COMMA.match(text):  # ';'-separated exports often come with decimal commas
        text = text.replace(",", ".")
    if not _NUMBER.match(text):
        return None
    x = float(text)
    return x if math.isfinite(x) else None


def _parse_bt(value: object) -> tuple[float | None, str]:
    x = _to_float(value)
    if x is None:
        return None, f"BT easiness {value!r} is not a number; enter a decimal such as -1.25"
    return x, ""


# Lexile codes: BR (beginning reader; BR300L means -300) and the two-letter codes that sit in
# front of a measure (AD820L: adult directed) without changing it.
_LEXILE = re.compile(
    r"^(?P<code>BR|AD|NC|HL|IG|GN|NP)?\s*(?P<num>[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
    r"\s*L?$",
    re.IGNORECASE,
)
_LEXILE_RANGE = re.compile(r"\d\s*L?\s*(?:-|to)\s*(?:BR)?\s*\d", re.IGNORECASE)


def _parse_lexile(value: object) -> tuple[float | None, str]:
    if not isinstance(value, str):
        x = _to_float(value)
        if x is None:
            return None, f"Lexile {value!r} is not a number; enter a measure such as 1100L"
        return x, ""
    text = value.strip().translate(_DASHES)
    if _LEXILE_RANGE.search(text):
        return None, (
            f"Lexile {value!r} is a range, not a single measure; enter one measure "
            "(e.g. 1100L) or leave the cell blank"
        )
    m = _LEXILE.match(text)
    if not m:
        return None, f"Lexile {value!r} is not a Lexile measure; enter e.g. 1100L or 1100"
    x = float(m["num"].replace(",", ""))
    if (m["code"] or "").upper() == "BR":
        x = -abs(x)
    return x, ""


_METRIC_PARSERS: dict[str, Callable[[object], tuple[float | None, str]]] = {
    "bt_easiness": _parse_bt,
    "lexile": _parse_lexile,
}

# Dates. Year-first is ISO; with the year last, '.' is the European day-first style and '/'
# or '-' is read month-first (US) unless the column itself shows days above 12 in front.
_YEAR_FIRST = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")
_YEAR_LAST = re.compile(
    r"^(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})"
    r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?$"
)
_MONTH_NAME_FORMATS = ("%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%d-%b-%Y", "%d-%b-%y")
_EXCEL_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)  # serial 1 is 1900-01-01 (Lotus leap bug)
# Excel serials a score date can be (1950-01-01 .. 2099-12-31): anything else is not a date.
_EXCEL_SERIALS = (18264, 73050)


def _utc(d: date | datetime) -> datetime:
    if isinstance(d, datetime):
        # A naive timestamp in a sheet has no zone: read it as UTC, like a plain date.
        return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
    return datetime.combine(d, time(), tzinfo=UTC)


def _day_first(values: Sequence[object]) -> bool:
    """Whether a date column writes day/month/year: only if a first part above 12 shows it."""
    day_first = month_first = False
    for v in values:
        m = _YEAR_LAST.match(v.strip()) if isinstance(v, str) else None
        if m and m[2] != ".":
            day_first |= int(m[1]) > 12
            month_first |= int(m[3]) > 12
    return day_first and not month_first


def _parse_date(value: object, *, day_first: bool) -> tuple[datetime | None, str]:
    why = (
        f"date {value!r} is not a date I can read; use YYYY-MM-DD (e.g. 2018-05-01), "
        "MM/DD/YYYY or an Excel date cell"
    )
    if isinstance(value, datetime | date):
        return _utc(value), ""
    if isinstance(value, bool):
        return None, why
    if isinstance(value, int | float):
        return _date_from_number(float(value), why)
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):  # an undated-format Excel cell exported as text
        return _date_from_number(float(text), why)
    try:
        if re.match(r"^\d{4}-\d{2}-\d{2}", text):
            return _utc(datetime.fromisoformat(text)), ""
        if m := _YEAR_FIRST.match(text):
            return _utc(date(int(m[1]), int(m[2]), int(m[3]))), ""
        if m := _YEAR_LAST.match(text):
            first, second, year = int(m[1]), int(m[3]), int(m[4])
            if len(m[4]) == 2:  # the spreadsheet pivot: 00-69 -> 20xx, 70-99 -> 19xx
                year += 2000 if year < 70 else 1900
            day, month = (first, second) if m[2] == "." or day_first else (second, first)
            hour = int(m[5] or 0)
            if m[8]:  # 12-hour clock: 12:30 AM is 00:30, 1:00 PM is 13:00
                hour = hour % 12 + (12 if m[8].lower() == "pm" else 0)
            return _utc(datetime(year, month, day, hour, int(m[6] or 0), int(m[7] or 0))), ""
    except ValueError:
        return None, why
    for fmt in _MONTH_NAME_FORMATS:
        try:
            return _utc(datetime.strptime(text, fmt)), ""
        except ValueError:
            continue
    return None, why


def _date_from_number(x: float, why: str) -> tuple[datetime | None, str]:
    if x.is_integer() and 19000101 <= x <= 21001231:  # YYYYMMDD written as a number
        n = int(x)
        try:
            return _utc(date(n // 10000, n // 100 % 100, n % 100)), ""
        except ValueError:
            return None, why
    if _EXCEL_SERIALS[0] <= x <= _EXCEL_SERIALS[1]:
        return _EXCEL_EPOCH + timedelta(days=x), ""
    return None, why


# ---------------------------------------------------------------------------------------------
# Reading files


def _decode(data: bytes, source_file: str) -> str:
    """Text of a CSV in any common encoding: the readers' decoding (:func:`decode_text`), line
    ends kept for the csv module, which reads a line break inside a quoted cell itself."""
    try:
        text, encoding = decode_text(data, name=source_file, keep_line_ends=True)
    except ReaderError as e:
        raise ScoreSheetError(
            f"{source_file} is not a score sheet: it is neither a workbook nor text in a known "
            "encoding. Export the scores as .xlsx or .csv."
        ) from e
    logger.debug("%s: decoded as %s", source_file, encoding)
    return text


def _csv_rows(data: bytes, source_file: str) -> list[list[object]]:
    text = _decode(data, source_file)
    lines = text.splitlines()
    # Excel writes "sep=;" as the first line to name the separator of the rest.
    if lines and (m := re.fullmatch(r'"?sep=(.)"?,*', lines[0].strip(), re.IGNORECASE)):
        candidates: tuple[str, ...] = (m[1],)
        text = text.split("\n", 1)[1] if "\n" in text else ""
    else:
        candidates = _CSV_DELIMITERS

    def parse(delimiter: str, limit: int | None = None) -> list[list[object]]:
        try:
            return list(islice(csv.reader(io.StringIO(text), delimiter=delimiter), limit))
        except csv.Error as e:
            raise ScoreSheetError(
                f"{source_file} is not a readable CSV ({e}); re-export it from the "
                "spreadsheet as CSV or .xlsx."
            ) from e

    # The separator is the one under which a score header appears; among several, the one
    # that splits that header into the most columns. Counting characters instead would be
    # fooled by commas inside quoted titles of a ';' file.
    best: tuple[int, str] | None = None
    for d in candidates:
        head = parse(d, _HEADER_SEARCH_ROWS)
        i = _find_header(head)
        if i is not None and (best is None or len(head[i]) > best[0]):
            best = (len(head[i]), d)
    if best is None:
        widest = max(candidates, key=lambda d: len(next(iter(parse(d, 1)), [])))
        return parse(widest, _HEADER_SEARCH_ROWS)  # the caller reports it as not a sheet
    return parse(best[1])


def _xlsx_rows(data: bytes, source_file: str) -> list[list[object]]:
    import openpyxl

    try:
        # data_only: a formula cell's last computed value, which is what the editor saw.
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises zip, XML, Key and Value errors for bad workbooks
        raise ScoreSheetError(
            f"{source_file} is not a score sheet: it cannot be opened as an .xlsx workbook "
            f"({type(e).__name__}: {e}). Re-save it from the spreadsheet as .xlsx or .csv."
        ) from e
    try:
        sheets = [
            (ws.title, [list(r) for r in ws.iter_rows(values_only=True)]) for ws in wb.worksheets
        ]
    finally:
        wb.close()
    found = [(title, rows) for title, rows in sheets if _find_header(rows) is not None]
    if not found:
        return sheets[0][1] if sheets else []
    if len(found) > 1:
        logger.warning(
            "%s: only worksheet %r is read; worksheets %s also look like scores",
            source_file,
            found[0][0],
            [t for t, _ in found[1:]],
        )
    return found[0][1]


def _read_rows(data: bytes, name: str, source_file: str) -> list[list[object]]:
    if not data.strip():
        raise ScoreSheetError(f"{source_file} is not a score sheet: the file is empty.")
    if data.startswith(b"PK\x03\x04"):  # a zip: .xlsx whatever the name says
        return _xlsx_rows(data, source_file)
    if data.startswith(b"\xd0\xcf\x11\xe0") or name.lower().endswith(".xls"):
        raise ScoreSheetError(
            f"{source_file}: legacy binary Excel (.xls) workbooks are not read; open it in a "
            "spreadsheet program and save it as .xlsx or .csv."
        )
    return _csv_rows(data, source_file)


def read_score_sheet(
    path: Path | str,
    *,
    data: bytes | None = None,
    source_file: str | None = None,
    default_scored_at: datetime | None = None,
) -> SheetResult:
    """Read a score spreadsheet into rows of the ``scores`` table.

    The format comes from the content: an .xlsx workbook (the first worksheet with a score
    header), or a CSV separated by ``,``, ``;``, tab or ``|`` in any common encoding. The
    header row may sit below a few title rows; headers are mapped by :data:`HEADER_SYNONYMS`.
    Metrics are ``bt_easiness`` (a decimal) and ``lexile`` (``1100L``, ``1100``, ``BR300L``;
    a range such as ``410L-600L`` is rejected). ``scored_at`` is UTC midnight of the row's
    date (ISO, ``MM/DD/YYYY`` or day-first when the column shows it, Excel date cells and
    serials). Blank values give no row; an invalid ISBN or date rejects the row, an invalid
    value only that value.

    Args:
        path: The file; read unless ``data`` is given.
        data: The file's bytes, when the caller already has them.
        source_file: What goes into ``source_file`` of rows and rejects; default ``str(path)``.
        default_scored_at: Date for a sheet without a date column or rows with a blank date
            (e.g. the file's modification time). Without it such rows are rejected.

    Returns:
        The scores, the rejected rows and values, and the header mapping.

    Raises:
        ScoreSheetError: The file cannot be read, or is not a score sheet (no recognisable
            ISBN column or no score column; the message lists the headers found and the
            headers accepted).
    """
    source_file = str(path) if source_file is None else source_file
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ScoreSheetError(f"cannot read score sheet {source_file}: {e}") from e
    rows = _read_rows(data, str(path), source_file)
    header_at = _find_header(rows)
    if header_at is None:
        raise _not_a_score_sheet(source_file, rows)
    header = rows[header_at]
    mapping = _map_headers(header)
    columns = {field: str(header[col]).strip() for field, col in mapping.items()}
    if "scored_at" not in mapping and default_scored_at is None:
        raise ScoreSheetError(
            f"{source_file} has no date column, so its scores cannot be ordered against other "
            f"sheets. Headers found: {', '.join(repr(str(h)) for h in header if not _blank(h))}."
            f" Date headers accepted: {', '.join(map(repr, HEADER_SYNONYMS['scored_at']))}. "
            "Add a date column, or pass default_scored_at (e.g. the file's modification time)."
        )
    body = rows[header_at + 1 :]

    def cell(row: Sequence[object], field: str) -> object:
        col = mapping.get(field)
        return row[col] if col is not None and col < len(row) else None

    day_first = _day_first([cell(r, "scored_at") for r in body])
    out: list[dict] = []
    rejected: list[SheetRejected] = []

    def reject(n: int, reason: str) -> None:
        rejected.append(SheetRejected(source_file, n, reason))

    for n, row in enumerate(body, start=1):
        raw_isbn = cell(row, "book_id")
        present = {m: cell(row, m) for m in METRICS if m in mapping}
        present = {m: v for m, v in present.items() if not _blank(v)}
        if not present:
            continue  # a blank line, or a book that was not scored: not an error
        if _blank(raw_isbn):
            reject(
                n,
                f"no ISBN in column {columns['book_id']!r}; its scores belong to no "
                "book: fill in the ISBN or delete the row",
            )
            continue
        book_id, why = _isbn13(raw_isbn)
        if book_id is None:
            reject(
                n,
                f"ISBN {str(raw_isbn).strip()!r} is not a valid ISBN-10/13 ({why}); "
                "correct it from the book's copyright page",
            )
            continue
        values: dict[str, float] = {}
        for metric, raw in present.items():
            value, why = _METRIC_PARSERS[metric](raw)
            if value is None:
                reject(n, f"column {columns[metric]!r}: {why}")
            else:
                values[metric] = value
        raw_date = cell(row, "scored_at")
        if _blank(raw_date):
            if default_scored_at is None:
                reject(
                    n,
                    f"no date in column {columns['scored_at']!r}; a score needs the date "
                    "it was given: fill it in",
                )
                continue
            scored_at = _utc(default_scored_at)
        else:
            scored_at, why = _parse_date(raw_date, day_first=day_first)
            if scored_at is None:
                reject(n, f"column {columns['scored_at']!r}: {why}")
                continue
        # A book listed twice on one date keeps both rows: the history is what the sheet says,
        # and catalog.rules.current_scores lets the later row win.
        out.extend(
            {
                "book_id": book_id,
                "metric": metric,
                "value": value,
                "scored_at": scored_at,
                "source_file": source_file,
                "source_row": n,
            }
            for metric, value in values.items()
        )
    logger.info(
        "%s: %d scores, %d rejected, columns %s", source_file, len(out), len(rejected), columns
    )
    return SheetResult(pa.Table.from_pylist(out, schema=SCORES_SCHEMA), rejected, columns)
