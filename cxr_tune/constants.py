"""Protocol names defined once: result keys, trial statuses and outcomes, file names, and
environment variables.

A trial writes these keys, the searcher and scheduler read them while the search runs, and the
results layer, the evaluation and the report read them afterwards; a name changed here changes
everywhere. This module imports nothing.
"""

from __future__ import annotations

from typing import Literal

# --- Keys of the result a trial reports each epoch -------------------------------------------
EPOCH = "epoch"
STATUS = "status"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
LEARNING_RATE = "lr"
FAILURE_REASON = "failure_reason"
# The losses of predicting the training class frequencies, on the validation and training
# splits: ASHA's no-skill check compares a trial's losses with them.
VAL_LOSS_NO_SKILL = "val_loss_no_skill"
TRAIN_LOSS_NO_SKILL = "train_loss_no_skill"
# Written by Ray Tune into every result.
TRIAL_ID = "trial_id"
TIME_TOTAL_S = "time_total_s"
CONFIG = "config"

# Metrics every trial reports once per epoch on the validation split, besides VAL_LOSS.
# Multi-label runs add MULTILABEL_EXTRA. "val_accuracy" is plain accuracy for multi-class runs
# and per-label (Hamming) accuracy for multi-label runs, the closest analogue of the paper's
# Dataset 3 figure.
VAL_METRICS: tuple[str, ...] = (
    "val_accuracy",
    "val_macro_precision",
    "val_macro_recall",
    "val_macro_f1",
)
MULTILABEL_EXTRA: tuple[str, ...] = ("val_macro_auroc", "val_micro_f1", "val_subset_accuracy")
METRIC_MODES: dict[str, Literal["min", "max"]] = {
    VAL_LOSS: "min",
    "val_accuracy": "max",
    "val_macro_precision": "max",
    "val_macro_recall": "max",
    "val_macro_f1": "max",
    "val_macro_auroc": "max",
    "val_micro_f1": "max",
    "val_subset_accuracy": "max",
}
DEFAULT_METRIC = "val_macro_f1"

# --- Hyperparameters ---------------------------------------------------------------------------
# The ones a study varies, in the order tables, progress lines and the factor effects show them.
STUDY_FACTORS: tuple[str, ...] = ("optimizer", "lr", "batch_size", "weight_decay", "momentum")
# The image side when a space gives none (the paper's 224 px).
DEFAULT_IMAGE_SIZE = 224
# How a dataset that ships its own split is split: "grouped" moves images so that no patient or
# near-duplicate cluster spans two splits; "published" keeps the published split exactly.
SPLIT_MODES: tuple[str, ...] = ("grouped", "published")
DEFAULT_SPLIT_MODE = "grouped"

# --- A result's status: how the epoch it reports ended -----------------------------------------
STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"  # the training loss became NaN/inf
STATUS_FAILED = "failed"  # the trial could not go on (e.g. its batch did not fit in memory)

# --- A trial's outcome, as the results layer classifies it (in the order reports list them) ----
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
DIVERGED = STATUS_DIVERGED
FAILED = STATUS_FAILED
UNFINISHED = "unfinished"
TRIAL_STATES: tuple[str, ...] = (COMPLETED, STOPPED_EARLY, DIVERGED, FAILED, UNFINISHED)

# --- Names in the Optuna study (optuna.db) ----------------------------------------------------
# A trial's user attribute: the Ray Tune trial it stands for.
RAY_TRIAL_ID_ATTR = "ray_trial_id"

# --- Files ------------------------------------------------------------------------------------
# In an experiment folder.
RECORD_FILE = "cxr_tune.json"  # what was asked, on what data, where
STUDY_FILE = "optuna.db"  # the Optuna study (SQLite)
EVALUATION_FILE = "evaluation.json"  # the final evaluation on the test split
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TRIALS_CSV = "trials.csv"
PLOTS_DIR = "plots"
# The evaluation's files for each cell's best model (``<dir>/<cell slug>/``): what export needs
# (MODEL_MANIFEST, the OOD statistics, retrained weights) and the saliency overlays, which hold
# images from the data and so stay out of the report.
MODELS_DIR = "models"
MODEL_MANIFEST = "model.json"
SALIENCY_DIR = "saliency"
# In a trial folder (Ray Tune's names).
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
CHECKPOINT_PREFIX = "checkpoint_"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
# In a trial checkpoint.
CHECKPOINT_FILE = "state.pt"  # model (and, until the last epoch, optimizer) state
TRIAL_FILE = "trial.json"  # beside the state: config, result and what the state holds

# --- Environment variables ---------------------------------------------------------------------
ENV_CACHE = "CXR_TUNE_CACHE"  # the decode-once cache (default ~/.cache/cxr_tune)
ENV_SCRATCH = "CXR_TUNE_SCRATCH"  # the driver's local files for remote experiments
ENV_STORAGE = "CXR_TUNE_STORAGE"  # the default experiments root (--storage)
ENV_SPACES = "CXR_TUNE_SPACES"  # a folder of named search spaces
ENV_GPU_CHECK_TIMEOUT = "CXR_TUNE_GPU_CHECK_TIMEOUT"  # seconds to wait for a free GPU
ENV_DEBUG = "CXR_TUNE_DEBUG"  # 1: print the traceback of an internal error
ENV_RAY_CHDIR = "RAY_CHDIR_TO_TRIAL_DIR"  # Ray's: trials keep the driver's working folder

DEFAULT_CACHE_DIR = "~/.cache/cxr_tune"
DEFAULT_SCRATCH_DIR = "~/.cache/cxr_tune/studies"
DEFAULT_STORAGE = "~/cxr_tune_results"
# A multi-label dataset's label is kept when it has this many positive images in every split
# (``--min-label-positives`` on the search and data commands).
DEFAULT_MIN_LABEL_POSITIVES = 2
