"""The document-types demo's data and models: no downloads, the same output for the same seed.

Synthetic business documents: each mixes phrases typical of its type with boilerplate shared
by all types, so the classes overlap enough that a model has something to learn. The models are
tiny BERTs built on the spot, with a WordPiece tokenizer over the documents' own words.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

PHRASES = {
    "contract": [
        "this agreement is entered into by and between the parties",
        "the supplier shall deliver the goods within thirty days",
        "either party may terminate this agreement with written notice",
        "the term of this contract commences on the effective date",
        "governing law and jurisdiction shall be those of the state",
        "in witness whereof the parties have signed this agreement",
    ],
    "audit_report": [
        "we have audited the accompanying financial statements",
        "in our opinion the statements present fairly in all material respects",
        "the audit was conducted in accordance with auditing standards",
        "material weakness in internal control over financial reporting",
        "management is responsible for the preparation of the statements",
        "we obtained sufficient appropriate audit evidence",
    ],
    "policy": [
        "this policy applies to all employees and contractors",
        "violations of this policy may result in disciplinary action",
        "the policy owner reviews this document annually",
        "employees must report incidents to the security team",
        "access to confidential data is granted on a need to know basis",
        "exceptions to this policy require written approval",
    ],
    "invoice": [
        "invoice number and date of issue are shown above",
        "payment is due within thirty days of the invoice date",
        "please remit the total amount to the bank account below",
        "quantity unit price and line total for each item",
        "value added tax is charged at the standard rate",
        "late payments incur interest at the statutory rate",
    ],
}

BOILERPLATE = [
    "the company",
    "as described in section four",
    "for the fiscal year ended december",
    "all amounts are stated in dollars",
    "page one of twelve",
    "confidential and proprietary information",
    "the board of directors",
    "effective as of the date first written above",
]

LABELS = sorted(PHRASES)


def documents(per_label: int, seed: int) -> Iterator[dict]:
    """Yield ``per_label`` records per document type: ``{"id", "title", "text", "label"}``."""
    rng = random.Random(seed)
    for label in LABELS:
        for index in range(per_label):
            sentences = rng.sample(PHRASES[label], k=3) + rng.sample(BOILERPLATE, k=3)
            rng.shuffle(sentences)
            yield {
                "id": f"{label}-{index:05d}",
                "title": f"{label.replace('_', ' ')} {index}",
                "text": ". ".join(sentences) + ".",
                "label": label,
            }


def vocabulary() -> list[str]:
    """Every text the demo can produce, for training the tiny demo tokenizer."""
    return [*(p for phrases in PHRASES.values() for p in phrases), *BOILERPLATE, *LABELS]


# Models built on the spot (no download): name -> BERT sizes.
TINY_BERTS = {
    "tiny-bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "tiny-bert-wide": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
}


def tiny_bert_tokenizer():
    """A WordPiece tokenizer over the demo's own words: built in milliseconds, the same every time."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({word for text in vocabulary() for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    tokenizer = Tokenizer(models.WordPiece(vocab={token: i for i, token in enumerate(special + words)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(token, special.index(token)) for token in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_bert(model_name: str, labels: list[str], seed: int, max_length: int):
    """A new BERT classifier of ``TINY_BERTS[model_name]`` sizes with one output per label;
    its initial weights depend on ``seed`` only."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    id2label = dict(enumerate(labels))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tiny_bert_tokenizer().vocab_size,
        **TINY_BERTS[model_name],
        max_position_embeddings=max(128, max_length),
        num_labels=len(labels),
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
    return BertForSequenceClassification(config)
