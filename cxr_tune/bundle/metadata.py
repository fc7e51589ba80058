"""``configs/metadata.json``: the package described in the MONAI bundle schema's fields.

The fields are those MONAI's bundle schema and the Model Zoo's bundles use (``version``,
``changelog``, the library versions, ``task``, ``description``, ``authors``, ``copyright``,
``network_data_format`` with ``inputs.image`` and ``outputs.pred``), so MONAI's tools and
readers of the Model Zoo find what they expect. cxr_tune's own facts (the dataset and its hashes,
the searched space, the chosen configuration, test metrics with intervals, transfer, probe,
saliency, calibration, operating points, the out-of-distribution threshold) sit in one block of
their own, ``cxr_tune``, beside them; its ``format_version`` is what :func:`check_format`
(and ``load_bundle``) read.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from typing import Any

from cxr_tune.errors import DataError

# The layout and fields of a cxr_tune model package; raise it when a reader of an older
# package would misread a newer one.
FORMAT_VERSION = 1
# The schema MONAI's Model Zoo bundles name (MONAI's own ``verify_metadata`` fetches it).
MONAI_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20220324.json"
)
# Packages whose versions the metadata records (MONAI's ``required_packages_version``).
REQUIRED_PACKAGES: tuple[str, ...] = ("torchvision", "pillow", "pydicom")


def package_version(name: str) -> str | None:
    """The installed version of ``name`` (None when it is not installed)."""
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def build_metadata(
    *,
    classes: Sequence[str],
    image_size: int,
    task: str,
    architecture: str,
    dataset: str,
    version: str = "0.1.0",
    changelog: Mapping[str, str] | None = None,
    description: str | None = None,
    authors: str = "cxr_tune",
    copyright: str = "",
    cxr_tune: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata of one exported model.

    Args:
        classes: output names, in order (``outputs.pred.channel_def``).
        image_size: side of the square input the network sees.
        task: ``multiclass`` (softmax over ``classes``) or ``multilabel`` (a sigmoid each).
        architecture: registered model name.
        dataset: the dataset it was trained on.
        cxr_tune: cxr_tune's own facts (phase 2 fills it from the experiment); ``format_version``
            and the versions of torch, torchvision and cxr_tune are added.
    """
    kind = "multi-label" if task == "multilabel" else "multi-class"
    activation = "a sigmoid per label" if task == "multilabel" else "softmax over the classes"
    own = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "dataset": dataset,
        "task": task,
        "classes": list(classes),
        "image_size": int(image_size),
        "versions": {
            "torch": package_version("torch"),
            "torchvision": package_version("torchvision"),
            "cxr_tune": package_version("cxr_tune"),
            "python": platform.python_version(),
        },
        **dict(cxr_tune or {}),
    }
    own["format_version"] = FORMAT_VERSION
    return {
        "schema": MONAI_SCHEMA,
        "version": version,
        "changelog": dict(changelog or {version: "exported by cxr_tune"}),
        "monai_version": package_version("monai"),
        "pytorch_version": package_version("torch"),
        "numpy_version": package_version("numpy"),
        "required_packages_version": {
            name: v for name in REQUIRED_PACKAGES if (v := package_version(name)) is not None
        },
        "optional_packages_version": {},
        "name": f"{dataset} {architecture} chest X-ray classifier",
        "task": f"{kind} chest X-ray classification ({', '.join(classes)})",
        "description": description
        or (
            f"{architecture} trained by a cxr_tune hyperparameter search on {dataset}; "
            f"grayscale radiographs at {image_size} px in, {activation} out, calibrated by "
            "temperature scaling. Research use only: not for clinical use."
        ),
        "authors": authors,
        "copyright": copyright or f"Copyright (c) {time.strftime('%Y')} the model's authors",
        "data_type": "png, jpeg or dicom, decoded to 8-bit grayscale",
        "intended_use": "research on chest X-ray classifiers; not for clinical use",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "xray",
                    "num_channels": 1,
                    "spatial_shape": [int(image_size), int(image_size)],
                    "dtype": "uint8",
                    "value_range": [0, 255],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes",
                    "num_channels": len(classes),
                    "spatial_shape": [1, len(classes)],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {str(k): str(c) for k, c in enumerate(classes)},
                }
            },
        },
        "cxr_tune": own,
    }


def check_format(meta: Mapping[str, Any], where: str = "configs/metadata.json") -> dict[str, Any]:
    """The ``cxr_tune`` block of a package's metadata, checked to be one this code reads.

    Raises:
        DataError: no cxr_tune block, or a format version other than :data:`FORMAT_VERSION`.
    """
    own = meta.get("cxr_tune")
    if not isinstance(own, Mapping):
        raise DataError(f"{where} has no `cxr_tune` block: not a model package cxr_tune wrote.")
    found = own.get("format_version")
    if found != FORMAT_VERSION:
        raise DataError(
            f"{where}: the package's format version is {found!r}, but this cxr_tune reads "
            f"format version {FORMAT_VERSION}; export the model again with this version, or "
            "use the cxr_tune version that wrote it."
        )
    return dict(own)
