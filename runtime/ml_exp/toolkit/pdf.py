"""The text of a PDF, page by page: what ``reconcile()`` reads documents from.

Re-exported by :mod:`ml_exp.toolkit` (``from ml_exp.toolkit import pdf_text``). pypdf (the
``pdf`` extra) is imported inside the functions, so that importing defaults stays cheap for
``exp validate``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["pdf_pages", "pdf_text"]

PdfSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# The spec puts "%PDF-" first; readers (and pypdf) tolerate junk before it within the first KB.
_HEADER = b"%PDF-"
_HEADER_WINDOW = 1024


def _read(source: PdfSource) -> tuple[bytes, str]:
    """The PDF's bytes and a name for errors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the PDF bytes"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.read_bytes(), str(path)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"pdf_pages: {source!r} is a text stream; open the PDF in binary mode ('rb')")
        return bytes(data), str(getattr(source, "name", "the PDF stream"))
    raise TypeError(f"pdf_pages: source must be a path, bytes or a binary file, not {type(source).__name__}")


def read_pdf(source: PdfSource) -> tuple[bytes, str]:
    """The bytes of a PDF and a name for errors; ValueError when they are not a PDF."""
    data, name = _read(source)
    if _HEADER not in data[:_HEADER_WINDOW]:
        start = data[:16]
        raise ValueError(f"{name} is not a PDF: it does not start with %PDF- (it starts with {start!r})")
    return data, name


def pdf_pages(source: PdfSource, password: str | None = None) -> list[str]:
    """The text of each page of a PDF, in page order (pypdf's ``extract_text``; a page without
    text, such as a scan, gives ``""``).

    ``source`` is a path (``str`` or ``os.PathLike``), the PDF's bytes, or a binary file object.
    ``password`` opens a PDF encrypted with a user password (one with only an owner password,
    which restricts printing or copying, opens without it).

    Raises ValueError for data that is not a PDF, a PDF that cannot be read, or an encrypted PDF
    without (or with a wrong) password; ImportError naming the extra when pypdf is missing.
    """
    try:
        from pypdf import PdfReader
        from pypdf.errors import FileNotDecryptedError, PdfReadError, WrongPasswordError
    except ImportError as exc:
        raise ImportError(
            'pdf_pages needs pypdf: pip install "ml-exp[pdf]" (or add pypdf to requirements-extra.txt)'
        ) from exc

    data, name = read_pdf(source)
    try:
        reader = PdfReader(io.BytesIO(data), password=password)
        return [page.extract_text() or "" for page in reader.pages]
    except WrongPasswordError as exc:
        raise ValueError(f"{name}: wrong password for this encrypted PDF") from exc
    except FileNotDecryptedError as exc:
        raise ValueError(f"{name} is encrypted: pass its password (pdf_pages(..., password=...))") from exc
    except PdfReadError as exc:
        raise ValueError(f"{name} is not a readable PDF: {exc}") from exc


def pdf_text(source: PdfSource, page_separator: str = "\n\n", password: str | None = None) -> str:
    """The text of a whole PDF: its pages' texts (:func:`pdf_pages`) joined by ``page_separator``.

    In ``reconcile()``, one record per PDF::

        from pathlib import Path
        from ml_exp.toolkit import pdf_text

        def reconcile(ctx):
            for path in sorted(Path("documents").glob("*/*.pdf")):  # documents/<label>/<name>.pdf
                yield {"id": path.stem, "text": pdf_text(path), "label": path.parent.name}
    """
    return page_separator.join(pdf_pages(source, password=password))
