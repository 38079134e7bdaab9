"""Bare HF Trainer fine-tuning on data ml-exp prepared: the baseline of the training benchmark.

    python bench/baseline_train.py --data RUN/data/prepared/MODEL --model minilm --result out.json [--matched]

Plain ``python`` (no torchrun), the same model (bench_models.build_model, same seed), the same
encoded data, batch size, epochs, learning rate and thread count as the ml-exp run it is
compared with. By default it is what one writes by hand: no evaluation and no checkpoints during
training, the model saved at the end. ``--matched`` also evaluates (with the same metric function
as the bench experiment's compute_metrics) and checkpoints every epoch and reloads the best model
at the end, as ml-exp's training step does: the same work without ml-exp's launcher and callbacks.
"""

import time

T0 = time.perf_counter()  # before the heavy imports: ml-exp's step duration includes them too

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--matched", action="store_true")
    args = parser.parse_args()

    import datasets
    import numpy as np
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    splits = datasets.load_from_disk(str(args.data))
    labels = json.loads((args.data / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(args.data / "processor"))
    model = bench_models.build_model(args.model, labels, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-bare-train-") as out:
        extra = {"save_strategy": "no"}
        if args.matched:
            extra = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                         metric_for_best_model="f1_macro", save_total_limit=2)
        training_args = TrainingArguments(
            output_dir=out,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            logging_strategy="epoch",
            use_cpu=not torch.cuda.is_available(),  # the GPU when there is one, as ml-exp
            report_to="none",
            disable_tqdm=True,
            **extra,
        )

        def compute_metrics(prediction):
            # the same metric function as the bench experiment's compute_metrics (ml-exp's default)
            from ml_exp.toolkit import classification_metrics

            return classification_metrics(np.argmax(prediction.predictions, axis=-1).tolist(), prediction.label_ids.tolist(), labels)

        trainer = Trainer(
            model=model,
            args=training_args,
            data_collator=DataCollatorWithPadding(tokenizer),
            train_dataset=splits["train"],
            eval_dataset=splits["validation"] if args.matched else None,
            processing_class=tokenizer,
            compute_metrics=compute_metrics if args.matched else None,
        )
        result = trainer.train()
        trainer.save_model(os.path.join(out, "model"))
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]  # --matched: the best model's
    best = next((h for h in evals if h.get("step") == trainer.state.best_global_step), None)
    args.result.write_text(json.dumps({
        "accuracy": best["eval_accuracy"] if best else None,
        "train_samples_per_second": result.metrics["train_samples_per_second"],
        "train_runtime": result.metrics["train_runtime"],
        "train_samples": len(splits["train"]),
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "elapsed_s": time.perf_counter() - T0,
    }))


if __name__ == "__main__":
    main()
