"""Benchmark: images/s delivered to a trial from the cache vs a plain torchvision pipeline.

Both sides deliver the same thing, ready model-input batches of normalised float tensors at
``--image-size`` with a random horizontal flip, from the same PNG files (generated here, an
imagefolder of two classes), in the same run, with the same batch size:

- baseline: ``torchvision.datasets.ImageFolder`` + PIL + ``Resize``, ``CenterCrop``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` through a ``DataLoader`` with one worker
  process per CPU core (what a plain training script does every epoch);
- cache: ``load_dataset`` (the decode-once cache, memory-mapped) -> uint8 tensor -> batches by
  index -> float normalise + flip, using ``cxr_tune.engine`` (``to_device``,
  ``iterate_batches``, ``prepare_batch``, ``augment_batch``) when it is importable, else the
  same steps inline (the JSON says which).

Both sides are timed per epoch. The headline ratio is best epoch against best epoch (other work
on a shared machine slows some epochs down, on either side); the median-epoch ratio is reported
too. The one-off decode into the cache (``prepare``) is timed and reported separately.

    python scripts/bench/data_plane.py                 # 1,000 PNGs of 1024x1024, ~2 minutes
    python scripts/bench/data_plane.py --smoke-test    # seconds, nothing written
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "scripts" / "bench" / "results" / "data_plane.json"
GRAY_MEAN, GRAY_STD = 0.449, 0.226


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="PNG files to generate")
    parser.add_argument("--size", type=int, default=1024, help="side of the generated PNGs")
    parser.add_argument("--image-size", type=int, default=224, help="model input side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-epochs", type=int, default=10, help="epochs timed on the cache")
    parser.add_argument(
        "--baseline-epochs", type=int, default=2, help="epochs timed on the baseline"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke-test", action="store_true", help="tiny run, no JSON written")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.images, args.size, args.image_size = 32, 256, 64
        args.cache_epochs, args.baseline_epochs = 1, 1
    return args


def _write_png(job: tuple[Path, int, int]) -> None:
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = 0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0, 1)))
    image += 0.2 * np.cos(2 * np.pi * (rng.uniform(0.5, 3) * y + rng.uniform(0, 1)))
    image += rng.normal(0, 0.03, size=(size, size)).astype(np.float32)  # film grain
    pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    # compress_level=1 keeps generation quick; decoding cost barely depends on it.
    Image.fromarray(pixels, mode="L").save(path, compress_level=1)


def generate(root: Path, n: int, size: int, workers: int) -> float:
    """Write ``n`` grayscale PNGs as ``root/<class>/<i>.png``; returns seconds."""
    started = time.perf_counter()
    jobs = []
    for i in range(n):
        folder = root / ("class_a" if i % 2 else "class_b")
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:05d}.png", i, size))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_png, jobs, chunksize=8))
    return time.perf_counter() - started


def bench_baseline(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """torchvision ImageFolder + PIL + transforms through a DataLoader, timed per epoch."""
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(args.image_size),
            transforms.CenterCrop(args.image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers
    )
    epochs = []
    for _ in range(args.baseline_epochs):
        started = time.perf_counter()
        seen = sum(images.shape[0] for images, _labels in loader)
        epochs.append(time.perf_counter() - started)
    return _rates(seen, epochs)


def _rates(seen: int, epochs: list[float]) -> dict[str, Any]:
    """Images/s of the best and the median epoch (the best is the least disturbed by other
    work on a shared machine)."""
    return {
        "images": seen,
        "epoch_seconds": epochs,
        "images_per_s": seen / min(epochs),
        "median_images_per_s": seen / float(np.median(epochs)),
    }


def _cache_batches_engine(split: Any, task: str, batch_size: int) -> Iterator[Any]:
    import torch

    from cxr_tune.engine import (
        LoopSettings,
        augment_batch,
        iterate_batches,
        prepare_batch,
        to_device,
    )

    settings = LoopSettings(device=torch.device("cpu"))
    data = to_device(split, settings.device, task)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    for index in iterate_batches(len(data), batch_size, shuffle=True, generator=generator):
        x = augment_batch(prepare_batch(data.images[index], settings), "paper", generator)
        yield x, data.labels[index]


def _cache_batches_inline(split: Any, task: str, batch_size: int) -> Iterator[Any]:
    import torch

    images = torch.from_numpy(np.asarray(split.images))
    labels = torch.from_numpy(np.asarray(split.labels))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=generator)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x = images[index].unsqueeze(1).float().mul_(1 / 255).sub_(GRAY_MEAN).div_(GRAY_STD)
        flip = torch.rand(len(index), generator=generator) < 0.5
        yield torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), labels[index]


def bench_cache(root: Path, cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the cache once, then time ``--cache-epochs`` epochs of ready batches."""
    import warnings

    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.data.prepare import prepare

    # All images in one split, as the baseline reads all files.
    options = DataOptions(
        image_size=args.image_size,
        cache_dir=cache_dir,
        workers=args.workers,
        fractions=(1.0, 0.0, 0.0),
    )
    source = DataSource("imagefolder", root)
    started = time.perf_counter()
    prepare(source, options, progress=False)
    prepare_seconds = time.perf_counter() - started
    arrays = load_dataset(source, options)
    split = arrays.split("train")
    try:
        import cxr_tune.engine  # noqa: F401

        batches, engine_used = _cache_batches_engine, True
    except ImportError:
        batches, engine_used = _cache_batches_inline, False
    epochs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap -> tensor
        for _ in range(args.cache_epochs):
            started = time.perf_counter()
            seen = sum(x.shape[0] for x, _ in batches(split, arrays.task, args.batch_size))
            epochs.append(time.perf_counter() - started)
    return {
        **_rates(seen, epochs),
        "prepare_seconds": prepare_seconds,
        "first_epoch_images_per_s": seen / epochs[0],
        "engine_used": engine_used,
    }


def machine() -> dict[str, object]:
    import PIL
    import torch
    import torchvision

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="cxr_bench_") as tmp:
        root = Path(tmp) / "pngs"
        print(f"generating {args.images} PNGs of {args.size}x{args.size} ...", file=sys.stderr)
        generate_seconds = generate(root, args.images, args.size, args.workers)
        print("baseline: torchvision ImageFolder + DataLoader ...", file=sys.stderr)
        baseline = bench_baseline(root, args)
        print("cache: prepare once, then memory-mapped batches ...", file=sys.stderr)
        cache = bench_cache(root, Path(tmp) / "cache", args)
    ratio = float(cache["images_per_s"]) / baseline["images_per_s"]
    median_ratio = float(cache["median_images_per_s"]) / baseline["median_images_per_s"]
    result = {
        "benchmark": "data_plane",
        "machine": machine(),
        "params": {
            "images": args.images,
            "png_size": args.size,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "dataloader_workers": args.workers,
            "cache_epochs": args.cache_epochs,
            "baseline_epochs": args.baseline_epochs,
        },
        "generate_seconds": generate_seconds,
        "baseline": baseline,
        "cache": cache,
        "speedup": ratio,
        "speedup_median_epoch": median_ratio,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    print_table(result)
    if not args.smoke_test:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def print_table(result: dict[str, Any]) -> None:
    base, cache, p = result["baseline"], result["cache"], result["params"]
    print(
        f"{p['images']} PNGs {p['png_size']}px -> batches of {p['batch_size']} at "
        f"{p['image_size']}px on {result['machine']['cpu_count']} CPUs"
    )
    print(f"{'pipeline (images/s)':<44}{'best epoch':>12}{'median':>10}")
    for name, row in (
        ("torchvision ImageFolder + PIL + transforms", base),
        ("cxr_tune cache (memmap -> uint8 tensors)", cache),
    ):
        print(f"{name:<44}{row['images_per_s']:>12.1f}{row['median_images_per_s']:>10.1f}")
    print(
        f"speedup: {result['speedup']:.1f}x best epoch, {result['speedup_median_epoch']:.1f}x "
        f"median epoch (one-off prepare: {cache['prepare_seconds']:.1f} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
