"""The rules between settings (one setting's own rule is its parser, in :mod:`ml_exp.config`).

Pure: parsed values in (``{field name: value}``), ``(KEY, message)`` pairs out.
"""

from __future__ import annotations

from typing import Any

from ml_exp.core.names import CHUNKS, MULTI_LABEL
from ml_exp.core.names import STEP_NAMES as STEPS

# special tokens of a window ([CLS] ... [SEP]); a stride must leave at least one new token per window
SPECIAL_TOKENS = 2


def cross_checks(v: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules that involve more than one setting; a rule whose settings did not parse is skipped
    (their own problems are already reported)."""
    problems: list[tuple[str, str]] = []

    def has(*keys: str) -> bool:
        return all(key in v for key in keys)

    if has("model_names") and not v["model_names"]:
        problems.append(("MODEL_NAMES", "is empty; list at least one model name (comma separated)"))
    switches = [f"run_{step}" for step in STEPS]
    if has(*switches) and not any(v[s] for s in switches):
        problems.append(
            (
                "RUN_*",
                "every step is switched off; set at least one of "
                + ", ".join(s.upper() for s in switches)
                + " to true",
            )
        )
    if has("run_tuning", "tuning_space") and v["run_tuning"] and not v["tuning_space"]:
        problems.append(
            ("TUNING_SPACE", "is empty but RUN_TUNING is true; describe the search space or set RUN_TUNING = false")
        )
    if has("tuning_parallel_trials", "tuning_trials") and v["tuning_parallel_trials"] > v["tuning_trials"]:
        problems.append(
            (
                "TUNING_PARALLEL_TRIALS",
                f"({v['tuning_parallel_trials']}) is larger than TUNING_TRIALS ({v['tuning_trials']}); lower it",
            )
        )
    if (
        has("chunk_stride", "max_length", "document_strategy")
        and v["document_strategy"] == CHUNKS
        and v["chunk_stride"] >= v["max_length"] - SPECIAL_TOKENS
    ):
        problems.append(
            (
                "CHUNK_STRIDE",
                f"({v['chunk_stride']}) must be smaller than MAX_LENGTH - {SPECIAL_TOKENS} "
                f"({v['max_length'] - SPECIAL_TOKENS}): it is the overlap of two windows of MAX_LENGTH tokens, "
                "less their special tokens ([CLS] and [SEP]); lower it (e.g. to MAX_LENGTH / 8)",
            )
        )
    if (
        has("chunk_training", "document_strategy")
        and v["chunk_training"] == "document"
        and v["document_strategy"] != CHUNKS
    ):
        problems.append(
            (
                "CHUNK_TRAINING",
                f"= document needs DOCUMENT_STRATEGY = chunks (it is {v['document_strategy']}); "
                "set DOCUMENT_STRATEGY = chunks or CHUNK_TRAINING = windows",
            )
        )
    if has("chunk_grad_windows", "chunk_training") and v["chunk_grad_windows"] and v["chunk_training"] != "document":
        problems.append(
            (
                "CHUNK_GRAD_WINDOWS",
                f"= {v['chunk_grad_windows']} is used only by CHUNK_TRAINING = document (it is "
                f"{v['chunk_training']}); set CHUNK_TRAINING = document or CHUNK_GRAD_WINDOWS = 0",
            )
        )
    if has("problem_type", "label_thresholds") and v["problem_type"] != MULTI_LABEL and v["label_thresholds"] != "f1":
        problems.append(
            (
                "LABEL_THRESHOLDS",
                f"= {v['label_thresholds']} is used only by PROBLEM_TYPE = multi_label (a single-label prediction is "
                "the most probable class); remove it or set PROBLEM_TYPE = multi_label",
            )
        )
    if has("wandb_mode", "wandb_project") and v["wandb_mode"] != "disabled" and not v["wandb_project"]:
        problems.append(("WANDB_PROJECT", "is empty; name a W&B project or set WANDB_MODE = disabled"))
    if has("subnets", "security_group_ids") and bool(v["subnets"]) != bool(v["security_group_ids"]):
        missing = "SUBNETS" if not v["subnets"] else "SECURITY_GROUP_IDS"
        problems.append((missing, "SUBNETS and SECURITY_GROUP_IDS go together (VPC mode); set both or neither"))
    if has("backend") and v["backend"] == "sagemaker":
        for key in (
            "SAGEMAKER_ROLE_ARN",
            "IMAGE_URI",
            "AWS_REGION",
            "TRAINING_INSTANCE_TYPE",
            "PREPARATION_INSTANCE_TYPE",
            "INFERENCE_INSTANCE_TYPE",
        ):
            if has(key.lower()) and not v[key.lower()]:
                problems.append((key, "is required when BACKEND = sagemaker"))
        if has("storage_uri") and not v["storage_uri"].startswith("s3://"):
            problems.append(("STORAGE_URI", "must be an s3:// URI when BACKEND = sagemaker (jobs read and write S3)"))
        if (
            has("use_spot", "max_wait_hours", "max_run_hours")
            and v["use_spot"]
            and v["max_wait_hours"] < v["max_run_hours"]
        ):
            problems.append(
                (
                    "MAX_WAIT_HOURS",
                    f"({v['max_wait_hours']:g}) must be >= MAX_RUN_HOURS ({v['max_run_hours']:g}) when USE_SPOT = true",
                )
            )
        if has("wandb_mode", "wandb_api_key_secret") and v["wandb_mode"] == "online" and not v["wandb_api_key_secret"]:
            problems.append(
                (
                    "WANDB_API_KEY_SECRET",
                    "is empty, and WANDB_MODE = online with BACKEND = sagemaker: the jobs read the W&B key "
                    "from AWS Secrets Manager (it never travels in a request). Store it (aws secretsmanager "
                    "create-secret --name ml-exp/wandb --secret-string <key>) and name the secret here",
                )
            )
    problems += endpoint_image_checks(v)
    return problems


def endpoint_image_checks(v: dict[str, Any]) -> list[tuple[str, str]]:
    """The image exp deploy would give the endpoint: a serverless endpoint is CPU-only, with a 10 GB
    image limit, so it cannot run the training image (CUDA, the training stack)."""
    if not all(
        key in v for key in ("endpoint_image", "serving_image_uri", "image_uri", "endpoint_serverless_memory_mb")
    ):
        return []
    if v["endpoint_image"] == "serving" and not v["serving_image_uri"]:
        return [
            (
                "SERVING_IMAGE_URI",
                "is empty, and ENDPOINT_IMAGE = serving: push ml-exp's CPU serving image (make serving-image "
                "push-images) and set its URI, or use ENDPOINT_IMAGE = auto",
            )
        ]
    serving = v["endpoint_image"] != "training" and v["serving_image_uri"] and v["serving_image_uri"] != v["image_uri"]
    if v["endpoint_serverless_memory_mb"] and not serving:
        why = (
            "ENDPOINT_IMAGE = training"
            if v["endpoint_image"] == "training"
            else "SERVING_IMAGE_URI is " + ("IMAGE_URI" if v["serving_image_uri"] else "empty")
        )
        return [
            (
                "SERVING_IMAGE_URI",
                f"a serverless endpoint (ENDPOINT_SERVERLESS_MEMORY_MB) would run the training image IMAGE_URI "
                f"({why}): serverless endpoints have no GPU and take images of at most 10 GB. Push ml-exp's CPU "
                "serving image (environment/serving/Dockerfile: make serving-image push-images) and set "
                "SERVING_IMAGE_URI to it, or deploy on instances (ENDPOINT_SERVERLESS_MEMORY_MB empty)",
            )
        ]
    return []
