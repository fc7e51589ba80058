"""``configs/inference.json``: what MONAI's bundle runner executes on a folder of images.

::

    python -m monai.bundle run --config_file PACKAGE/configs/inference.json \\
        --bundle_root PACKAGE --dataset_dir IMAGES [--output_dir OUT]

writes ``OUT/predictions.csv`` (default ``PACKAGE/eval/``): one row per PNG or JPEG file of
``IMAGES`` (sorted, extensions of any case), its path and each class's calibrated probability,
with a header naming the classes.

The config needs MONAI, PyTorch and numpy, not cxr_tune: it loads ``models/model.ts`` with
``torch.jit.load`` (the preprocessing, network and calibration are inside it), reads each file
with MONAI's ``LoadImage`` (Pillow, rows first, 8-bit), and writes the CSV with Python's ``csv``
module. It is written in MONAI's config syntax only because MONAI's runner reads that syntax
(``$`` expressions, ``@`` references, ``_target_`` components); cxr_tune's own configs never
evaluate expressions.

What it does not do: the decoder training used (``cxr_tune.data.images.decode_file``: 16-bit
PNG scaling, reduced-scale JPEG decoding, DICOM). Files are handed to the TorchScript module at
their own size and resized there (PyTorch's antialiased bilinear, within a few gray levels of
the decoder's Pillow resize). ``cxr-tune predict`` is the path that decodes exactly as training.
"""

from __future__ import annotations

from typing import Any

PREDICTIONS = "predictions.csv"
EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def inference_config() -> dict[str, Any]:
    """The config, as a dict ready for ``json.dump``."""
    return {
        "imports": [
            "$import csv",
            "$import os",
            "$import json",
            "$import numpy",
            "$import torch",
        ],
        "bundle_root": ".",
        "dataset_dir": "$os.path.join(@bundle_root, 'data')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "output_file": f"$os.path.join(@output_dir, '{PREDICTIONS}')",
        "extensions": list(EXTENSIONS),
        "datalist": (
            "$sorted(os.path.join(@dataset_dir, name) for name in os.listdir(@dataset_dir) "
            "if os.path.splitext(name)[1].lower() in @extensions)"
        ),
        "metadata_file": "$os.path.join(@bundle_root, 'configs', 'metadata.json')",
        "channel_def": (
            "$json.loads(open(@metadata_file, encoding='utf-8').read())"
            "['network_data_format']['outputs']['pred']['channel_def']"
        ),
        "classes": "$[@channel_def[str(k)] for k in range(len(@channel_def))]",
        "network": (
            "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), "
            "map_location='cpu').eval()"
        ),
        "loader": {
            "_target_": "LoadImage",
            "reader": "PILReader",
            "image_only": True,
            "dtype": "$numpy.uint8",
            "reverse_indexing": False,
        },
        "predict": (
            "$lambda path: @network(torch.as_tensor(numpy.asarray(@loader(path))))"
            "[0].detach().tolist()"
        ),
        "rows": "$[[path] + @predict(path) for path in @datalist]",
        "write_csv": (
            "$lambda path, header, rows: (lambda handle: (csv.writer(handle).writerows("
            "[header] + rows), handle.close()))(open(path, 'w', newline='', encoding='utf-8'))"
        ),
        "initialize": ["$os.makedirs(@output_dir, exist_ok=True)"],
        "run": ["$@write_csv(@output_file, ['path'] + @classes, @rows)"],
        "finalize": [],
    }
