"""Layout models (issue 24): processors of any kind, the padding collator, non-text records."""

from __future__ import annotations

import base64
import io
import logging

import pytest

from ml_exp.core.errors import StepError
from ml_exp.toolkit.collate import PadCollator, load_saved_processor, tokenizer_of
from tests.tiny_tokenizer import wordpiece_tokenizer

WORDS = "contract audit policy party agrees report finding scope rules staff must comply".split()


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece_tokenizer([" ".join(WORDS)] * 20, 80)


def png(shade: int = 200) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 50), (shade, shade, shade)).save(buffer, "PNG")
    return buffer.getvalue()


def layoutlmv3_processor(tokenizer):
    from transformers import LayoutLMv3ImageProcessor, LayoutLMv3Processor

    logging.getLogger("transformers").setLevel(logging.ERROR)  # "requires torchvision: falling back to PIL"
    image = LayoutLMv3ImageProcessor(apply_ocr=False, size={"height": 32, "width": 32})
    return LayoutLMv3Processor(image_processor=image, tokenizer=tokenizer)


def test_collator_pads_every_per_token_column_and_stacks_fixed_ones(tokenizer):
    rows = [
        {"input_ids": [2, 7, 3], "attention_mask": [1, 1, 1], "bbox": [[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]],
         "pixel_values": [[0.5, 0.25]], "label": 1},
        {"input_ids": [2, 3], "attention_mask": [1, 1], "bbox": [[0, 0, 0, 0], [0, 0, 0, 0]],
         "pixel_values": [[1.0, 0.0]], "label": 0},
    ]
    batch = PadCollator(tokenizer)(rows)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, tokenizer.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["bbox"].tolist()[1] == [[0, 0, 0, 0]] * 3
    assert batch["bbox"].tolist()[0][1] == [1, 2, 3, 4]
    assert batch["pixel_values"].shape == (2, 1, 2) and str(batch["pixel_values"].dtype) == "torch.float32"
    assert batch["labels"].tolist() == [1, 0] and "label" not in batch

    tokenizer.padding_side = "left"
    try:
        left = PadCollator(tokenizer)([{"input_ids": [5], "labels": [1]}, {"input_ids": [5, 6], "labels": [1, 2]}])
    finally:
        tokenizer.padding_side = "right"
    assert left["input_ids"].tolist()[0] == [tokenizer.pad_token_id, 5]
    assert left["labels"].tolist()[0] == [-100, 1]  # per-token labels are ignored where padded

    with pytest.raises(StepError, match=r"column 'pixel_values' has values of different shapes.*collate"):
        PadCollator(tokenizer)([{"input_ids": [1], "pixel_values": [1.0]}, {"input_ids": [1], "pixel_values": [1.0, 2]}])
    with pytest.raises(StepError, match="different lengths and no tokenizer"):
        PadCollator(None)([{"input_ids": [1]}, {"input_ids": [1, 2]}])


def test_a_saved_multimodal_processor_is_reloaded_as_itself(tokenizer, tmp_path):
    processor = layoutlmv3_processor(tokenizer)
    processor.save_pretrained(str(tmp_path / "processor"))
    loaded = load_saved_processor(tmp_path / "processor")
    assert type(loaded).__name__ == "LayoutLMv3Processor"
    assert tokenizer_of(loaded).is_fast and tokenizer_of(tokenizer) is tokenizer

    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    assert load_saved_processor(tmp_path / "tokenizer").is_fast


def test_layout_encode_gives_each_token_its_words_box_and_the_page_pixels(tokenizer):
    from ml_exp.toolkit import layout_encode

    processor = layoutlmv3_processor(tokenizer)
    batch = {"id": ["a", "b"], "words": [["contract", "party"], ["audit"]],
             "boxes": [[[10, 20, 30, 40], [50, 60, 70, 80]], [[1, 2, 3, 4]]], "image": [png(), png(90)]}
    out = layout_encode(batch, processor, None, image_field="image", max_length=16)
    assert [len(b) for b in out["bbox"]] == [len(i) for i in out["input_ids"]]
    assert out["bbox"][0][0] == [0, 0, 0, 0] and out["bbox"][0][1] == [10, 20, 30, 40]
    assert out["bbox"][0][-1] == [0, 0, 0, 0] and [1, 2, 3, 4] in out["bbox"][1]
    assert len(out["pixel_values"]) == 2 and len(out["pixel_values"][0]) == 3  # channels first, 32 x 32
    with pytest.raises(ValueError, match="record 'a' has 2 words but 1 boxes"):
        layout_encode({**batch, "boxes": [[[1, 2, 3, 4]], [[1, 2, 3, 4]]]}, processor, None, max_length=16)
    with pytest.raises(ValueError, match="needs a processor with an image processor"):
        layout_encode(batch, tokenizer, None, image_field="image", max_length=16)


def test_chunks_check_looks_at_the_processors_tokenizer(tokenizer, tmp_path):
    from ml_exp.config import load_config
    from ml_exp.pipeline.validate import check_documents

    (tmp_path / "experiment.py").write_text(
        "import sys\nsys.path.insert(0, %r)\n" % str(__import__("pathlib").Path(__file__).parents[1])
        + "from tests.test_layout import layoutlmv3_processor, WORDS\n"
        "from tests.tiny_tokenizer import wordpiece_tokenizer\n"
        "def reconcile(ctx):\n    return []\n"
        "def load_processor(model_name, ctx):\n"
        "    return layoutlmv3_processor(wordpiece_tokenizer([' '.join(WORDS)], 60))\n"
        "def encode(batch, processor, ctx):\n    return {}\n"
        "def load_model(model_name, labels, ctx):\n    return None\n"
        "def compute_metrics(predictions, references, labels, ctx):\n    return {}\n"
    )
    (tmp_path / "settings.ini").write_text("[settings]\nEXPERIMENT_NAME = EXP-1-x\nMODEL_NAMES = m\n")
    config = load_config(tmp_path, environ={"DOCUMENT_STRATEGY": "chunks", "WANDB_MODE": "disabled"})
    assert check_documents(config) == []


def test_a_record_holding_a_pil_image_or_an_array_is_refused_at_that_record(tmp_path):
    import numpy as np
    from PIL import Image

    from ml_exp.steps.reconciliation import _check

    def check(record):
        return _check({"id": "r1", "label": "a", **record}, 1, None, set(), set())

    with pytest.raises(StepError, match=r"record #1 \(id='r1'\): field 'image' holds a PIL\.Image\.Image.*bytes"):
        check({"image": Image.new("RGB", (2, 2))})
    with pytest.raises(StepError, match=r"field 'boxes' holds a numpy\.ndarray.*tolist\(\)"):
        check({"boxes": np.zeros((2, 4))})
    with pytest.raises(StepError, match=r"field 'words' holds a object.*text, numbers, bytes"):
        check({"words": ["a", object()]})
    assert check({"image": png(), "words": ["a"], "boxes": [[1, 2, 3, 4]], "n": np.int64(3), "text": ""})


def test_binary_fields_come_as_base64_and_empty_text_is_fine_with_other_content():
    from ml_exp.serving.predictor import Predictor, RequestError, _binary

    predictor = Predictor.__new__(Predictor)
    predictor.fields = {"text": "string", "image": "binary", "words": "list<item: string>"}
    predictor.info = {"run": 1}
    image = png()
    predictor.check([{"text": "", "image": base64.b64encode(image).decode(), "words": ["audit"]}])
    assert _binary(base64.b64encode(image).decode()) == image
    with pytest.raises(RequestError, match=r"record 0: field 'image' holds bytes: send them as base64"):
        predictor.check([{"text": "x", "image": "not base64!", "words": []}])
    with pytest.raises(RequestError, match="empty text"):
        predictor.check([{"text": " ", "image": None, "words": []}])

    from ml_exp.serving.predictor import _decoded  # the pages of a document: a list of images

    pages = [base64.b64encode(image).decode(), base64.b64encode(png(9)).decode()]
    assert _decoded(pages, "list<item: binary>") == [image, png(9)]
    assert _decoded(["a", "b"], "list<item: string>") == ["a", "b"]
    with pytest.raises(RequestError, match="a list of bytes"):
        _decoded("abc", "list<item: binary>", "record 0: field 'pages'")


def test_preparation_warns_of_empty_encodings_and_degenerate_splits(caplog):
    import datasets

    from ml_exp.steps.coverage import warn_if_degenerate, warn_if_empty

    ctx = type("Ctx", (), {"log": logging.getLogger("ml_exp.test")})()
    two_tokens = datasets.Dataset.from_dict({"window": [0, 0, 0], "document_tokens": [0, 0, 5], "tokens_seen": [0, 0, 5]})
    with caplog.at_level(logging.WARNING):
        assert warn_if_empty({"train": two_tokens}, ctx, "m") == pytest.approx(2 / 3)
    assert "67% of the training documents encode to no content token" in caplog.text
    caplog.clear()
    fine = datasets.Dataset.from_dict({"window": [0, 1, 0], "document_tokens": [9, 9, 5], "tokens_seen": [0, 4, 5]})
    with caplog.at_level(logging.WARNING):
        assert warn_if_empty({"train": fine}, ctx, "m") == 0.0
    assert caplog.text == ""

    warnings = warn_if_degenerate({"train": {"a": 5, "b": 0}, "test": {"a": 2, "b": 1}}, ctx)
    assert warnings == ["every record of the train split is labelled 'a'", "label(s) 'b' have no training record"]
    assert warn_if_degenerate({"train": {"a": 5, "b": 4}, "test": {"a": 1, "b": 1}}, ctx) == []


def scanned_pdf(tmp_path, pages=("Audit report finding", "Contract party agrees")):
    """A real PDF of text pages, drawn by matplotlib (no download)."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    path = tmp_path / "scan.pdf"
    with PdfPages(path) as pdf:
        for text in pages:
            figure = Figure(figsize=(4, 2))
            figure.text(0.1, 0.5, text, fontsize=20)
            pdf.savefig(figure)
    return path


def test_pdf_page_images_renders_each_page_as_a_png(tmp_path):
    pytest.importorskip("pypdfium2", reason="pypdfium2 (the pdf extra) is not installed")
    from PIL import Image

    from ml_exp.toolkit import pdf_page_images

    images = pdf_page_images(scanned_pdf(tmp_path), dpi=72)
    assert len(images) == 2
    assert Image.open(io.BytesIO(images[0])).size == (288, 144)  # 4 x 2 inches at 72 dpi
    with pytest.raises(ValueError, match="is not a PDF"):
        pdf_page_images(b"hello")


def test_ocr_words_finds_the_words_and_their_0_1000_boxes(tmp_path):
    import shutil

    pytest.importorskip("pytesseract", reason="pytesseract (the ocr extra) is not installed")
    if shutil.which("tesseract") is None:
        pytest.skip("the tesseract program is not installed (apt-get install tesseract-ocr)")
    from ml_exp.toolkit import ocr_words, pdf_page_images

    words, boxes = ocr_words(pdf_page_images(scanned_pdf(tmp_path), dpi=150)[0])
    assert [w.lower() for w in words] == ["audit", "report", "finding"]
    assert all(0 <= v <= 1000 for box in boxes for v in box)
    assert boxes[0][0] < boxes[1][0] < boxes[2][0] and all(b[0] < b[2] and b[1] < b[3] for b in boxes)


def test_layout_encode_makes_one_window_per_page_of_a_multi_page_record(tokenizer):
    from ml_exp.toolkit import layout_encode

    batch = {"id": ["two-pages", "one-page"],
             "words": [[["contract"], ["audit", "scope"]], [["policy"]]],
             "boxes": [[[[1, 1, 2, 2]], [[3, 3, 4, 4], [5, 5, 6, 6]]], [[[7, 7, 8, 8]]]]}
    out = layout_encode(batch, tokenizer, None, max_length=16)
    assert out["overflow_to_sample_mapping"] == [0, 0, 1] and out["page"] == [1, 2, 1]
    assert out["bbox"][1][1] == [3, 3, 4, 4] and out["bbox"][2][1] == [7, 7, 8, 8]
    with pytest.raises(ValueError, match="as many pages of 'boxes'"):
        layout_encode({**batch, "boxes": [[[[1, 1, 2, 2]]], [[[7, 7, 8, 8]]]]}, tokenizer, None, max_length=16)


def test_an_optional_collate_is_checked_like_the_five(tmp_path):
    import types

    from ml_exp.experiment.functions import check_functions

    source = "".join(
        f"def {name}({params}):\n    return 1\n"
        for name, params in (("reconcile", "ctx"), ("load_processor", "model_name, ctx"),
                             ("encode", "batch, processor, ctx"), ("load_model", "model_name, labels, ctx"),
                             ("compute_metrics", "predictions, references, labels, ctx"))
    )
    (tmp_path / "good.py").write_text(source)
    (tmp_path / "bad.py").write_text(source + "def collate(rows):\n    return {}\n")
    (tmp_path / "stub.py").write_text(source + "def collate(rows, processor, ctx):\n    pass\n")

    def problems(name):
        module = types.ModuleType(name)
        module.__file__ = str(tmp_path / f"{name}.py")
        exec(compile((tmp_path / f"{name}.py").read_text(), module.__file__, "exec"), module.__dict__)
        return [f"{p.where}: {p.message}" for p in check_functions(module, name)]

    assert problems("good") == []
    assert problems("bad") == ["bad.collate: has parameters (rows); ml-exp calls it as def collate(rows, processor, ctx)"]
    assert problems("stub") == ["stub.collate: is not implemented yet (its body is only a stub); write its body"]


def test_batches_come_from_the_experiments_collate_when_it_has_one(tokenizer):
    import torch

    from ml_exp.toolkit.collate import batch_maker

    udfs = type("Udfs", (), {"collate": None})()
    assert isinstance(batch_maker(udfs, tokenizer, None), PadCollator)

    def collate(rows, processor, ctx):
        return {"input_ids": torch.tensor([[len(rows), processor.tokenizer.pad_token_id]])}

    udfs.collate = staticmethod(collate)
    made = batch_maker(udfs, layoutlmv3_processor(tokenizer), None)
    assert made([{"input_ids": [1]}] * 3)["input_ids"].tolist() == [[3, tokenizer.pad_token_id]]
    udfs.collate = staticmethod(lambda rows, processor, ctx: [1])
    with pytest.raises(StepError, match="collate returned a list; return a dict of tensors"):
        batch_maker(udfs, tokenizer, None)([{"input_ids": [1]}])
