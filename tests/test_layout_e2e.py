"""Layout models end to end (issue 24): `exp run` then `exp predict` / `exp serve` on a baked
experiment whose model is a tiny LiLT (a BERT tokenizer that knows nothing of boxes: the collator
pads bbox) or a tiny LayoutLMv3 (its processor saved and reloaded as itself, page images sent as
base64), both built from a config with a tokenizer trained on the spot, on synthetic scanned pages
(empty text: no text layer)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import requests

from tests.bake import bake
from tests.test_pipeline import exp, run_dir
from tests.test_serving import EXP, free_port, stop, wait_until_up

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = '''
from __future__ import annotations

import io
import random
import sys

sys.path.insert(0, {root!r})  # the tests' tiny tokenizer

from ml_exp.toolkit import classification_metrics, layout_encode

KIND = {kind!r}
LABELS = ("contract", "audit", "policy")
WORDS = {{
    "contract": "party agrees term clause signed parties obligations".split(),
    "audit": "finding scope auditor sample control evidence opinion".split(),
    "policy": "staff must comply rule employees procedure applies".split(),
}}
COMMON = "the of page and section date".split()


def page_png(label, rng):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 80), "white")
    shade = {{"contract": 40, "audit": 120, "policy": 200}}[label]
    ImageDraw.Draw(image).rectangle([8, 8, 56, 20 + rng.randrange(40)], fill=(shade, shade, shade))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def reconcile(ctx):
    rng = random.Random(ctx.config.seed)
    for label in LABELS:
        for index in range(8):
            words = [rng.choice(WORDS[label] if rng.random() < 0.6 else COMMON) for _ in range(12)]
            boxes = [[x * 80, y * 60, x * 80 + 70, y * 60 + 40] for x, y in ((i % 12, i // 12) for i in range(12))]
            if KIND == "lilt":  # two pages: a cover page of common words, then the page that tells
                words, boxes = [[rng.choice(COMMON) for _ in range(12)], words], [boxes, boxes]
            yield {{"id": f"{{label}}-{{index}}", "text": "", "words": words, "boxes": boxes,
                    "image": page_png(label, rng), "label": label}}


def load_processor(model_name, ctx):
    from tests.tiny_tokenizer import wordpiece_tokenizer

    tokenizer = wordpiece_tokenizer([" ".join(w) for w in WORDS.values()] + [" ".join(COMMON)], 80)
    if KIND == "lilt":
        return tokenizer
    from transformers import LayoutLMv3ImageProcessor, LayoutLMv3Processor

    image = LayoutLMv3ImageProcessor(apply_ocr=False, size={{"height": 32, "width": 32}})
    return LayoutLMv3Processor(image_processor=image, tokenizer=tokenizer)


def encode(batch, processor, ctx):
    return layout_encode(batch, processor, ctx, image_field="image" if KIND == "layoutlmv3" else None)


def load_model(model_name, labels, ctx):
    import torch
    from transformers import (LayoutLMv3Config, LayoutLMv3ForSequenceClassification, LiltConfig,
                              LiltForSequenceClassification)

    torch.manual_seed(ctx.config.seed)
    id2label = dict(enumerate(labels))
    common = dict(vocab_size=80, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=ctx.config.max_length + 2, pad_token_id=0, num_labels=len(labels),
                  id2label=id2label, label2id={{label: i for i, label in id2label.items()}})
    if KIND == "lilt":
        return LiltForSequenceClassification(LiltConfig(channel_shrink_ratio=4, **common))
    config = LayoutLMv3Config(input_size=32, patch_size=16, coordinate_size=8, shape_size=8, **common)
    return LayoutLMv3ForSequenceClassification(config)


def compute_metrics(predictions, references, labels, ctx):
    return classification_metrics(predictions, references, labels)
'''


# lilt: this file's experiment; layout-example: `example=layout` as baked (a tiny LayoutLMv3 on
# synthetic scanned pages), with its own settings
@pytest.mark.parametrize("kind", ["lilt", "layout-example"])
def test_a_tiny_layout_model_trains_predicts_and_serves(tmp_path, kind):
    env = {"NUM_PROCESSES": "1", "WANDB_MODE": "disabled", "MPLCONFIGDIR": str(tmp_path / "matplotlib")}
    if kind == "layout-example":
        project = bake(tmp_path, ticket="EXP-24", model_slug="layoutlmv3", example="layout")
        kind = "layoutlmv3"
    else:
        project = bake(tmp_path, ticket="EXP-24", model_slug=kind)
        (project / "experiment.py").write_text(EXPERIMENT.format(root=str(ROOT), kind=kind))
        env |= {
            "MODEL_NAMES": f"tiny-{kind}", "MAX_LENGTH": "32", "DOCUMENT_STRATEGY": "truncate",
            "SPLIT_RATIOS": "0.5,0.25,0.25", "NUM_TRAIN_EPOCHS": "2", "PER_DEVICE_TRAIN_BATCH_SIZE": "4",
            "PER_DEVICE_EVAL_BATCH_SIZE": "4",
        }
    result = exp("run", cwd=project, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = run_dir(project, 1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert "bbox" in manifest["steps"]["preparation"]["models"][f"tiny-{kind}"]["columns"]
    processor = run / "data" / "prepared" / f"tiny-{kind}" / "processor"
    assert (processor / "processor_config.json").is_file() == (kind == "layoutlmv3")

    # exp predict: a scanned page (empty text) with its image as base64
    import pyarrow.parquet as pq

    records = pq.read_table(next((run / "data" / "reconciled").glob("*.parquet"))).to_pylist()[:3]
    for record in records:
        record["image"] = base64.b64encode(record["image"]).decode()
        record.pop("split", None)
    source = tmp_path / "pages.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = exp("predict", "--run", "1", str(source), cwd=project, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["id"] for p in predicted] == [r["id"] for r in records]
    assert all(set(p["scores"]) == {"audit", "contract", "policy"} for p in predicted)
    if kind == "lilt":  # two pages a document: one prediction each, the deciding page as evidence
        assert all(p["evidence"]["windows"] == 2 and p["evidence"]["page"] in (1, 2) for p in predicted)
        inferred = pq.read_table(run / "inference" / "tiny-lilt" / "predictions.parquet").to_pylist()
        assert inferred and all(p["windows"] == 2 and p["evidence_page"] in (1, 2) for p in inferred)
    if kind == "layoutlmv3":  # the demo learns its pages
        assert [p["prediction"] for p in predicted] == [r["label"] for r in records]

    # exp serve: the same answers over HTTP
    port = free_port()
    server = subprocess.Popen([EXP, "serve", "--run", "1", "--port", str(port)], cwd=project,
                              env={**__import__("os").environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        answer = requests.post(f"{url}/invocations", json=records, timeout=60)
        assert answer.status_code == 200, answer.text
        served = answer.json()
        served = served["predictions"] if isinstance(served, dict) else served
        assert [p["prediction"] for p in served] == [p["prediction"] for p in predicted]
    finally:
        stop(server)
