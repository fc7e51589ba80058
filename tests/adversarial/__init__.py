"""Bad input fed to every entry point (``search``, ``data inspect``, ``data prepare``, ``report``,
``evaluate``), and the outcome each case must have.

Two outcomes are allowed: exit 2 with one line naming the file, key or value and what is
allowed; or, for damage that real downloads carry, a documented skip: the item is skipped,
listed (by reason, with its path) in ``data inspect`` and the cache's ``skipped.json``, and
the rest is used. Never a traceback, a hang or a partial file.

Images (test_images.py; skipped and listed unless said otherwise):
    zero-byte -> "empty file (0 bytes)"; truncated PNG and JPEG -> "truncated or corrupt image
    data"; HTML saved as .png -> "not a decodable image"; decompression bomb (a 40000x40000
    header) -> "too many pixels"; 1x1 -> "too small to be a radiograph"; 10000x10 -> "not
    radiograph-shaped"; unreadable permissions -> "unreadable file" (as root: run without root's
    file access); broken symlink -> "unreadable file"; PNG bytes named .jpg, CMYK JPEG, palette
    PNG, 16-bit PNG -> decoded; a folder named like an image -> a folder (its images are read).
Datasets (test_datasets.py):
    empty root, one class only, class names differing only in case or spacing, metadata.csv
    without a required column (forced layout), a split left empty by near-duplicate grouping,
    a file or a missing path given as the dataset -> exit 2, no cache written. Empty class
    folder -> ignored with a note; rows naming missing files, duplicated rows -> skipped and
    listed; a non-UTF-8 metadata.csv -> read as Latin-1 with a note; a byte-order mark ->
    read; paths escaping the root (``../``, absolute, ``/etc/passwd``) -> skipped as missing,
    nothing outside the root read; Dataset 1 without its xlsx files -> read, a note per class;
    file names that are not UTF-8 -> read, printed escaped.
Spaces and flags (test_spaces.py): invalid YAML, empty file, only comments, not a mapping,
    unknown keys, unknown hyperparameters and domains, wrong types, lr <= 0, infinite bounds,
    empty choice, low >= high, unknown model and optimizer, a dataset set in the space, bad
    --num-samples/--epochs/--image-size/--seed/--max-concurrent/--profile, a non-UTF-8 file, a
    YAML tag that would run code -> exit 2 naming the file and key.
Command lines (test_cli.py): --data missing, a file, an unknown key or no dataset layout;
    --resume of an unknown experiment; --name clashing or not a plain name; --storage a file;
    report on a folder that is not an experiment, a file, a missing path, --out a file;
    evaluate on a folder that is not an experiment, --seeds 0 -> exit 2, nothing written.
    A damaged experiment (record cut short, binary or not an object, evaluation not an object,
    optuna.db not SQLite, garbled result.json or params.json) -> report written, exit 0, the
    damage listed in it.
Training (test_training.py, integration): a diverging configuration -> "diverged"; a batch
    that does not fit in memory -> "failed: out of memory"; a trial that raises -> "failed" with
    its error; the search goes on and exits 0 saying how many failed. A batch size larger than
    the training split -> exit 2. ``--profile gpu`` on a cluster without GPUs or autoscaler ->
    exit 2 at once. A full disk under a checkpoint: tests/search/test_disk_full.py.
"""
