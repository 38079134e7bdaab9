"""Scanned documents: PDF pages as images, and the words and boxes on a page image (OCR).

Re-exported by :mod:`ml_exp.toolkit` (``from ml_exp.toolkit import pdf_page_images, ocr_words``);
both are optional extras imported inside the functions: pypdfium2 (the ``pdf`` extra) renders
pages; pytesseract (the ``ocr`` extra) needs Tesseract itself (Debian: ``apt-get install
tesseract-ocr``). With :func:`ml_exp.toolkit.layout_encode`, one record per page::

    def reconcile(ctx):
        for path in sorted(Path("scans").glob("*/*.pdf")):  # scans/<label>/<name>.pdf
            for number, png in enumerate(pdf_page_images(path), start=1):
                words, boxes = ocr_words(png)
                yield {"id": f"{path.stem}-p{number}", "text": "", "words": words, "boxes": boxes,
                       "image": png, "label": path.parent.name}
"""

from __future__ import annotations

import io
from typing import Any

from ml_exp.toolkit.pdf import PdfSource, read_pdf

__all__ = ["ocr_words", "pdf_page_images"]

SCALE = 1000  # layout models read boxes on a 0-1000 scale


def pdf_page_images(source: PdfSource, dpi: int = 150, password: str | None = None) -> list[bytes]:
    """Each page of a PDF as a PNG (bytes, storable in a record), rendered at ``dpi``.

    ``source`` is a path, the PDF's bytes or a binary file object (as for ``pdf_text``). Raises
    ValueError for data that is not a readable PDF, ImportError naming the extra without pypdfium2.
    """
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:
        raise ImportError(
            'pdf_page_images needs pypdfium2: pip install "ml-exp[pdf]" (or add pypdfium2 to requirements-extra.txt)'
        ) from exc
    data, name = read_pdf(source)
    try:
        document = pdfium.PdfDocument(data, password=password)
    except pdfium.PdfiumError as exc:
        raise ValueError(f"{name} is not a readable PDF: {exc}") from None
    pages = []
    try:
        for page in document:
            image = page.render(scale=dpi / 72).to_pil()
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            pages.append(buffer.getvalue())
    finally:
        document.close()
    return pages


def ocr_words(image: Any, lang: str = "eng", min_confidence: float = 0.0) -> tuple[list[str], list[list[int]]]:
    """The words Tesseract finds on a page image and their boxes ``[x0, y0, x1, y1]`` scaled to
    0-1000 (what layout models read), in reading order.

    ``image`` is PNG/JPEG bytes, a path or a PIL image. Words below ``min_confidence`` (0-100)
    are dropped. Raises ImportError naming the extra without pytesseract, RuntimeError saying how to
    install Tesseract when its binary is missing.
    """
    try:
        import pytesseract
    except ImportError as exc:
        raise ImportError(
            'ocr_words needs pytesseract: pip install "ml-exp[ocr]", and Tesseract (apt-get install tesseract-ocr)'
        ) from exc
    from ml_exp.toolkit.layout import open_image

    page = image if hasattr(image, "size") and hasattr(image, "convert") else open_image(image)
    try:
        found = pytesseract.image_to_data(page, lang=lang, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise RuntimeError(
            "ocr_words needs the tesseract program: apt-get install tesseract-ocr (Debian/Ubuntu), "
            "brew install tesseract (macOS)"
        ) from None
    width, height = page.size
    words, boxes = [], []
    for text, left, top, w, h, confidence in zip(
        found["text"], found["left"], found["top"], found["width"], found["height"], found["conf"]
    ):
        if not str(text).strip() or float(confidence) < min_confidence:
            continue
        words.append(str(text).strip())
        boxes.append([_scaled(left, width), _scaled(top, height), _scaled(left + w, width), _scaled(top + h, height)])
    return words, boxes


def _scaled(value: int, size: int) -> int:
    return max(0, min(SCALE, int(SCALE * value / max(size, 1))))
