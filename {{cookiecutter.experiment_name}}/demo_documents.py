"""Synthetic business documents for the document-types demo: no downloads, same output per seed.

Each document mixes phrases typical of its type with boilerplate shared by all types, so the
classes overlap enough that a model has something to learn.
"""

from __future__ import annotations

import random
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
