"""tokenizer_encode's truncate reads a fast tokenizer's backend directly (transformers sets it up,
then the batch is encoded without transformers' per-encoding conversion): the very columns and
lengths the tokenizer's own call gives, for tokenizers of every kind; a tokenizer class that
encodes in its own way keeps the plain call."""

from __future__ import annotations

import sys

import pytest
from ml_exp.toolkit import encoding, tokenizer_encode

from tests import test_long_documents
from tests.tiny_tokenizer import wordpiece_tokenizer

tokenizer = test_long_documents.tokenizer  # the demo's tiny BERT tokenizer (a module fixture)

TEXTS = [
    "the contract is signed today",
    "",
    "   ",
    "audit [SEP] report [CLS] of the finances " * 9,  # special tokens written in the text, and cut
    "policy für Fernarbeit — 远程 😀 naïve café",
    "word " * 30,  # exactly around max_length
    "x",
]


def byte_level_tokenizer():
    """A RoBERTa-like byte-level BPE tokenizer (<s> text </s>, no token type ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    backend.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    made = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", cls_token="<s>", sep_token="</s>")  # fmt: skip
    made.model_input_names = ["input_ids", "attention_mask"]
    return made


def typed_tokenizer():
    """WordPiece whose [SEP] has token type 1 (a template of its own), cutting from the left."""
    from tokenizers import processors

    made = wordpiece_tokenizer(TEXTS * 5, vocab_size=120)
    backend = made.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:1",
        special_tokens=[("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))],
    )
    made.truncation_side = "left"
    return made


def split_specials_tokenizer():
    made = wordpiece_tokenizer(TEXTS * 5, vocab_size=120)
    made.split_special_tokens = True  # "[SEP]" in a text is text
    return made


def preset_tokenizer():
    """WordPiece whose tokenizer.json enables padding and another truncation (reset by transformers)."""
    made = wordpiece_tokenizer(TEXTS * 5, vocab_size=120)
    made.backend_tokenizer.enable_padding(length=40)
    made.backend_tokenizer.enable_truncation(3)
    return made


def plain(monkeypatch, *args, **kwargs):
    """tokenizer_encode through the tokenizer's own call (the backend path off)."""
    with monkeypatch.context() as patch:
        patch.setattr(encoding, "_backend_batch", lambda *a: None)
        return tokenizer_encode(*args, **kwargs)


@pytest.mark.parametrize("kind", ["demo", "byte_level", "typed_left", "split_specials", "preset"])
@pytest.mark.parametrize("max_length", [5, 12, 64])
def test_the_backend_path_gives_the_tokenizers_own_columns(monkeypatch, request, kind, max_length):
    made = {"demo": lambda: request.getfixturevalue("tokenizer"), "byte_level": byte_level_tokenizer,
            "typed_left": typed_tokenizer, "split_specials": split_specials_tokenizer,
            "preset": preset_tokenizer}[kind]()  # fmt: skip
    assert encoding._backend_batch(made, ["x"], max_length) is not None  # the path is taken
    batch = {"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS}
    fast = tokenizer_encode(batch, made, None, max_length=max_length, strategy="truncate")
    expected = plain(monkeypatch, batch, made, None, max_length=max_length, strategy="truncate")
    assert list(fast) == list(expected)  # the same columns, in the same order
    assert fast == expected
    # the tokenizer is left as its own call leaves it: a later call without truncation is whole
    whole = made([TEXTS[3]])["input_ids"][0]
    assert len(whole) > max_length and whole == made([TEXTS[3]], truncation=False)["input_ids"][0]


def test_a_tokenizer_class_with_its_own_encoding_keeps_the_plain_call(tokenizer):
    class Marked(type(tokenizer)):
        def _encode_plus(self, *args, **kwargs):
            out = super()._encode_plus(*args, **kwargs)
            out["input_ids"] = [[7, *ids] for ids in out["input_ids"]]
            return out

    marked = Marked.__new__(Marked)
    marked.__dict__.update(tokenizer.__dict__)
    assert encoding._backend_batch(marked, ["x"], 8) is None
    out = tokenizer_encode({"id": ["a"], "text": ["the contract"]}, marked, None, max_length=8, strategy="truncate")
    assert out["input_ids"][0][0] == 7  # its own _encode_plus ran


def test_without_transformers_fast_tokenizer_class_the_plain_call_runs(monkeypatch, tokenizer):
    monkeypatch.setitem(sys.modules, "transformers.tokenization_utils_tokenizers", None)  # an import error
    assert encoding._backend_batch(tokenizer, ["x"], 8) is None


def test_a_backend_path_that_differs_from_the_tokenizers_call_is_not_taken(monkeypatch):
    made = wordpiece_tokenizer(TEXTS * 5, vocab_size=120)  # new: not checked yet
    real = encoding._columns

    def off_by_one(processor, encodings):
        columns = real(processor, encodings)
        columns["input_ids"] = [[*ids, 0] for ids in columns["input_ids"]]  # a transformers that does more
        return columns

    monkeypatch.setattr(encoding, "_columns", off_by_one)
    batch = {"id": ["a", "b"], "text": TEXTS[:2]}
    assert encoding._backend_batch(made, TEXTS, 12) is None
    assert tokenizer_encode(batch, made, None, max_length=12, strategy="truncate") == plain(
        monkeypatch, batch, made, None, max_length=12, strategy="truncate"
    )


def test_no_backend_path_for_an_empty_batch_or_a_patched_tokenizer(tokenizer):
    assert encoding._backend_batch(tokenizer, [], 8) is None  # the tokenizer's own call, as before
    patched = wordpiece_tokenizer(TEXTS * 5, vocab_size=120)
    patched._encode_plus = lambda *args, **kwargs: None  # on the object, not its class
    assert encoding._backend_batch(patched, ["x"], 8) is None
