"""The layout demo's data and models: synthetic scanned pages (words, their 0-1000 boxes, a PNG)
and a tiny LayoutLMv3 built from a config with a tokenizer trained on the spot (offline)."""

from __future__ import annotations

import io
import random

LABELS = ("audit", "contract", "policy")
WORDS = {
    "audit": "finding scope auditor sample control evidence opinion material weakness".split(),
    "contract": "party agrees term clause signed parties obligations termination liability".split(),
    "policy": "staff must comply rule employees procedure applies approval exception".split(),
}
COMMON = "the of page and section date number copy office record".split()
WORDS_PER_PAGE = 24
IMAGE_SIZE = 32  # pixels a side the tiny model sees (224 for microsoft/layoutlmv3-base)


def page(label: str, rng: random.Random) -> dict:
    """A synthetic scanned page: words on a grid, their 0-1000 boxes, a PNG with a header band."""
    from PIL import Image, ImageDraw

    words = [rng.choice(WORDS[label] if rng.random() < 0.5 else COMMON) for _ in range(WORDS_PER_PAGE)]
    boxes = []
    for i in range(WORDS_PER_PAGE):
        x, y = (i % 4) * 240 + 20, (i // 4) * 150 + 40
        boxes.append([x, y, x + 200, y + 60])
    image = Image.new("L", (85, 110), 255)
    band = {"audit": 60, "contract": 20, "policy": 100}[label] + rng.randrange(10)
    ImageDraw.Draw(image).rectangle([5, 5, 80, 5 + band // 5], fill=rng.randrange(0, 120))
    png = io.BytesIO()
    image.save(png, "PNG")
    return {"text": "", "words": words, "boxes": boxes, "image": png.getvalue()}


def pages(per_label: int, seed: int):
    rng = random.Random(seed)
    for label in LABELS:
        for index in range(per_label):
            yield {"id": f"{label}-{index:03d}", **page(label, rng), "label": label}


def tiny_tokenizer():
    """A WordPiece tokenizer trained in milliseconds on the demo's words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    texts = [" ".join(words) for words in WORDS.values()] + [" ".join(COMMON)]
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_processor():
    from transformers import LayoutLMv3ImageProcessor, LayoutLMv3Processor

    image_processor = LayoutLMv3ImageProcessor(apply_ocr=False, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LayoutLMv3Processor(image_processor=image_processor, tokenizer=tiny_tokenizer())


def tiny_layoutlmv3(labels, seed: int, max_length: int):
    import torch
    from transformers import LayoutLMv3Config, LayoutLMv3ForSequenceClassification

    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    config = LayoutLMv3Config(
        vocab_size=tiny_tokenizer().vocab_size,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        coordinate_size=8,  # 4 coordinates + 2 sizes make the hidden size: 4 * 8 + 2 * 8 = 48
        shape_size=8,
        input_size=IMAGE_SIZE,
        patch_size=16,
        max_position_embeddings=max_length + 2,  # RoBERTa-style positions start after the pad id
        pad_token_id=0,
        num_labels=len(labels),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )
    return LayoutLMv3ForSequenceClassification(config)

