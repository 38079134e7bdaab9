"""The encode of layout models (LayoutLM v1-v3, LiLT): words, their boxes and the page image.

Re-exported by :mod:`ml_exp.toolkit` (``from ml_exp.toolkit import layout_encode``). It works with
any tokenizer, also one that knows nothing of boxes (LiLT's and LayoutLM v1's RoBERTa / BERT
tokenizers): the words are tokenized as pre-split words and each token gets its word's box
(special tokens get ``[0, 0, 0, 0]``); with ``image_field`` the page image goes through the
processor's image processor into ``pixel_values`` (LayoutLMv3). Importing it is cheap.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from ml_exp.experiment.context import Context
from ml_exp.toolkit.collate import tokenizer_of
from ml_exp.toolkit.documents import PAGE

__all__ = ["layout_encode", "open_image"]

NO_BOX = [0, 0, 0, 0]
MAPPING = "overflow_to_sample_mapping"  # row -> record, as tokenizers return it


def layout_encode(
    batch: Mapping[str, Sequence[Any]],
    processor: Any,
    ctx: Context | None,
    words_field: str = "words",
    boxes_field: str = "boxes",
    image_field: str | None = None,
    max_length: int | None = None,
) -> dict[str, list]:
    """Encode a batch of pages for a layout model (for ``datasets.map(batched=True)``).

    Each record holds ``words_field`` (a list of words), ``boxes_field`` (one ``[x0, y0, x1, y1]``
    box per word, on the 0-1000 scale layout models use; :func:`ml_exp.toolkit.ocr_words` gives
    both) and, with ``image_field``, the page image (PNG/JPEG bytes or a path). Returns
    ``input_ids``, ``attention_mask``, ``bbox`` (+ ``token_type_ids`` when the tokenizer makes
    them, + ``pixel_values`` with an image), one row per record, truncated to ``max_length``
    (default: ``ctx.config.max_length``). The training collator pads ``bbox`` with ``[0, 0, 0, 0]``.

    A multi-page record holds a list of pages in each field (words: a list of word lists, boxes:
    a list of box lists, images: a list of images): it becomes one row per page, with
    ``overflow_to_sample_mapping`` (row -> record) and ``page`` (1-based), so that a prediction
    is per document and its evidence names the page that decided it (``evidence_page``).

    Raises ValueError naming a missing field, a record whose words and boxes differ in number,
    or an image field with a processor that has no image processor.
    """
    for field in (words_field, boxes_field, *([image_field] if image_field else [])):
        if field not in batch:
            present = ", ".join(sorted(map(str, batch))) or "none"
            raise ValueError(f"layout_encode: field {field!r} is not in the records (their fields: {present})")
    if max_length is None:
        config = getattr(ctx, "config", None)
        if config is None:
            raise ValueError("layout_encode: pass max_length, or a ctx whose config has MAX_LENGTH")
        max_length = int(config.max_length)
    tokenizer = tokenizer_of(processor)
    ids = list(batch.get("id", [None] * len(batch[words_field])))
    pages = _multi_page(batch[words_field])
    if pages:  # one row (window) per page: the record of each row, its page number
        owners = [record for record, document in enumerate(batch[words_field]) for _ in document]
        flat = {
            field: [page for document in batch[field] for page in (document or [])]
            for field in (words_field, boxes_field, *([image_field] if image_field else []))
        }
        if any(len(values) != len(owners) for values in flat.values()):
            raise ValueError(
                f"layout_encode: a multi-page record needs as many pages of {boxes_field!r}"
                f"{f' and {image_field!r}' if image_field else ''} as of {words_field!r}"
            )
        row_ids = [ids[owner] for owner in owners]
        out = layout_encode({**flat, "id": row_ids}, processor, ctx, words_field, boxes_field, image_field, max_length)
        out[MAPPING] = owners
        out[PAGE] = [number for document in batch[words_field] for number in range(1, len(document) + 1)]
        return out
    words = [[str(w) for w in (page or [])] for page in batch[words_field]]
    boxes = [list(page or []) for page in batch[boxes_field]]
    for record, (page_words, page_boxes) in enumerate(zip(words, boxes)):
        if len(page_words) != len(page_boxes):
            raise ValueError(
                f"layout_encode: record {ids[record]!r} has {len(page_words)} words but {len(page_boxes)} boxes in "
                f"{boxes_field!r}; give one box per word"
            )
    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, padding=False)
    out = {key: list(value) for key, value in dict(encoded).items() if key != "bbox"}
    out["bbox"] = [
        [
            NO_BOX if word is None else [int(v) for v in boxes[row][word]]
            for word in encoded.word_ids(row)  # None for special tokens
        ]
        for row in range(len(words))
    ]
    if image_field:
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None:
            raise ValueError(
                f"layout_encode: image_field={image_field!r} needs a processor with an image processor (e.g. "
                f"LayoutLMv3Processor), not a {type(processor).__name__}"
            )
        images = [open_image(value, ids[row]) for row, value in enumerate(batch[image_field])]
        pixels = image_processor(images, return_tensors="np")["pixel_values"]
        out["pixel_values"] = [page.astype("float32").tolist() for page in pixels]
    return out


def _multi_page(documents: Sequence[Any]) -> bool:
    """Whether records hold pages (a list of word lists) rather than one page (a word list)."""
    first = next((d for d in documents if d), None)
    return first is not None and isinstance(first[0], (list, tuple))


def open_image(value: Any, record_id: Any = None) -> Any:
    """A page image as an RGB PIL image, from its bytes (PNG, JPEG...) or a path."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(value)))
        elif isinstance(value, str) or hasattr(value, "__fspath__"):
            image = Image.open(value)
        else:
            raise ValueError(f"an image is bytes or a path, not a {type(value).__name__}")
        return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"record {record_id!r}: its image cannot be read ({exc})") from None
