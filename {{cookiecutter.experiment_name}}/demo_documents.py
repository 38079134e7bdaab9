"""The document-types demo's data and models: no downloads, the same output for the same seed.

Synthetic long business documents (1,500 to 2,500 tokens): pages of filler sentences that every
type shares, and somewhere in them a short passage typical of the document's type, the only part
that tells the type. The passage sits at the start, in the middle or at the end (the id says
which, e.g. ``contract-middle-00004``): a model that reads only a document's first tokens
(DOCUMENT_STRATEGY = truncate) finds it in a third of them; one that reads every window
(``chunks``) finds it in all. The models are tiny BERTs built on the spot, with a WordPiece
tokenizer over the documents' own words.
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

# Filler that every type shares: it says nothing about the type (its words never decide).
BOILERPLATE = [
    "the company",
    "as described in section four",
    "for the fiscal year ended december",
    "all amounts are stated in dollars",
    "page one of twelve",
    "confidential and proprietary information",
    "the board of directors",
    "effective as of the date first written above",
    "this page is intentionally left blank",
    "the following table summarises the figures for the period",
    "see the appendix for further details",
    "references to the group include its subsidiaries",
    "the headquarters are located in the capital",
    "copies of this document are kept in the archive",
    "the meeting was held at the main office",
    "figures may not add up due to rounding",
    "the contents were reviewed by the legal department",
    "a summary of the main points follows below",
    "the records are retained for seven years",
    "all rights are reserved",
    "questions may be sent to the office of the secretary",
    "the numbering of sections follows the previous edition",
    "dates are given in the local time zone",
    "this version replaces all earlier versions",
]

# Titles that every type shares: a title that named the type would give the answer away.
TITLES = ["scanned document", "archive copy", "uploaded file", "shared drive export", "records office copy"]

LABELS = sorted(PHRASES)
POSITIONS = ("start", "middle", "end")  # where the deciding passage sits, by index in turn
FILLER_SENTENCES = (200, 320)  # sentences of filler per document (~8 tokens each)


def documents(per_label: int, seed: int, sentences: tuple[int, int] = FILLER_SENTENCES) -> Iterator[dict]:
    """Yield ``per_label`` records per document type: ``{"id", "title", "text", "label"}``; the id
    is ``<label>-<position>-<index>`` with the deciding passage's position (start, middle, end).
    ``sentences``: the least and most sentences of filler (a few make short documents, for quick tests)."""
    rng = random.Random(seed)
    for label in LABELS:
        for index in range(per_label):
            position = POSITIONS[index % len(POSITIONS)]
            # the boilerplate in its fixed order from a random sentence on, round and round: filler
            # windows of every type look alike, so a window's label is only ever learnt from a passage
            first = rng.randrange(len(BOILERPLATE))
            filler = [BOILERPLATE[(first + i) % len(BOILERPLATE)] for i in range(rng.randint(*sentences))]
            passage = rng.sample(PHRASES[label], k=rng.choice((2, 3)))
            # start: the first sentences (inside any model's first window); middle: around the
            # centre; end: the last sentences
            at = {
                "start": 0,
                "middle": min(max(len(filler) // 2 + rng.randint(-20, 20), 0), len(filler)),
                "end": len(filler),
            }[position]
            yield {
                "id": f"{label}-{position}-{index:05d}",
                "title": rng.choice(TITLES),
                "text": ". ".join(filler[:at] + passage + filler[at:]) + ".",
                "label": label,
            }


def bound_documents(records: Iterator[dict], seed: int, share: float = 0.3) -> Iterator[dict]:
    """The multi-label demo (PROBLEM_TYPE = multi_label): the same records with a list of labels;
    about ``share`` of them bind a second type, as a cover letter or an addendum is bound to a
    report: a passage of that type at the start or the end (the end when the record's own passage
    is at its start), and the label lists both."""
    rng = random.Random(seed + 1)
    for record in records:
        label = record["label"]
        if rng.random() >= share:
            yield {**record, "label": [label]}
            continue
        other = rng.choice([name for name in LABELS if name != label])
        sentences = record["text"].rstrip(".").split(". ")
        passage = rng.sample(PHRASES[other], k=rng.choice((2, 3)))
        at_end = "-start-" in record["id"] or ("-middle-" in record["id"] and rng.random() < 0.5)
        bound = sentences + passage if at_end else passage + sentences
        yield {**record, "text": ". ".join(bound) + ".", "label": sorted((label, other))}


def vocabulary() -> list[str]:
    """Every text the demo can produce, for training the tiny demo tokenizer."""
    return [*(p for phrases in PHRASES.values() for p in phrases), *BOILERPLATE, *TITLES, *LABELS]


# Models built on the spot (no download): name -> BERT sizes.
TINY_BERTS = {
    # 64 wide, not 32: a 32-wide BERT did not learn to spot a passage among the filler windows
    "tiny-bert": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "tiny-bert-wide": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
}


def tiny_bert_tokenizer():
    """A WordPiece tokenizer over the demo's own words: built in milliseconds, the same every time."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({word for text in vocabulary() for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    tokenizer = Tokenizer(
        models.WordPiece(vocab={token: i for i, token in enumerate(special + words)}, unk_token="[UNK]")
    )
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
