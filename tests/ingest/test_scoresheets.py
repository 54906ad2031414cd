"""Score sheets with drifting headers, encodings, separators, ISBN and date forms -> scores."""

from __future__ import annotations

from datetime import UTC, date, datetime

import openpyxl
import pyarrow as pa
import pytest

from catalog import CorpusError
from catalog.rules import current_scores
from catalog.schemas import TABLES
from ingest.scoresheets import (
    ScoreSheetError,
    SheetRejected,
    normalise_isbn,
    read_score_sheet,
)

# Valid ISBNs (ISBN-10 -> ISBN-13): 0-306-40615-2, 1-86197-271-7, 0-14-044913-2, 0-8044-2957-X.
A, B, C, D = "9780306406157", "9781861972712", "9780140449136", "9780804429573"


def _day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def _rows(result) -> list[tuple]:
    return [
        (r["book_id"], r["metric"], r["value"], r["scored_at"], r["source_row"])
        for r in result.scores.to_pylist()
    ]


@pytest.fixture
def semicolon_cp1252(tmp_path):
    """A ';' export in Windows-1252: hyphenated ISBN-13, ISBN-10, US dates, a 2-line title."""
    path = tmp_path / "scores_export.csv"
    path.write_bytes(
        (
            "book_id;title;lexile_band;bt_easiness;scored_on\r\n"
            '978-0-306-40615-7;"Caf\u00e9 \u2018Stories\u2019\r\nor, a second line";1100L;'
            "-0.5;03/02/2020\r\n"  # 1
            "080442957X;Na\u00efve;;1.25;03/02/2020\r\n"  # 2: no lexile, ISBN-10 with X
            "978-0-306-40615-8;Bad checksum;900L;0.1;03/02/2020\r\n"  # 3
            "1861972717;Undated;700L;0.2;next week\r\n"  # 4: bad date
            "0140449132;Range;410L-600L;-1.5;12/24/2019\r\n"  # 5: lexile range, bt kept
            ";Unscored;;;\r\n"  # 6: nothing to score
        ).encode("cp1252")
    )
    return path


def test_semicolon_cp1252_us_dates_and_rejects(semicolon_cp1252):
    r = read_score_sheet(semicolon_cp1252, source_file="Scores/scores_export.csv")
    assert r.columns == {
        "book_id": "book_id",
        "lexile": "lexile_band",
        "bt_easiness": "bt_easiness",
        "scored_at": "scored_on",
    }
    assert r.scores.schema == TABLES["scores"].schema
    assert set(r.scores.column("source_file").to_pylist()) == {"Scores/scores_export.csv"}
    assert sorted(_rows(r)) == sorted(
        [
            (A, "lexile", 1100.0, _day(2020, 3, 2), 1),
            (A, "bt_easiness", -0.5, _day(2020, 3, 2), 1),
            (D, "bt_easiness", 1.25, _day(2020, 3, 2), 2),
            (C, "bt_easiness", -1.5, _day(2019, 12, 24), 5),
        ]
    )
    assert [x.source_row for x in r.rejected] == [3, 4, 5]
    assert all(x.source_file == "Scores/scores_export.csv" for x in r.rejected)
    bad_isbn, bad_date, rng = (x.reason for x in r.rejected)
    assert "ISBN '978-0-306-40615-8' is not a valid ISBN-10/13 (checksum)" in bad_isbn
    assert "'scored_on'" in bad_date and "'next week'" in bad_date and "YYYY-MM-DD" in bad_date
    assert "'lexile_band'" in rng and "'410L-600L' is a range" in rng


def test_comma_csv_iso_dates_and_later_score_wins(semicolon_cp1252, tmp_path):
    path = tmp_path / "rescored.csv"
    path.write_text(
        "ISBN-13,BT Easiness,Lexile Band,Scored\n"
        "978-0-306-40615-7,-0.25,1200,2021-09-14\n"
        "9780804429573,0.75,1000L,2019-01-01\n",  # older than the export: does not win
        encoding="utf-8",
    )
    new = read_score_sheet(path)
    assert new.columns == {
        "book_id": "ISBN-13",
        "bt_easiness": "BT Easiness",
        "lexile": "Lexile Band",
        "scored_at": "Scored",
    }
    assert new.rejected == []
    assert set(new.scores.column("source_file").to_pylist()) == {str(path)}
    old = read_score_sheet(semicolon_cp1252)
    history = pa.concat_tables([new.scores, old.scores])
    cur = {
        (x["book_id"], x["metric"]): (x["value"], x["scored_at"])
        for x in current_scores(history).to_pylist()
    }
    assert cur == {
        (A, "bt_easiness"): (-0.25, _day(2021, 9, 14)),
        (A, "lexile"): (1200.0, _day(2021, 9, 14)),
        (D, "bt_easiness"): (1.25, _day(2020, 3, 2)),
        (D, "lexile"): (1000.0, _day(2019, 1, 1)),
        (C, "bt_easiness"): (-1.5, _day(2019, 12, 24)),
    }


def test_xlsx_with_excel_dates_and_numeric_isbns(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Scores 2018 (export)"])  # a title row above the header
    ws.append(["ISBN", "Title", "Author", "Lexile", "Ease (BT)", "Date Scored"])
    ws.append([int(A), "Int ISBN", "X", 1100, -0.831825, date(2018, 5, 1)])
    ws.append([float(B), "Float ISBN", "Y", "900L", -1.5, "2018-05-01"])
    ws.append([306406152, "ISBN-10 lost its 0", "Z", None, 0.5, 43221])  # serial 2018-05-01
    ws.append([9781234567890, "Bad", "Z", 800, 0.1, date(2018, 5, 1)])
    assert ws["F3"].is_date  # a real date cell, not text
    path = tmp_path / "scores_2018.xlsx"
    wb.save(path)

    r = read_score_sheet(path, data=path.read_bytes(), source_file="Scores/scores_2018.xlsx")
    assert r.columns == {
        "book_id": "ISBN",
        "lexile": "Lexile",
        "bt_easiness": "Ease (BT)",
        "scored_at": "Date Scored",
    }
    may1 = _day(2018, 5, 1)
    assert sorted(_rows(r)) == sorted(
        [
            (A, "lexile", 1100.0, may1, 1),
            (A, "bt_easiness", -0.831825, may1, 1),
            (B, "lexile", 900.0, may1, 2),
            (B, "bt_easiness", -1.5, may1, 2),
            (A, "bt_easiness", 0.5, may1, 3),
        ]
    )
    assert r.rejected == [
        SheetRejected(
            "Scores/scores_2018.xlsx",
            4,
            "ISBN '9781234567890' is not a valid ISBN-10/13 (checksum); "
            "correct it from the book's copyright page",
        )
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("978-0-306-40615-7", A),
        ("978 0 306 40615 7", A),
        ("0-306-40615-2", A),
        ("0306406152", A),
        ("ISBN-13: 978-0-306-40615-7", A),
        ("080442957x", D),
        (9780306406157, A),
        (9780306406157.0, A),
        ("9780306406157.0", A),
        (306406152, A),
        ("978\u20110306406157", A),
        ("978-0-306-40615-8", None),
        ("978-1-2345", None),
        ("9.78031E+12", None),
        ("", None),
        (None, None),
        (True, None),
        (97803064.5, None),
        ("9790000000001", "9790000000001"),
    ],
)
def test_normalise_isbn(value, expected):
    assert normalise_isbn(value) == expected


@pytest.mark.parametrize(
    ("isbn_h", "bt_h", "lex_h", "date_h"),
    [
        ("ISBN13", "bt-ease", "LEXILE_LEVEL", "Date of scoring"),
        ("ISBN No.", "Easiness", "Lexile score", "scored_at"),
        (" Isbn-10 ", "Bradley–Terry Easiness", "lexile measure", "DATE"),
    ],
)
def test_header_synonyms(tmp_path, isbn_h, bt_h, lex_h, date_h):
    path = tmp_path / "s.csv"
    path.write_text(f"Title,{isbn_h},{bt_h},{lex_h},{date_h},s.e.\nT,{A},0.5,BR300L,20200105,9\n")
    r = read_score_sheet(path)
    assert r.columns == {
        "book_id": isbn_h.strip(),
        "bt_easiness": bt_h,
        "lexile": lex_h,
        "scored_at": date_h,
    }
    assert sorted(_rows(r)) == [
        (A, "bt_easiness", 0.5, _day(2020, 1, 5), 1),
        (A, "lexile", -300.0, _day(2020, 1, 5), 1),
    ]


def test_day_first_column_decimal_comma_and_sep_line(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text(
        f"sep=;\nISBN;BT;Date\n{A};-0,5;03/02/2020\n{B};1,25;14/09/2021\n{C};0,1;1.2.2020\n"
    )
    r = read_score_sheet(path)
    got = {x["book_id"]: (x["value"], x["scored_at"]) for x in r.scores.to_pylist()}
    # "14/09/2021" shows the column is day-first, so 03/02/2020 is 3 February.
    assert r.rejected == [] and got == {
        A: (-0.5, _day(2020, 2, 3)),
        B: (1.25, _day(2021, 9, 14)),
        C: (0.1, _day(2020, 2, 1)),
    }


def test_current_scores_ties_are_deterministic():
    day = _day(2020, 1, 1)
    rows = [
        dict(
            book_id=A, metric="lexile", value=1.0, scored_at=day, source_file="a.csv", source_row=9
        ),
        dict(
            book_id=A, metric="lexile", value=2.0, scored_at=day, source_file="b.csv", source_row=1
        ),
        dict(
            book_id=B, metric="lexile", value=4.0, scored_at=day, source_file="a.csv", source_row=3
        ),
        dict(
            book_id=B, metric="lexile", value=3.0, scored_at=day, source_file="a.csv", source_row=2
        ),
        dict(
            book_id=B,
            metric="lexile",
            value=5.0,
            scored_at=_day(2019, 1, 1),
            source_file="z.csv",
            source_row=7,
        ),
    ]
    schema = TABLES["scores"].schema
    for order in (rows, rows[::-1]):
        cur = current_scores(pa.Table.from_pylist(order, schema=schema))
        assert cur.schema == schema
        assert [(x["book_id"], x["value"]) for x in cur.to_pylist()] == [(A, 2.0), (B, 4.0)]
    empty = current_scores(schema.empty_table())
    assert empty.num_rows == 0 and empty.schema == schema


def test_not_a_score_sheet(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("Title,BT Easiness,Scored\nSome book,0.5,2020-01-01\n")
    with pytest.raises(ScoreSheetError) as e:
        read_score_sheet(path, source_file="Scores/notes.csv")
    msg = str(e.value)
    assert isinstance(e.value, CorpusError)
    assert "Scores/notes.csv" in msg and "no header row" in msg and "an ISBN column" in msg
    assert "'Title', 'BT Easiness', 'Scored'" in msg  # the headers found
    assert "'ISBN-13'" in msg and "'Ease (BT)'" in msg  # the headers accepted
    with pytest.raises(ScoreSheetError, match="a score column"):
        read_score_sheet(path, data=b"ISBN,Title\n9780306406157,T\n")
    with pytest.raises(ScoreSheetError, match=r"cannot be opened as an \.xlsx"):
        read_score_sheet("broken.xlsx", data=b"PK\x03\x04 truncated upload")
    with pytest.raises(ScoreSheetError, match="empty"):
        read_score_sheet("empty.csv", data=b"")
    with pytest.raises(ScoreSheetError, match="no date column"):
        read_score_sheet("undated.csv", data=b"ISBN,BT\n9780306406157,0.5\n")
    r = read_score_sheet(
        "undated.csv", data=b"ISBN,BT\n9780306406157,0.5\n", default_scored_at=datetime(2020, 1, 1)
    )
    assert _rows(r) == [(A, "bt_easiness", 0.5, _day(2020, 1, 1), 1)]


@pytest.mark.parametrize("encoding", ["cp1252", "mac_roman", "utf-8-sig", "utf-16", "utf-8"])
def test_legacy_encodings(encoding):
    from ingest.scoresheets import _decode

    text = (
        "ISBN;Title;BT;Date\r\n"
        f'{A};"Caf\u00e9 \u201cStories\u201d \u2014 Na\u00efve\r\nor, a second line";-0,5;'
        "03/02/2020\r\n"
    )
    data = text.encode(encoding)
    assert _decode(data, "s.csv") == text
    r = read_score_sheet("s.csv", data=data)
    assert _rows(r) == [(A, "bt_easiness", -0.5, _day(2020, 3, 2), 1)]
