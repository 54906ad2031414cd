"""Format readers on tiny real files: encodings, header blocks, docx, epub, html, pdf, junk."""

from __future__ import annotations

import io
import random

import docx
import pymupdf
import pytest
from ebooklib import epub

from catalog import CorpusError
from ingest.readers import (
    Document,
    NoTextLayerError,
    ReaderError,
    decode_text,
    read_document,
    read_pdf,
    split_header,
)

BODY = "Chapter 1\n\nShe said \u201chello\u201d \u2014 at the caf\u00e9.\nThen she left.\n"
SOURCE = "A Small Book\nby Ann Smith\n\n" + BODY
EXPECTED_TEXT = "Chapter 1\n\nShe said \u201chello\u201d \u2014 at the caf\u00e9.\n\nThen she left."


# --- text files: encodings and line ends ---------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "line_end", "name"),
    [
        ("cp1252", "\n", "cp1252"),
        ("mac_roman", "\r\n", "mac_roman"),  # the old_mac habit: Mac Roman with CRLF
        ("mac_roman", "\r", "mac_roman"),  # classic Mac OS line ends
        ("utf-8-sig", "\r\n", "utf-8-sig"),
        ("utf-8", "\n", "utf-8"),
        ("utf-16", "\r\n", "utf-16"),
    ],
)
def test_txt_in_any_encoding(tmp_path, encoding, line_end, name):
    path = tmp_path / "9780000000001.txt"
    path.write_bytes(SOURCE.replace("\n", line_end).encode(encoding))
    doc = read_document(path)
    assert doc == Document(
        text=EXPECTED_TEXT, title="A Small Book", author="Ann Smith", format="txt", encoding=name
    )


def test_decode_text_normalises_and_names_encodings():
    assert decode_text(b"plain\r\ntext\r") == ("plain\ntext\n", "ascii")
    text, enc = decode_text("\ufeffna\u00efve\r\n".encode("utf-8-sig"))
    assert (text, enc) == ("na\u00efve\n", "utf-8-sig")
    # A lone em dash: 0x97 in cp1252, 0xD1 in Mac Roman; the other reading ("ó", "Ñ") loses.
    assert decode_text("then\u2014now".encode("cp1252")) == ("then\u2014now", "cp1252")
    assert decode_text("then\u2014now".encode("mac_roman")) == ("then\u2014now", "mac_roman")
    assert decode_text("caf\u00e9 au lait".encode("mac_roman"))[0] == "caf\u00e9 au lait"


def test_decode_text_rejects_binary():
    with pytest.raises(ReaderError, match="not text"):
        decode_text(random.Random(1).randbytes(2000), name="blob.txt")
    with pytest.raises(ReaderError, match="empty"):
        decode_text(b"")


# --- header blocks ---------------------------------------------------------------------------


def test_split_header_multiline_author_and_title():
    title, author, body = split_header(
        "A House of Snow\nand Ice\nby original text by Steve Whitt\nadapted by Jo Fries\n\n"
        "Chapter 1\n\nText."
    )
    assert title == "A House of Snow\nand Ice"
    assert author == "original text by Steve Whitt\nadapted by Jo Fries"
    assert body == "Chapter 1\n\nText."


def test_split_header_variants():
    # A blank line between title and byline; the byline keeps a second "By".
    assert split_header("Title: Heroes\n\nby By N. Hawthorne.\n\n") == (
        "Title: Heroes",
        "By N. Hawthorne.",
        "",
    )
    # A title alone, right before the first chapter.
    assert split_header("Just a Title\n\nChapter 1\n\nText.") == (
        "Just a Title",
        None,
        "Chapter 1\n\nText.",
    )


@pytest.mark.parametrize(
    "text",
    [
        "Chapter 4\n\nVenu was now eleven.\n",
        "\nCHAPTER IV\n\nText.",
        "It was a long day, and by evening " * 10 + "\nby the river they sat.\n",
        "Plain prose without any header at all.",
        "",
    ],
)
def test_split_header_none(text):
    assert split_header(text) == (None, None, text)


def test_part_file_without_header(tmp_path):
    path = tmp_path / "9780000000001 (2).txt"
    path.write_bytes(b"Chapter 4\r\n\r\nVenu was now eleven.\r\nHe ran.\r\n")
    doc = read_document(path)
    assert (doc.title, doc.author) == (None, None)
    assert doc.text == "Chapter 4\n\nVenu was now eleven.\n\nHe ran."


def test_hard_wrapped_text_is_reflowed(tmp_path):
    lines = [
        "It was the best of times, it was the worst of times, it was the age",
        "of wisdom, it was the age of foolishness, it was the epoch of be-",
        "lief, it was the epoch of incredulity, it was the season of Light.",
        "",
        "There were a king with a large jaw and a queen with a plain face, on",
        "the throne of England; there were a king with a large jaw and a queen",
        "with a fair face, on the throne of France.",
    ]
    path = tmp_path / "wrapped.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    paragraphs = read_document(path).text.split("\n\n")
    assert len(paragraphs) == 2
    assert "the epoch of belief, it was" in paragraphs[0]
    assert paragraphs[1].endswith("with a fair face, on the throne of France.")


# --- docx ------------------------------------------------------------------------------------


def _docx_bytes() -> bytes:
    d = docx.Document()
    d.core_properties.title = "The Docx Book"
    d.core_properties.author = "Mary Major"
    d.sections[0].header.paragraphs[0].text = "RUNNING HEAD"
    d.add_heading("The Docx Book", 0)
    d.add_heading("Chapter 1", 1)
    d.add_paragraph("First paragraph.")
    d.add_paragraph("")
    d.add_paragraph("Second  paragraph.")
    d.add_heading("Chapter 2", 1)
    d.add_paragraph("Third paragraph.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def test_docx(tmp_path):
    path = tmp_path / "9780000000002.DOCX"
    path.write_bytes(_docx_bytes())
    doc = read_document(path)
    assert doc.format == "docx" and doc.encoding is None
    assert (doc.title, doc.author) == ("The Docx Book", "Mary Major")
    assert doc.text == (
        "Chapter 1\n\nFirst paragraph.\n\nSecond  paragraph.\n\nChapter 2\n\nThird paragraph."
    )


def test_docx_byline_paragraph_and_tool_author():
    d = docx.Document()  # python-docx writes "python-docx" as the author: not the book's
    d.add_paragraph("Plain Title", style="Title")
    d.add_paragraph("by Ann Other")
    d.add_paragraph("By the time the rain stopped, the river had risen.")
    buf = io.BytesIO()
    d.save(buf)
    doc = read_document("book.docx", data=buf.getvalue())
    assert (doc.title, doc.author) == ("Plain Title", "Ann Other")
    assert doc.text == "By the time the rain stopped, the river had risen."

    bare = docx.Document()
    bare.add_paragraph("Just text.")
    buf = io.BytesIO()
    bare.save(buf)
    doc = read_document("bare.docx", data=buf.getvalue())
    assert (doc.title, doc.author, doc.text) == (None, None, "Just text.")


# --- epub ------------------------------------------------------------------------------------


def _epub_bytes() -> bytes:
    book = epub.EpubBook()
    book.set_identifier("urn:isbn:9780000000003")
    book.set_title("The Epub Book")
    book.set_language("en")
    book.add_author("Eve Writer")
    # File names in the opposite order of the spine: the spine decides the reading order.
    ch1 = epub.EpubHtml(title="Chapter 1", file_name="z_ch1.xhtml", lang="en")
    ch1.content = "<h2>Chapter 1</h2><p>One  fish.</p><p>Two fish.</p>"
    ch2 = epub.EpubHtml(title="Chapter 2", file_name="a_ch2.xhtml", lang="en")
    ch2.content = "<h2>Chapter 2</h2><p>Red fish,<br/>blue fish.</p>"
    for item in (ch2, ch1):
        book.add_item(item)
    book.toc = [ch1, ch2]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", ch1, ch2]
    buf = io.BytesIO()
    epub.write_epub(buf, book)
    return buf.getvalue()


def test_epub_skips_cover_and_title_pages():
    book = epub.EpubBook()
    book.set_identifier("x")
    book.set_title("Front Matter")
    book.add_author("Fay Front")
    cover = epub.EpubHtml(title="Cover", file_name="cover.xhtml")
    cover.content = "<p>COVER IMAGE CAPTION</p>"
    titlepage = epub.EpubHtml(title="Title", file_name="front.xhtml")
    titlepage.content = "<h1>Front Matter</h1><p>by Fay Front</p>"
    copyright_page = epub.EpubHtml(title="Rights", file_name="rights.xhtml")
    copyright_page.content = (
        '<section epub:type="copyright-page"><p>All rights reserved.</p></section>'
    )
    ch = epub.EpubHtml(title="One", file_name="one.xhtml")
    ch.content = "<h1>Front Matter</h1><h2>Chapter 1</h2><p>Body.</p>"
    for item in (cover, titlepage, copyright_page, ch):
        book.add_item(item)
    book.add_item(epub.EpubNav())
    book.spine = [cover, titlepage, copyright_page, "nav", ch]
    buf = io.BytesIO()
    epub.write_epub(buf, book)
    doc = read_document("front.epub", data=buf.getvalue())
    assert doc.text == "Chapter 1\n\nBody."


def test_epub_spine_order_without_nav(tmp_path):
    path = tmp_path / "9780000000003.epub"
    path.write_bytes(_epub_bytes())
    doc = read_document(path)
    assert (doc.title, doc.author, doc.format) == ("The Epub Book", "Eve Writer", "epub")
    assert doc.text == ("Chapter 1\n\nOne fish.\n\nTwo fish.\n\nChapter 2\n\nRed fish,\nblue fish.")


# --- html ------------------------------------------------------------------------------------

HTML = """<!DOCTYPE html>
<html><head><meta charset="windows-1252"><title>The Web
Book</title><style>p {color: red}</style></head>
<body><nav><a href="/">Home</a></nav>
<h1>The Web Book</h1><p class="author">Wes Webb</p>
<h2>Chapter 1</h2>
<p>It   was a
  dark night \u2014 <em>very</em> dark.</p>
<script>var x = "not text";</script>
<p>A line<br>and another.</p>
<h2>Chapter 2</h2><p>The end.</p>
</body></html>
"""


def test_html(tmp_path):
    path = tmp_path / "9780000000004.htm"
    path.write_bytes(HTML.encode("cp1252"))
    doc = read_document(path)
    assert (doc.title, doc.author, doc.format) == ("The Web\nBook", "Wes Webb", "html")
    assert doc.text == (
        "Chapter 1\n\nIt was a dark night \u2014 very dark.\n\nA line\nand another.\n\n"
        "Chapter 2\n\nThe end."
    )


def test_html_title_with_site_suffix_and_meta_author():
    page = (
        "<html><head><title>Short Book | Example Press</title>"
        '<meta name="author" content="Sam Short"></head><body>'
        "<h1>Short Book</h1><h2>Chapter 1</h2><div>Text in a div.<p>And a p.</p></div>"
        "<footer>\u00a9 Example Press</footer></body></html>"
    )
    doc = read_document("short.html", data=page.encode())
    assert (doc.title, doc.author) == ("Short Book | Example Press", "Sam Short")
    assert doc.text == "Chapter 1\n\nText in a div.\n\nAnd a p."


# --- pdf -------------------------------------------------------------------------------------

BODY_PAGES = [
    # (running header, lines of the page: "" = paragraph gap, "#" = chapter heading)
    (
        "Ada Lovelace",
        [
            "#Chapter 1",
            "The engine was wound up at dawn and the whole household gathered",
            "round it, because nobody had yet seen the wheels turn on their own",
            "and the cook had a wager on the result with the coachman's extra-",
            "ordinary sister, who claimed to understand the whole contraption.",
            "",
            "When the first card dropped into the slot the room fell silent and",
            "even the dog stopped scratching at the door to watch the brass cogs",
        ],
    ),
    (
        "THE HYPHEN BOOK",
        [
            "slowly begin their long climb towards the very first number.",
            "",
            "#Chapter 2",
            "By noon the engine had printed a whole table of numbers and the cook",
            "had won her wager, although the coachman's sister insisted that it",
            "proved nothing at all about the cogs and everything about the cook.",
        ],
    ),
    (
        "Ada Lovelace",
        ["The next morning the engine was gone and nobody ever saw it again."],
    ),
]
PDF_TEXT = (
    "Chapter 1\n\n"
    "The engine was wound up at dawn and the whole household gathered round it, because nobody "
    "had yet seen the wheels turn on their own and the cook had a wager on the result with the "
    "coachman's extraordinary sister, who claimed to understand the whole contraption.\n\n"
    "When the first card dropped into the slot the room fell silent and even the dog stopped "
    "scratching at the door to watch the brass cogs slowly begin their long climb towards the "
    "very first number.\n\n"
    "Chapter 2\n\n"
    "By noon the engine had printed a whole table of numbers and the cook had won her wager, "
    "although the coachman's sister insisted that it proved nothing at all about the cogs and "
    "everything about the cook. The next morning the engine was gone and nobody ever saw it "
    "again."
)


def _pdf_bytes() -> bytes:
    doc = pymupdf.open()
    title = doc.new_page()  # US letter, 612 x 792
    title.insert_text((72, 100), "The Hyphen Book", fontsize=22)
    title.insert_text((72, 140), "by Ada Lovelace", fontsize=12)
    title.insert_text((72, 180), "Copyright (c) 2020 by Ada Lovelace", fontsize=10)
    title.insert_text((72, 196), "ISBN 978-0-00-000000-2", fontsize=10)
    for number, (header, lines) in enumerate(BODY_PAGES, start=1):
        page = doc.new_page()
        page.insert_text((72, 48), header, fontsize=9)
        y = 90.0
        for line in lines:
            if not line:
                y += 14  # paragraph spacing
            elif line.startswith("#"):
                page.insert_text((72, y + 4), line[1:], fontsize=15)
                y += 26
            else:
                page.insert_text((72, y), line, fontsize=11)
                y += 14
        page.insert_text((72, 740), "Draft copy, not for sale", fontsize=8)
        page.insert_text((300, 760), str(number), fontsize=9)
    data = doc.tobytes()
    doc.close()
    return data


def test_pdf_furniture_removed_and_lines_rejoined(tmp_path):
    path = tmp_path / "9780000000005.pdf"
    path.write_bytes(_pdf_bytes())
    doc = read_document(path)
    assert (doc.title, doc.author, doc.format, doc.n_pages) == (
        "The Hyphen Book",
        "Ada Lovelace",
        "pdf",
        4,
    )
    assert "extraordinary" in doc.text and "extra-" not in doc.text
    for furniture in ("Ada Lovelace", "HYPHEN", "Draft copy", "Copyright", "ISBN"):
        assert furniture not in doc.text
    assert doc.text == PDF_TEXT


def test_pdf_title_above_first_chapter_and_metadata():
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 80), "One Page Wonder", fontsize=20)
    page.insert_text((72, 110), "by Olga One", fontsize=12)
    page.insert_text((72, 150), "Chapter 1", fontsize=15)
    page.insert_text(
        (72, 180), "All of the story happens on this single page, so there is", fontsize=11
    )
    page.insert_text(
        (72, 194), "no title page and no running header to speak of at all.", fontsize=11
    )
    doc.set_metadata({"title": "Metadata Title", "author": "Metadata Author"})
    got = read_pdf(doc.tobytes(), name="one.pdf")
    assert (got.title, got.author, got.n_pages) == ("One Page Wonder", "Olga One", 1)
    assert got.text == (
        "Chapter 1\n\nAll of the story happens on this single page, so there is no title page "
        "and no running header to speak of at all."
    )
    # Without a title page, the document metadata names the book.
    bare = pymupdf.open()
    bare.new_page().insert_text((72, 100), "Just a line of text.", fontsize=11)
    bare.set_metadata({"title": "Metadata Title", "author": "Metadata Author"})
    got = read_pdf(bare.tobytes(), name="bare.pdf")
    assert (got.title, got.author, got.text) == (
        "Metadata Title",
        "Metadata Author",
        "Just a line of text.",
    )


def test_pdf_without_text_layer():
    doc = pymupdf.open()
    doc.new_page().draw_rect(pymupdf.Rect(50, 50, 200, 200), fill=(0, 0, 0))
    with pytest.raises(NoTextLayerError, match=r"scan\.pdf.*OCR"):
        read_pdf(doc.tobytes(), name="scan.pdf")


# --- dispatch and junk -----------------------------------------------------------------------


def test_read_document_uses_given_bytes(tmp_path):
    # The file does not exist: the bytes the caller already read are used.
    doc = read_document(tmp_path / "missing.TXT", data=b"Chapter 1\n\nHi.")
    assert doc.text == "Chapter 1\n\nHi." and doc.encoding == "ascii"


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.txt", lambda: b"", "empty"),
        ("blank.txt", lambda: b" \r\n\t\r\n", "no text"),
        ("noise.txt", lambda: random.Random(2).randbytes(3000), "not text"),
        ("9780000000019.pdf", lambda: random.Random(3).randbytes(4096), "not a PDF"),
        ("cut.pdf", lambda: _pdf_bytes()[:1500], "truncated"),
        ("empty.pdf", lambda: b"", "empty"),
        ("~$draft.docx", lambda: b"\x00\x01lock", "lock file"),
        ("broken.docx", lambda: random.Random(4).randbytes(500), "not a readable .docx"),
        ("broken.epub", lambda: b"PK\x03\x04" + bytes(60), "not a readable EPUB"),
        ("notes.xyz", lambda: b"hello", "unsupported file type"),
        ("README", lambda: b"hello", "unsupported file type"),
    ],
)
def test_junk_is_rejected_with_the_file_name(tmp_path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ReaderError, match=reason) as info:
        read_document(path)
    assert name in str(info.value)
    assert isinstance(info.value, CorpusError)


def test_unreadable_path(tmp_path):
    with pytest.raises(ReaderError, match="cannot be read"):
        read_document(tmp_path / "gone.pdf")


def test_zip_packages_are_refused_before_parsing_when_they_inflate_too_much(monkeypatch):
    from ingest import readers
    from ingest.evolve import _zip_bomb
    from ingest.readers import base as limits

    bomb = _zip_bomb(8)
    for read in (readers.read_docx, readers.read_epub):
        with pytest.raises(readers.ReaderError, match=r"over the limit of 100:1"):
            read(bomb, name="bomb")
    monkeypatch.setattr(limits, "MAX_INFLATED", 4 * 2**20)
    monkeypatch.setattr(limits, "MAX_RATIO", 10**6)
    with pytest.raises(readers.ReaderError, match=r"inflate to 8 MiB, over the limit of 4 MiB"):
        readers.read_docx(bomb, name="bomb")


def test_malformed_docx_xml_gets_a_plain_reason():
    from ingest.evolve import _malformed_docx
    from ingest.readers import ReaderError, read_docx

    with pytest.raises(ReaderError, match="package XML is malformed"):
        read_docx(_malformed_docx(), name="x.docx")
