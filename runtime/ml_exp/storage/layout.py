"""Every path inside a run folder, defined once: ``<STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/``.

::

    run_<N>/
      manifest.json                   what ran: settings, code, versions, each step's status and facts
      data/reconciled/                reconciliation: part-*.parquet
      data/split.parquet              preparation: each record's split (id, split), what DATA_FROM reuses
      data/assigned_split.parquet     reconciliation with DATA_FROM: the source run's data/split.parquet
      data/prepared/labels.json       preparation: the label list (index = class id), one for every model
      data/prepared/<model>/          preparation: train/validation/test (datasets) + processor/ + document_lengths.png
      tuning/<model>/                 tuning: best.json, trials.json, trials.csv, and the search's own
                                      state (study.db locally, sagemaker_tuning_job.json on SageMaker)
      tuning/<model>/trial_<k>/       tuning: one trial's model and training_metrics.json
      checkpoints/<model>/            training: checkpoint-<step>/, to resume from; wandb.json
      models/<model>/                 training: the best model, its processor, labels.json, training_metrics.json
      inference/<model>/              inference: predictions, metrics, per-class report, confusion matrix
      report.md, report.html, comparison.json, comparison.png   inference: the models side by side
      jobs/<job>.json, jobs/<job>.result.json      SageMaker: each job's specification and its facts
      .scratch/                       temporary files of the step running now (file:// storage), cleared
                                      when a step ends and whenever the run (re)starts
      serving/<model>/model.tar.gz    exp deploy: the model packed for an endpoint (unpacked in /opt/ml/model)
      deployments/<endpoint>.json     exp deploy: each endpoint's requests (model, endpoint config, endpoint)
      registry/model_quality.json     exp register on SageMaker: the metrics its model package points to

A folder counts once its ``_COMPLETE`` marker exists (:meth:`ml_exp.storage.run.Run.is_complete`).
``<model>`` is :func:`model_key` of a model name. Pure: paths are relative to the run folder.
"""

from __future__ import annotations

import re

from ml_exp.core.names import INFERENCE, TUNING

MANIFEST = "manifest.json"
COMPLETE = "_COMPLETE"
RUN_DIR_RE = re.compile(r"^run_(\d+)$")

RECONCILED = "data/reconciled"
# The fields of a reconciled record that are not its content: everything else is.
RECORD_FIELDS = ("id", "label", "split")
PREPARED = "data/prepared"
SPLIT = "data/split.parquet"
ASSIGNED_SPLIT = "data/assigned_split.parquet"
LABELS = f"{PREPARED}/labels.json"
# Inside a prepared folder: the processor that encoded it (training and inference reuse it).
PROCESSOR = "processor"
# Inside a prepared folder: how long the documents are, in the model's tokens (a histogram).
DOCUMENT_LENGTHS_PNG = "document_lengths.png"
SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = SPLITS

MODELS = "models"
CHECKPOINTS = "checkpoints"
# Inside a checkpoint folder: the last global step logged to the tracker (attempts log each once).
TRACKING_STATE = "wandb.json"
# Inside a model folder (and a trial folder).
MODEL_LABELS = "labels.json"
TRAINING_METRICS = "training_metrics.json"

# Inside a tuning folder.
BEST = "best.json"
TRIALS = "trials.json"
TRIALS_CSV = "trials.csv"
STUDY = "study.db"
SAGEMAKER_TUNING_JOB = "sagemaker_tuning_job.json"

# Inside an inference folder.
PREDICTIONS = "predictions.parquet"
PREDICTIONS_CSV = "predictions.csv"
METRICS = "metrics.json"
CLASSIFICATION_REPORT = "classification_report.json"
CONFUSION_MATRIX = "confusion_matrix.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"

# At the run root.
REPORT = "report.md"
REPORT_HTML = "report.html"
COMPARISON = "comparison.json"
COMPARISON_PNG = "comparison.png"
JOBS = "jobs"
SCRATCH = ".scratch"

# Serving (exp predict / serve / deploy). A serving bundle is a folder: the model folder's files
# at its root, the processor that encoded the data in PROCESSOR/, and SERVING_INFO (labels, the
# records' fields, the run's settings, where it comes from). Packed as MODEL_ARCHIVE for SageMaker.
SERVING = "serving"
SERVING_INFO = "serving.json"
MODEL_ARCHIVE = "model.tar.gz"
DEPLOYMENTS = "deployments"
# Beside the experiments, not in a run: <STORAGE_URI>/registry/<group>/v<N>.json (exp register).
REGISTRY = "registry"
# In the run: the metrics document a SageMaker model package of the run's model points to.
MODEL_QUALITY = f"{REGISTRY}/model_quality.json"


def run_dir(num: int) -> str:
    return f"run_{num}"


def model_key(model_name: str) -> str:
    """Folder-safe name of a model: ``allenai/longformer-base-4096`` -> ``allenai--longformer-base-4096``."""
    key = model_name.strip().replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.") or "model"


def prepared_dir(model_name: str) -> str:
    return f"{PREPARED}/{model_key(model_name)}"


def model_dir(model_name: str) -> str:
    return f"{MODELS}/{model_key(model_name)}"


def checkpoint_dir(model_name: str) -> str:
    return f"{CHECKPOINTS}/{model_key(model_name)}"


def tuning_dir(model_name: str) -> str:
    return f"{TUNING}/{model_key(model_name)}"


def trial_name(number: int) -> str:
    """A trial's name: its folder in the tuning folder, its wandb run, its row in trials.json."""
    return f"trial_{number}"


def trial_dir(model_name: str, trial: str) -> str:
    return f"{tuning_dir(model_name)}/{trial}"


def inference_dir(model_name: str) -> str:
    return f"{INFERENCE}/{model_key(model_name)}"


def serving_dir(model_name: str) -> str:
    return f"{SERVING}/{model_key(model_name)}"


def deployment_spec(endpoint_name: str) -> str:
    return f"{DEPLOYMENTS}/{endpoint_name}.json"


def job_spec(job_name: str) -> str:
    return f"{JOBS}/{job_name}.json"


def job_result(job_name: str) -> str:
    """What a job's container leaves for the driver's manifest (the step's facts)."""
    return f"{JOBS}/{job_name}.result.json"
