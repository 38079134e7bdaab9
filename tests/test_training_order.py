"""Training batches of similar lengths (TRAIN_SAMPLING_STRATEGY), evaluation in length order with
the predictions back in row order, and no checkpoint after the last evaluation: a real tiny BERT
trained in this process (a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from ml_exp import toolkit
from ml_exp.config import load_config
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import LABELS, PROCESSOR, model_dir
from ml_exp.steps.training import train_model
from ml_exp.steps.trainer import GROUP_BY_LENGTH, RANDOM, in_dataset_order, padding_share, sampling_strategy
from ml_exp.storage.store import Store
from ml_exp.experiment.functions import Functions
from tests.tiny_tokenizer import wordpiece_tokenizer

LABEL_NAMES = ["contract", "audit"]
WORDS = {0: "contract signed party terms clause agreement", 1: "audit report finances balance review findings"}
BATCH = 4


def test_auto_groups_by_length_only_when_lengths_vary():
    rng = np.random.default_rng(0)
    mixed = np.exp(rng.uniform(np.log(16), np.log(512), 4000)).astype(int).tolist()  # log-uniform, as the bench's
    labels = rng.integers(0, 4, 4000)
    assert padding_share([64] * 4000, 16, seed=1) == 0.0
    assert padding_share(mixed, 16, seed=1) > 0.5
    assert sampling_strategy("auto", [64] * 4000, 16, 1, labels) == RANDOM
    assert sampling_strategy("auto", mixed, 16, 1, labels) == GROUP_BY_LENGTH
    # 25 batches: pooled batches stay mixed on a small corpus too (bench/sampling.py measures it)
    assert sampling_strategy("auto", mixed[:400], 16, 1, labels[:400]) == GROUP_BY_LENGTH
    assert sampling_strategy("random", mixed, 16, 1, labels) == RANDOM  # the setting turns it off
    assert sampling_strategy("group_by_length", [64] * 400, 16, 1) == GROUP_BY_LENGTH


def test_auto_shuffles_when_length_tells_the_label():
    """Short invoices, long contracts: batches of similar lengths would be batches of one class."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 4000)
    lengths = np.where(labels == 0, rng.integers(16, 64, 4000), rng.integers(256, 512, 4000)).tolist()
    assert padding_share(lengths, 16, seed=1) > 0.1
    assert sampling_strategy("auto", lengths, 16, 1, labels) == RANDOM
    assert sampling_strategy("auto", lengths, 16, 1, rng.permutation(labels)) == GROUP_BY_LENGTH


def test_predictions_made_in_length_order_reach_compute_metrics_in_row_order():
    from transformers import EvalPrediction

    order = [2, 0, 3, 1]  # the sampler evaluated row 2 first, ...
    rows = np.array([10, 11, 12, 13])
    seen = {}

    def compute(prediction):
        seen["predictions"], seen["labels"] = prediction.predictions, prediction.label_ids
        return {}

    in_dataset_order(compute, order)(EvalPrediction(predictions=(rows[order] * 2, rows[order]), label_ids=rows[order]))
    assert seen["labels"].tolist() == [10, 11, 12, 13]
    assert [p.tolist() for p in seen["predictions"]] == [[20, 22, 24, 26], [10, 11, 12, 13]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A WordPiece tokenizer and a prepared DatasetDict whose records range from 3 to ~40 tokens,
    validation rows deliberately not in length order."""
    import datasets

    root = tmp_path_factory.mktemp("prepared")
    tokenizer = wordpiece_tokenizer(list(WORDS.values()) * 5, vocab_size=80)
    rng = np.random.default_rng(3)

    def records(n: int, prefix: str) -> dict[str, list]:
        labels = [i % 2 for i in range(n)]
        lengths = [int(v) for v in np.exp(rng.uniform(0, np.log(40), n))]
        texts = [" ".join(rng.choice(WORDS[label].split(), size=length)) for label, length in zip(labels, lengths)]
        return {"id": [f"{prefix}-{i}" for i in range(n)], "text": texts, "label": labels}

    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(records(24, "t")),
            "validation": datasets.Dataset.from_dict(records(10, "v")),
        }
    )
    encoded = splits.map(
        lambda b: toolkit.tokenizer_encode(b, tokenizer, None, max_length=48), batched=True, remove_columns=["text"]
    )
    lengths = [len(ids) for ids in encoded["validation"]["input_ids"]]
    assert lengths != sorted(lengths, reverse=True), "validation rows must not already be in length order"
    encoded.save_to_disk(str(root / "data"))
    tokenizer.save_pretrained(str(root / "data" / PROCESSOR))
    return root / "data", encoded["validation"]["label"]


def train(tmp_path, data, **settings):
    lines = {
        "EXPERIMENT_NAME": "EXP-1-t",
        "MODEL_NAMES": "tiny",
        "STORAGE_URI": "file://store",
        "WANDB_MODE": "disabled",
        "PER_DEVICE_TRAIN_BATCH_SIZE": str(BATCH),
        "PER_DEVICE_EVAL_BATCH_SIZE": "3",
        "NUM_TRAIN_EPOCHS": "2",
        "EARLY_STOPPING_PATIENCE": "0",
        "LEARNING_RATE": "1e-3",
        **settings,
    }
    (tmp_path / "settings.ini").write_text("[settings]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))
    config = load_config(tmp_path, environ={})
    ctx = Context(config=config, run=Store(config.storage_uri, config.experiment_name).claim_run(None, {"steps": {}}))
    ctx.run.write_json(LABELS, LABEL_NAMES)
    references = []

    def load_model(name, labels, ctx):
        import torch
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=80,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                max_position_embeddings=64,
                num_labels=len(labels),
            )
        )

    def compute_metrics(predictions, refs, labels, ctx):
        references.append(refs)
        return toolkit.classification_metrics(predictions, refs, labels)

    def unused(*args):
        raise AssertionError("not called by training")

    udfs = Functions(
        module=None,
        reconcile=unused,
        load_processor=unused,
        encode=unused,
        load_model=load_model,
        compute_metrics=compute_metrics,
    )
    checkpoints = tmp_path / "checkpoints"
    summary = train_model(ctx, udfs, "tiny", data, checkpoints)
    return ctx, summary, references, checkpoints


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def test_varied_lengths_train_in_length_groups_by_default_and_randomly_when_set_off(tmp_path, prepared):
    data, validation_labels = prepared
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    ctx, grouped, references, checkpoints = train(tmp_path / "on", data)
    assert grouped["train_sampling_strategy"] == GROUP_BY_LENGTH and "of the tokens would be padding" in grouped["train_sampling_reason"]
    # evaluated longest first, yet compute_metrics sees the validation rows in their own order
    assert references and all(refs == list(validation_labels) for refs in references)
    assert grouped["global_step"] == 2 * (24 // BATCH)
    assert [h for h in grouped["log_history"] if "eval_f1_macro" in h] and np.isfinite(grouped["best_metric"])
    assert ctx.run.is_complete(model_dir("tiny"))
    # the epoch-1 checkpoint is written (a resume reads it); the last one, after which training ends, is not
    written = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("checkpoint-"))
    assert written == [f"checkpoint-{24 // BATCH}"], written
    assert grouped["best_global_step"] in (24 // BATCH, 2 * 24 // BATCH)

    _, shuffled, references, _ = train(tmp_path / "off", data, TRAIN_SAMPLING_STRATEGY="random")
    assert shuffled["train_sampling_strategy"] == RANDOM
    assert shuffled["train_sampling_reason"] == "TRAIN_SAMPLING_STRATEGY = random"
    assert references and all(refs == list(validation_labels) for refs in references)
    assert shuffled["global_step"] == grouped["global_step"]


def test_the_trainer_uses_the_length_grouped_sampler(tmp_path, prepared, monkeypatch):
    from ml_exp.steps import trainer as training_trainer
    from ml_exp.steps.sampling import PooledLengthSampler

    samplers = []
    original = training_trainer.StepTrainer._get_train_sampler

    def spy(self, train_dataset=None):
        samplers.append(original(self, train_dataset))
        return samplers[-1]

    monkeypatch.setattr(training_trainer.StepTrainer, "_get_train_sampler", spy)
    train(tmp_path, prepared[0], NUM_TRAIN_EPOCHS="1")
    assert samplers and isinstance(samplers[0], PooledLengthSampler) and samplers[0].batch_size == BATCH
    assert len(samplers[0].lengths) == 24 and len(set(samplers[0].lengths)) > 5  # the rows' own token counts
    # one epoch: its only evaluation is the last, so no checkpoint at all (nothing would resume from it)
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))
