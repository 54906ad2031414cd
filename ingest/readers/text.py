"""Plain text files: decoding bytes in any common encoding, header blocks, plain-text books.

:func:`decode_text` is the one text decoding of ingest (score sheets use it too): a
byte-order mark, then strict UTF-8, then charset-normalizer, with the Western legacy code
pages ranked by how plausible their characters are. :func:`split_header` takes a
"Title / by Author" block off the head of a text, and :func:`read_txt` reads a book, re-joining
hard-wrapped (Gutenberg-style) lines into paragraphs.
"""

from __future__ import annotations

import codecs
import unicodedata

import charset_normalizer

from ingest.readers.base import Document, ReaderError
from ingest.readers.shape import (
    _BYLINE,
    _HEADER_MAX_LINE,
    _clean_meta,
    _compose,
    _is_heading,
    _join_lines,
)

# Byte-order marks, longest first (a UTF-32-LE BOM starts with the UTF-16-LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# The legacy encodings editorial text files come in, in order of preference on a tie.
_WESTERN = ("cp1252", "mac_roman")
# Characters that are common in edited Western text and that a wrong legacy decoding rarely
# produces: typographic quotes and dashes, the ellipsis, guillemets, bullets.
_TYPOGRAPHIC = set("‘’“”—–…«»•·\u00a0")
# Above this share (and number) of non-ASCII bytes a file is not "English with a few
# specials", and the statistical detector has enough evidence to be trusted on its own.
_MOSTLY_ASCII = 0.10
_FEW_SPECIALS = 64
# Control characters (other than tab and line ends) above this share mean binary data.
_MAX_CONTROL = 0.01


def _encoding_name(codec: str) -> str:
    """A readable, stable encoding name: ``utf-8``, ``utf-8-sig``, ``cp1252``, ``mac_roman``."""
    name = codecs.lookup(codec).name
    return {"mac-roman": "mac_roman"}.get(name, name)


def _plausibility(text: str) -> int:
    """How much the non-ASCII characters of a decoding look like real Western text.

    charset-normalizer decides well on long or non-Latin texts but has almost no evidence in
    English files with a handful of special characters, where cp1252 and Mac Roman both
    decode every byte. The wrong one betrays itself by its characters: an em dash read in the
    other code page becomes "Ñ" or "ó", a closing quote "Ó" or "î", "é" becomes "Ž" or "È".
    Typographic punctuation scores up, capitals glued to lowercase letters, lone letters and
    symbols score down.
    """
    score = 0
    n = len(text)
    for i, ch in enumerate(text):
        if ch < "\x80":
            continue
        prev = text[i - 1] if i else " "
        nxt = text[i + 1] if i + 1 < n else " "
        cat = unicodedata.category(ch)
        if ch in _TYPOGRAPHIC:
            score += 1
        elif cat == "Ll":
            # A lowercase accented letter belongs inside a word.
            if not (prev.isalpha() or nxt.isalpha()):
                score -= 1
        elif cat == "Lu":
            # A capital after a lowercase letter ("cafÈ", "wordÑword") or standing alone.
            if prev.islower() or not (prev.isalpha() or nxt.isalpha()):
                score -= 2
        elif cat.startswith("L"):
            score -= 1
        elif cat == "Cc":
            score -= 3
        else:
            score -= 1
    return score


def _single_byte(codec: str, data: bytes) -> str | None:
    """``data`` decoded with a one-byte-per-character codec, or None if it does not fit."""
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None
    return text if len(text) == len(data) else None


def _reject_binary(text: str, name: str) -> str:
    """``text`` without stray control characters; ReaderError if there are many (binary)."""
    controls = sum(1 for ch in text if ch < " " and ch not in "\t\n\r\f\v")
    if controls > _MAX_CONTROL * len(text):
        raise ReaderError(
            f"{name}: not text: {controls} control characters in {len(text)} (binary data, or "
            f"UTF-16 without a byte-order mark). Expected a text file."
        )
    # Form feeds and vertical tabs separate pages or lines in old text files.
    text = text.replace("\f", "\n").replace("\v", "\n")
    if controls:
        # A few stray controls (a DOS end-of-file ^Z, an escape pasted from a terminal)
        # carry no text.
        text = "".join(ch for ch in text if ch >= " " or ch in "\t\n\r")
    return text


def decode_text(
    data: bytes, *, name: str = "<bytes>", keep_line_ends: bool = False
) -> tuple[str, str]:
    """Decode the bytes of a text file, whatever its encoding.

    A byte-order mark decides first; then strict UTF-8 (which random legacy bytes almost never
    pass); then charset-normalizer. For mostly-ASCII files the statistical guess is weak, so
    cp1252, Mac Roman and the detector's guess are ranked by how plausible their non-ASCII
    characters are (see :func:`_plausibility`).

    Args:
        data: The file's bytes.
        name: Names the file in error messages.
        keep_line_ends: Leave CRLF and CR line ends as they are, for a format that reads
            them itself (CSV: a line break inside a quoted cell is part of the cell).

    Returns:
        ``(text, encoding)``: the text with ``"\\n"`` line ends (CRLF and old Mac CR
        converted, unless ``keep_line_ends``) and no BOM, and a readable encoding name such
        as ``"utf-8"``, ``"utf-8-sig"``, ``"ascii"``, ``"cp1252"`` or ``"mac_roman"``.

    Raises:
        ReaderError: ``data`` is empty or is not text (binary garbage).
    """
    if not data:
        raise ReaderError(f"{name}: the file is empty (0 bytes).")
    text: str | None = None
    encoding = ""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text, encoding = data.decode(codec), codec
            except UnicodeDecodeError as e:
                raise ReaderError(
                    f"{name}: starts with a {codec} byte-order mark but is not valid {codec}: "
                    f"{e.reason} at byte {e.start}."
                ) from None
            break
    if text is None and b"\x00" in data:
        # NUL bytes do not occur in any 8-bit text encoding.
        raise ReaderError(
            f"{name}: not text: it contains NUL bytes (binary data, or UTF-16 without a "
            f"byte-order mark). Expected a text file."
        )
    if text is None:
        try:
            text = data.decode("utf-8")
            encoding = "ascii" if data.isascii() else "utf-8"
        except UnicodeDecodeError:
            pass
    if text is None:
        text, encoding = _decode_legacy(data, name)
    text = text.removeprefix("\ufeff")
    if not keep_line_ends:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _reject_binary(text, name), _encoding_name(encoding)


def _decode_legacy(data: bytes, name: str) -> tuple[str, str]:
    """Decode bytes that are not UTF-8 (see :func:`decode_text`)."""
    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        raise ReaderError(
            f"{name}: not text: no character encoding fits its {len(data)} bytes "
            f"(binary data?). Expected a text file."
        )
    guess = best.encoding
    non_ascii = sum(1 for b in data if b >= 0x80)
    if non_ascii > _MOSTLY_ASCII * len(data) and non_ascii > _FEW_SPECIALS:
        # The Windows code pages can still tie (an accented Latin letter is as plausible in
        # cp1250 as in cp1252): the Western one, which editorial files mostly are, wins a tie.
        tied = [m for m in results if m.chaos <= best.chaos and m.coherence >= best.coherence]
        if any("cp1252" in m.could_be_from_charset for m in tied) and (
            western := _single_byte("cp1252", data)
        ) is not None:
            return western, "cp1252"
        return str(best), guess
    candidates = [c for c in (*_WESTERN, guess) if _encoding_name(c) != "utf-8"]
    decoded = {}
    for codec in dict.fromkeys(candidates):
        text = _single_byte(codec, data)
        if text is not None:
            decoded[codec] = text
    if not decoded:
        return str(best), guess
    # max() keeps the first of equals, i.e. the preferred order of _WESTERN.
    codec = max(decoded, key=lambda c: _plausibility(decoded[c]))
    return decoded[codec], codec


# A header block never has more lines than this.
_HEADER_MAX_LINES = 8


def split_header(text: str) -> tuple[str | None, str | None, str]:
    """Split a header block ("Title\\nby Author\\n\\n") off the head of a text.

    The header is one or more title lines, then a line starting with "by " whose rest and
    following lines (up to a blank line or a chapter heading) are the author. A title alone,
    followed by a blank line and a chapter heading, is a header too. Text that starts with a
    chapter heading or with prose has no header.

    Args:
        text: Decoded text with ``"\\n"`` line ends.

    Returns:
        ``(title, author, body)``; ``(None, None, text)`` when ``text`` has no header block.
        Title and author keep their line breaks; the body starts at its first non-blank line.
    """
    lines = text.removeprefix("\ufeff").split("\n")
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    start = i
    if i == len(lines) or _is_heading(lines[i]):
        return None, None, text

    title: list[str] = [lines[i]]
    i += 1
    by_at = None
    # Title lines (a blank line between title and byline is allowed) up to the byline.
    while i < len(lines) and i - start < _HEADER_MAX_LINES:
        line = lines[i]
        if _BYLINE.match(line):
            by_at = i
            break
        if _is_heading(line):
            break
        title.append(line)
        i += 1
    if any(len(t) > _HEADER_MAX_LINE for t in title):
        return None, None, text

    author: list[str] = []
    if by_at is not None:
        author.append(_BYLINE.match(lines[by_at]).group(1))  # type: ignore[union-attr]
        i = by_at + 1
        while i < len(lines) and lines[i].strip() and not _is_heading(lines[i]):
            author.append(lines[i])
            i += 1
            if len(author) > _HEADER_MAX_LINES:
                return None, None, text
        if any(len(a) > _HEADER_MAX_LINE for a in author):
            return None, None, text
    else:
        # No byline: only a short title block right before a chapter heading is a header.
        while title and not title[-1].strip():
            title.pop()
        if not (i < len(lines) and _is_heading(lines[i]) and len(title) <= 3):
            return None, None, text
        if lines[i - 1].strip():
            return None, None, text

    body = "\n".join(lines[i:]).lstrip("\n")
    return _clean_meta("\n".join(title)), _clean_meta("\n".join(author)), body


def _is_hard_wrapped(blocks: list[list[str]]) -> bool:
    """True when lines are wrapped at a fixed width (Gutenberg style), not one per paragraph.

    In a wrapped text nearly every line that is followed by another line in its block fills
    the wrap width (~60-80 characters); one-paragraph-per-line files have long or ragged lines.
    """
    inner = [len(ln) for b in blocks for ln in b[:-1]]
    every = sorted(len(ln) for b in blocks for ln in b)
    if len(inner) < 3:
        return False
    width = every[int(0.9 * (len(every) - 1))]
    full = sum(1 for n in inner if n >= 0.75 * width)
    return width <= 100 and full >= 0.8 * len(inner)


def _plain_paragraphs(body: str) -> list[str]:
    """Paragraphs of a plain-text body: one per line, or re-joined if hard-wrapped."""
    blocks: list[list[str]] = [[]]
    for line in body.split("\n"):
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    if not _is_hard_wrapped(blocks):
        return [ln.strip() for b in blocks for ln in b]
    paragraphs = []
    for block in blocks:
        run: list[str] = []
        for line in block:
            if _is_heading(line):
                paragraphs += [_join_lines(run), line.strip()]
                run = []
            else:
                run.append(line)
        paragraphs.append(_join_lines(run))
    return paragraphs


def read_txt(data: bytes, *, name: str) -> Document:
    """Read a plain-text book or part of one, in any common encoding.

    Args:
        data: The file's bytes.
        name: The file's name or path, for error messages.

    Returns:
        The document; title and author from a header block if the text starts with one.

    Raises:
        ReaderError: Empty, binary, or only whitespace.
    """
    text, encoding = decode_text(data, name=name)
    if not text.strip():
        raise ReaderError(f"{name}: holds no text, only whitespace ({len(data)} bytes).")
    title, author, body = split_header(text)
    return Document(
        text=_compose(_plain_paragraphs(body)),
        title=title,
        author=author,
        format="txt",
        encoding=encoding,
    )
