"""The one shape of text every reader produces, and the pieces of it formats share.

Chapter-like heading lines and "by ..." bylines are recognised the same way in every format;
the lines of a paragraph are re-joined with one rule for words hyphenated at a line end; the
body is composed as non-empty paragraphs separated by one blank line; titles and authors are
cleaned and compared the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A chapter-like heading line: "Chapter 3", "CHAPTER IV", "Chap. 2", "Part One", "Book 2:
# The Storm". The number is digits, a well-formed Roman numeral or a number word, so that
# prose ("Part civil war...") does not qualify.
_HEADING = re.compile(
    r"\s*(chapter|chap\.|part|book)\s+"
    r"(\d+|(?=[mdclxvi])m{0,3}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})"
    r"|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
    r"(\s*$|\s*[.:\-\u2013\u2014]|\s+\S)",
    re.IGNORECASE,
)
_HEADING_MAX = 100
# "by Jane Doe" opening an author block of a header or title page.
_BYLINE = re.compile(r"^\s*by\s+(\S.*)$", re.IGNORECASE)
# A hyphen that only exists because a word was broken at a line end: letter + "-".
_BROKEN_WORD = re.compile(r"[^\W\d_]-$")
# A hyphen or dash that ends a line right after a word belongs to that word ("Jean-" /
# "Paul", "cogs—" / "slowly"): the lines join without a space.
_TRAILING_DASH = re.compile(r"\S[-\u2010\u2011\u2013\u2014]$")


def _is_heading(line: str) -> bool:
    """A short line that starts with a capitalised "Chapter 3"-like heading."""
    line = line.strip()
    return len(line) <= _HEADING_MAX and line[:1].isupper() and bool(_HEADING.match(line))


def _join_lines(lines: Iterable[str]) -> str:
    """Re-join the lines of one paragraph, mending words hyphenated across a line end.

    A line ending in letter + "-" followed by a line starting lowercase is one word split in
    two ("hyphen-" / "ated"). Other hyphens at a line end ("Jean-" / "Paul", "1914-" /
    "1918") are kept, with no space, because there a real compound is the likelier reading.
    Soft hyphens only ever mark a possible break and are dropped.
    """
    out = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith("\u00ad") or (_BROKEN_WORD.search(out) and line[0].islower()):
            out = out[:-1] + line
        elif _TRAILING_DASH.search(out):
            out += line
        else:
            out = f"{out} {line}"
    return out.replace("\u00ad", "")


def _compose(paragraphs: Iterable[str]) -> str:
    """The book body: non-empty paragraphs separated by one blank line."""
    kept = []
    for p in paragraphs:
        # Lines inside a paragraph (a <br>, a soft line break in Word) stay, but never as
        # blank lines: a blank line is the paragraph separator.
        lines = [ln.strip() for ln in p.split("\n")]
        p = "\n".join(ln for ln in lines if ln)
        if p:
            kept.append(p)
    return "\n\n".join(kept)


def _squash(text: str) -> str:
    """Whitespace-insensitive, case-insensitive form of a line, to compare headers/titles."""
    return " ".join(text.split()).casefold()


def _clean_meta(value: str | None) -> str | None:
    """A title/author as the source writes it (line breaks kept), or None when empty."""
    if value is None:
        return None
    lines = [ln.rstrip() for ln in value.strip().split("\n")]
    value = "\n".join(lines).strip()
    return value or None

# A line of a header block or title page is never prose-long: a longer one is body text.
_HEADER_MAX_LINE = 200
