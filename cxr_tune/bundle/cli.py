"""``cxr-tune export`` and ``cxr-tune predict`` (also ``python -m cxr_tune.export`` and
``python -m cxr_tune.predict``): the best model leaves the experiment as a model package, and
runs on new images.

Exit codes as every command (``cxr_tune.cli``): 0 done; 2 a usage or data error, one line
(no finished evaluation, an unknown cell, a package already there without ``--force``, an empty
folder, a package of another format version); 1 an unexpected failure; 130 interrupted (a
package is written whole or not at all; predict keeps the rows it wrote).
"""

from __future__ import annotations

import argparse

EXPORT_DESCRIPTION = (
    "Write each cell's best model (or --cell's) as a model package laid out as a MONAI bundle: "
    "configs/metadata.json, configs/inference.json, models/model.pt, models/model.ts "
    "(TorchScript with the preprocessing and calibration inside), models/ood.npz and a model "
    "card (docs/README.md), from the experiment's final evaluation. EXPERIMENT is a folder or "
    "a storage URI (s3://bucket/prefix/name)."
)
EXPORT_INTERRUPTED = "a package is written whole or not at all; none was left half-written."

PREDICT_DESCRIPTION = (
    "Predict PNG, JPEG and DICOM files (or folders of them) with a model package, or with an "
    "experiment's best model: one CSV row per file with each class's calibrated and raw "
    "probability, the predicted class, the COVID flag at the package's operating point (95%% "
    "sensitivity on the validation split unless --operating-point 90), the out-of-distribution "
    "flag and distance, and for a file that cannot be read, the reason."
)
PREDICT_INTERRUPTED = "the rows predicted so far are in the CSV file."


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``export`` command's options."""
    parser.add_argument(
        "experiment", help="an experiment folder with a finished evaluation, or its storage URI"
    )
    parser.add_argument("--cell", metavar="DATASET/ARCH", help="export only this cell's best model")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where the packages go, one folder per cell (default: EXPERIMENT/packages; for a "
        "storage URI ./<name>-packages)",
    )
    parser.add_argument(
        "--format",
        choices=["onnx"],
        action="append",
        default=[],
        help="also write models/model.onnx, checked with onnxruntime against the TorchScript "
        "module on test images (needs `pip install cxr_tune[onnx]`)",
    )
    parser.add_argument("--force", action="store_true", help="replace existing packages")


def run_export(args: argparse.Namespace) -> int:
    """Export; returns the exit code."""
    # Heavy imports (torch) only once the arguments parse: --help is instant.
    from cxr_tune.bundle.export import export_experiment

    written = export_experiment(
        args.experiment,
        cell=args.cell,
        out=args.out,
        onnx="onnx" in args.format,
        force=args.force,
    )
    print(f"export: {len(written)} package(s) written")
    return 0


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``predict`` command's options."""
    parser.add_argument(
        "source",
        metavar="PACKAGE|EXPERIMENT",
        help="a model package folder (`cxr-tune export`), or an experiment folder or storage "
        "URI (its best model; --cell chooses among several cells)",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument(
        "--out", default="predictions.csv", help="the CSV file (default: predictions.csv)"
    )
    parser.add_argument(
        "--saliency", metavar="DIR", help="also write one Grad-CAM overlay PNG per image here"
    )
    parser.add_argument(
        "--cell", metavar="DATASET/ARCH", help="with an experiment: which cell's best model"
    )
    parser.add_argument(
        "--operating-point",
        default="95",
        choices=["90", "95"],
        help="the COVID flag's threshold: the one reaching this %% sensitivity on the "
        "validation split (default 95)",
    )
    parser.add_argument("--batch-size", type=int, help="images per model call (default 32)")
    parser.add_argument(
        "--workers", type=int, help="decoding processes (default: the cores less one)"
    )


def run_predict(args: argparse.Namespace) -> int:
    """Predict; returns the exit code."""
    from cxr_tune.errors import ConfigError

    for name in ("batch_size", "workers"):
        value = getattr(args, name)
        low = 1 if name == "batch_size" else 0
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: the value is {value}, but must be >= {low}.")
    from cxr_tune.bundle.predict import describe, predict_files

    summary = predict_files(
        args.source,
        args.paths,
        out=args.out,
        saliency=args.saliency,
        cell=args.cell,
        operating_point=args.operating_point,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    print(describe(summary))
    return 0
