"""ml_exp.toolkit.pdf_pages / pdf_text on PDFs this test writes itself (no fixture file, no download)."""

from __future__ import annotations

import builtins
import io

import pytest

from ml_exp import toolkit
from ml_exp.toolkit import pdf_pages, pdf_text

PAGES = ["Master services agreement", "Payment is due within thirty days", "Signed by both parties"]


def make_pdf(page_texts: list[str]) -> bytes:
    """A minimal valid PDF, one line of Helvetica text per page, written object by object with a
    correct cross-reference table (so that a strict reader needs no repair)."""
    count = len(page_texts)
    font = 3 + 2 * count  # catalog 1, page tree 2, then (page, content) pairs, then the font
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(count)) + b"] /Count %d >>" % count,
    ]
    for i, text in enumerate(page_texts):
        stream = b"BT /F1 24 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_the_hand_written_pdf_is_valid_for_a_strict_reader():
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(make_pdf(PAGES)), strict=True)
    assert len(reader.pages) == 3


def test_pages_from_bytes_a_path_and_a_binary_file(tmp_path):
    data = make_pdf(PAGES)
    path = tmp_path / "contract-17.pdf"
    path.write_bytes(data)
    assert [text.strip() for text in pdf_pages(data)] == PAGES
    assert [text.strip() for text in pdf_pages(path)] == PAGES
    assert [text.strip() for text in pdf_pages(str(path))] == PAGES
    with path.open("rb") as stream:
        assert [text.strip() for text in pdf_pages(stream)] == PAGES
    assert pdf_text(path, page_separator="\f").split("\f") == pdf_pages(path)
    assert pdf_text(data).count("\n\n") >= 2


def test_a_record_per_pdf_in_reconcile(tmp_path):
    for label, name, text in (("contract", "c1", "Master services agreement"), ("invoice", "i1", "Invoice number 42")):
        (tmp_path / label).mkdir()
        (tmp_path / label / f"{name}.pdf").write_bytes(make_pdf([text, "page two"]))
    records = [{"id": p.stem, "text": pdf_text(p), "label": p.parent.name} for p in sorted(tmp_path.glob("*/*.pdf"))]
    assert [(r["id"], r["label"]) for r in records] == [("c1", "contract"), ("i1", "invoice")]
    assert records[1]["text"].startswith("Invoice number 42") and records[1]["text"].rstrip().endswith("page two")


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 a zip, not a pdf", b"%PDF-1.4\nthen nothing a reader can use"], ids=["empty", "zip", "broken"])
def test_not_a_pdf_is_a_clear_error(tmp_path, data):
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"report\.pdf is not a (PDF|readable PDF)"):
        pdf_pages(path)


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pdf"):
        pdf_text(tmp_path / "nowhere.pdf")


def test_encrypted_pdf_needs_its_password(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(make_pdf(PAGES)))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    path = tmp_path / "locked.pdf"
    path.write_bytes(buffer.getvalue())

    with pytest.raises(ValueError, match=r"locked\.pdf is encrypted: pass its password"):
        pdf_pages(path)
    with pytest.raises(ValueError, match="wrong password"):
        pdf_pages(path, password="guess")
    assert [text.strip() for text in pdf_pages(path, password="s3cret")] == PAGES


def test_text_streams_and_other_types_are_refused(tmp_path):
    path = tmp_path / "a.pdf"
    path.write_bytes(make_pdf(PAGES))
    with path.open("r", encoding="latin-1") as text_stream, pytest.raises(TypeError, match="binary mode"):
        pdf_pages(text_stream)
    with pytest.raises(TypeError, match="not int"):
        pdf_pages(42)


def test_missing_pypdf_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_pypdf(name, *args, **kwargs):
        if name == "pypdf" or name.startswith("pypdf."):
            raise ImportError("No module named 'pypdf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pypdf)
    with pytest.raises(ImportError, match=r'pip install "ml-exp\[pdf\]"'):
        toolkit.pdf_pages(make_pdf(PAGES))


def test_importing_defaults_does_not_import_pypdf():
    import subprocess
    import sys

    code = "import sys, ml_exp.toolkit; print('pypdf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
