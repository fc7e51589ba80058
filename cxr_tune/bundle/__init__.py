"""The model package: a trained model that leaves the experiment with everything it needs.

- ``inference``: the TorchScript module (preprocessing + network + calibration);
- ``reader``: streaming decode of files and folders for prediction;
- ``package``: ``write_bundle`` / ``load_bundle`` (a MONAI bundle's layout);
- ``metadata``, ``card``, ``monai_config``: ``configs/metadata.json``, ``docs/README.md``,
  ``configs/inference.json``;
- ``onnx``: the optional ONNX export.

Nothing is imported here: the reader's decoding processes import ``cxr_tune.bundle.reader``,
and must not pay for PyTorch.
"""
