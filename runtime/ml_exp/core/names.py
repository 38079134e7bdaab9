"""Names shared by every part of ml-exp: the steps, and the rules for the names a user chooses.

Pure and standard-library only: the template's pre-generation hook loads this very file by its
path (before anything is installed), so a new experiment's answers meet the runtime's own rules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One step of the pipeline. ``name`` is used everywhere: the ``RUN_<NAME>`` setting,
    ``exp run --steps``, storage folders named after a step, wandb's job_type, the module
    ``ml_exp.steps.<name>``; ``token`` is its short form in SageMaker job names."""

    name: str
    token: str
    summary: str


# Pipeline order: tuning comes before training (training then uses the best values found).
STEPS = (
    Step("reconciliation", "recon", "reconcile(ctx) streams the labelled raw records into the run"),
    Step("preparation", "prep", "one stratified split, then encode(...) for every model"),
    Step("tuning", "tune", "search TUNING_SPACE; training then uses the best values found"),
    Step("training", "train", "fine-tune every model; its best checkpoint becomes the run's model"),
    Step("inference", "infer", "every model on the test split, then the models compared"),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
RECONCILIATION, PREPARATION, TUNING, TRAINING, INFERENCE = STEP_NAMES
TOKENS = {s.name: s.token for s in STEPS}

# --- rules for names (regular expressions matched against the whole value) --------------------
EXPERIMENT_NAME_MAX = 63
# Letters and digits joined by '-': a folder name, an S3 prefix, the head of SageMaker job names.
EXPERIMENT_NAME_RE = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
AWS_REGION_RE = r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]"
ROLE_ARN_RE = r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+"
S3_BUCKET_RE = r"(?!xn--)(?!.*\.\.)(?!.*-s3alias$)(?!.*--ol-s3$)(?![0-9.]+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
INSTANCE_TYPE_RE = r"ml\.[a-z0-9-]+\.[a-z0-9]+"
WANDB_PROJECT_RE = r"[^/\\#?%:\s]{1,128}"
WANDB_ENTITY_RE = r"[A-Za-z0-9_-]{1,64}"

# DOCUMENT_STRATEGY: what a model reads of a document longer than MAX_LENGTH (declared once; the
# settings, the toolkit's encode, preparation's windows and training all use these names).
DOCUMENT_STRATEGIES = ("truncate", "head_tail", "chunks")
TRUNCATE, HEAD_TAIL, CHUNKS = DOCUMENT_STRATEGIES
# PROBLEM_TYPE: one class per record, or a list of them (transformers' problem_type values behind them)
PROBLEM_TYPES = ("single_label", "multi_label")
SINGLE_LABEL, MULTI_LABEL = PROBLEM_TYPES
