"""cxr_tune: distributed hyperparameter search for chest X-ray classifiers."""

__version__ = "0.1.0"
