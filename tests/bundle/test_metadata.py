"""configs/metadata.json: the MONAI bundle schema's fields, cxr_tune's block, the format check."""

from __future__ import annotations

import json

import pytest

from cxr_tune.bundle.metadata import FORMAT_VERSION, build_metadata, check_format
from cxr_tune.errors import DataError

MONAI_FIELDS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)


def test_metadata_has_the_bundle_schemas_fields_and_the_classes() -> None:
    meta = build_metadata(
        classes=["COVID", "Normal", "Viral Pneumonia"],
        image_size=224,
        task="multiclass",
        architecture="resnet50",
        dataset="covid19_radiography",
        cxr_tune={"split_hash": "abc", "format_version": 99},
    )
    json.dumps(meta)  # plain JSON
    assert all(field in meta for field in MONAI_FIELDS)
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [224, 224]
    assert image["dtype"] == "uint8" and image["value_range"] == [0, 255]
    assert image["is_patch_data"] is False and image["channel_def"] == {"0": "image"}
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 3 and pred["type"] == "probabilities"
    assert pred["channel_def"] == {"0": "COVID", "1": "Normal", "2": "Viral Pneumonia"}
    own = meta["cxr_tune"]
    assert own["format_version"] == FORMAT_VERSION  # never overridden by the facts given
    assert own["split_hash"] == "abc" and own["classes"] == ["COVID", "Normal", "Viral Pneumonia"]
    assert own["versions"]["torch"] == meta["pytorch_version"] is not None
    assert "not for clinical use" in meta["description"].lower()


def test_check_format_refuses_other_versions_and_foreign_files() -> None:
    meta = build_metadata(
        classes=["a", "b"], image_size=64, task="multilabel", architecture="alexnet", dataset="x"
    )
    assert check_format(meta)["task"] == "multilabel"
    meta["cxr_tune"]["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(DataError, match=f"format version is {FORMAT_VERSION + 1}, but this"):
        check_format(meta)
    with pytest.raises(DataError, match="no `cxr_tune` block"):
        check_format({"version": "0.1.0"})
