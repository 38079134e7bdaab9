"""Long-context models through DOCUMENT_STRATEGY = truncate with a large MAX_LENGTH: `exp run` on a
baked experiment whose model is a tiny Longformer built from a config on the spot (no download),
on documents longer than MAX_LENGTH = 1024 tokens."""

from __future__ import annotations

import json

import pytest

from tests.bake import bake
from tests.test_pipeline import exp, run_dir

pytestmark = pytest.mark.slow

MAX_LENGTH = 1024

# The demo's tokenizer and phrases (demo_documents.py, baked with the document-types example);
# each document is ~150 sentences, about 1,500 tokens, so truncation to MAX_LENGTH really cuts.
EXPERIMENT = '''
from __future__ import annotations

import random

import demo_documents
from ml_exp.toolkit import classification_metrics, tokenizer_encode

SENTENCES = 150


def reconcile(ctx):
    rng = random.Random(ctx.config.seed)
    for label in demo_documents.LABELS:
        for index in range(4):
            pool = [demo_documents.PHRASES[label], demo_documents.BOILERPLATE]
            sentences = [rng.choice(pool[rng.random() < 0.5]) for _ in range(SENTENCES)]
            yield {"id": f"{label}-{index}", "text": ". ".join(sentences) + ".", "label": label}


def load_processor(model_name, ctx):
    return demo_documents.tiny_bert_tokenizer()


def encode(batch, processor, ctx):
    return tokenizer_encode(batch, processor, ctx)


def load_model(model_name, labels, ctx):
    import torch
    from transformers import LongformerConfig, LongformerForSequenceClassification

    tokenizer = demo_documents.tiny_bert_tokenizer()
    id2label = dict(enumerate(labels))
    torch.manual_seed(ctx.config.seed)
    config = LongformerConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, attention_window=64, type_vocab_size=1,
        # RoBERTa-style positions start after the padding id: MAX_LENGTH + 2 covers them
        max_position_embeddings=ctx.config.max_length + 2, pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels), id2label=id2label, label2id={label: i for i, label in id2label.items()},
    )
    return LongformerForSequenceClassification(config)


def compute_metrics(predictions, references, labels, ctx):
    return classification_metrics(predictions, references, labels)
'''


def test_tiny_longformer_trains_on_1024_token_inputs(tmp_path):
    import datasets

    project = bake(tmp_path, ticket="EXP-65", model_slug="longformer")
    (project / "experiment.py").write_text(EXPERIMENT)
    env = {
        "MODEL_NAMES": "tiny-longformer", "MAX_LENGTH": str(MAX_LENGTH), "DOCUMENT_STRATEGY": "truncate",
        "SPLIT_RATIOS": "0.5,0.25,0.25", "NUM_TRAIN_EPOCHS": "2", "PER_DEVICE_TRAIN_BATCH_SIZE": "4",
        "PER_DEVICE_EVAL_BATCH_SIZE": "4", "NUM_PROCESSES": "1", "WANDB_MODE": "disabled",
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
    }
    result = exp("run", cwd=project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = run_dir(project, 1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["settings"]["MAX_LENGTH"] == str(MAX_LENGTH)
    assert manifest["steps"]["preparation"]["split_sizes"] == {"train": 8, "validation": 4, "test": 4}

    # Every document was longer than MAX_LENGTH: every input is cut to exactly 1024 tokens.
    prepared = datasets.load_from_disk(str(run / "data" / "prepared" / "tiny-longformer"))
    for split in ("train", "validation", "test"):
        assert {len(ids) for ids in prepared[split]["input_ids"]} == {MAX_LENGTH}, split

    model = run / "models" / "tiny-longformer"
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "longformer" and config["architectures"] == ["LongformerForSequenceClassification"]
    assert config["max_position_embeddings"] == MAX_LENGTH + 2
    training = json.loads((model / "training_metrics.json").read_text())
    assert [h for h in training["log_history"] if "eval_f1_macro" in h], "validation metrics each epoch"
    assert manifest["steps"]["training"]["status"] == "completed"

    metrics = json.loads((run / "inference" / "tiny-longformer" / "metrics.json").read_text())
    assert {"accuracy", "f1_macro"} <= set(metrics) and 0.0 <= metrics["accuracy"] <= 1.0
    assert manifest["steps"]["inference"]["metrics"]["tiny-longformer"]["f1_macro"] == pytest.approx(metrics["f1_macro"])
