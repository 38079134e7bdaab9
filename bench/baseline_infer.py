"""Bare batched ``torch.no_grad()`` forward over a test split: the baseline of the inference
benchmark.

    python bench/baseline_infer.py --data RUN/data/prepared/MODEL --model-dir RUN/models/MODEL --result out.json

The same trained model, the same encoded test split and batch size as ml-exp's inference step;
each batch padded with the tokenizer, argmax kept in memory. Nothing is written.
"""

import time

T0 = time.perf_counter()  # before the heavy imports: ml-exp's step duration includes them too

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    import datasets
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    test = datasets.load_from_disk(str(args.data))["test"]
    device = "cuda" if torch.cuda.is_available() else "cpu"  # as ml-exp's inference
    model = AutoModelForSequenceClassification.from_pretrained(str(args.model_dir)).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir))
    inputs = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in test.column_names]
    predicted = []
    with torch.no_grad():
        for batch in test.select_columns(inputs).iter(batch_size=args.batch_size):
            features = tokenizer.pad(dict(batch), return_tensors="pt").to(device)
            predicted.append(model(**features).logits.argmax(dim=-1).cpu().numpy())
    predicted = np.concatenate(predicted)
    args.result.write_text(json.dumps({"records": int(predicted.size), "threads": torch.get_num_threads(),
                                       "elapsed_s": time.perf_counter() - T0}))


if __name__ == "__main__":
    main()
