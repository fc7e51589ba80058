"""Benchmark: predicting a folder of 1024 px PNGs on the CPU against decoding them alone.

The images are synthetic radiographs (``synthetic_cxr.py``: body, lungs, heart, texture and
grain) written once as 8-bit PNGs to ``scripts/bench/runs/predict_throughput/`` (ignored).
Both modes read the same files through the model package's streaming reader
(``cxr_tune.bundle.reader.read_images``: ``decode_file`` in worker processes, batches handed
back in order while the workers decode the next ones):

- decode: the reader alone (each batch is received and dropped);
- predict: the reader feeding the TorchScript inference module (``models/model.ts`` of a
  randomly initialised AlexNet at 224 px, 4 classes: speed does not depend on the weights),
  which returns every output ``cxr-tune predict`` needs (probabilities raw and calibrated,
  penultimate features).

Each setting (decoding processes, batch size, PyTorch threads in the predicting process) is
timed for both modes, interleaved, ``--repeats`` times; the fastest of each is kept (the least
disturbed on a shared machine). The ratio is predict time over decode time of the same
setting, and of the best of each; the issue's goal is 1.25 or less. Each pass starts its own
pool of decoding processes (forked from the reader's fork server, started once before timing),
as every ``predict`` does.

    python scripts/bench/predict_throughput.py            # 256 images, the grid of settings
    python scripts/bench/predict_throughput.py --quick    # 24 images, two settings (seconds)

Imports neither Ray nor Optuna.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import REPO, RESULTS, format_table, load_average, machine_description, write_result  # noqa: E402
from synthetic_cxr import follow_up, patient_anatomy  # noqa: E402

from cxr_tune.bundle.reader import list_inputs, read_images  # noqa: E402

# PyTorch and the model are imported inside main(): every decoding process imports this script
# again (multiprocessing runs the caller's main module in its workers), and must stay light, as
# the command line's own main module is.

RUNS = REPO / "scripts" / "bench" / "runs" / "predict_throughput"
GOAL_RATIO = 1.25
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


@dataclass
class Row:
    """One setting's best times (seconds) for both modes."""

    workers: int
    batch_size: int
    threads: int
    images: int
    decode_s: float
    predict_s: float
    decode_images_per_s: float
    predict_images_per_s: float
    ratio: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=None, help="PNG files (default 256)")
    parser.add_argument("--side", type=int, default=1024, help="side of the PNG files (px)")
    parser.add_argument("--image-size", type=int, default=224, help="the model's input side")
    parser.add_argument("--arch", default="alexnet")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="decoding processes")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="PyTorch threads while predicting"
    )
    parser.add_argument("--chunk", type=int, default=None, help="files per worker task")
    parser.add_argument("--repeats", type=int, default=None, help="timings per row (default 2)")
    parser.add_argument("--quick", action="store_true", help="24 images, two settings")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where images and model go")
    parser.add_argument("--output", type=Path, default=RESULTS / "predict_throughput.json")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if args.quick:
        args.images, args.repeats = args.images or 24, args.repeats or 1
        args.workers = args.workers or [max(1, cores - 1)]
        args.batch_sizes = args.batch_sizes or [8, 16]
        args.threads = args.threads or [cores]
    args.images, args.repeats = args.images or 256, args.repeats or 2
    args.workers = args.workers or sorted({1, max(1, cores - 1), cores})
    args.batch_sizes = args.batch_sizes or [16, 32]
    args.threads = args.threads or sorted({1, cores})
    return args


def write_images(folder: Path, n: int, side: int) -> list[Path]:
    """``n`` synthetic radiographs as 8-bit PNGs (written once; reused when present)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"cxr_{k:05d}.png" for k in range(n)]
    for k, path in enumerate(paths):
        if not path.is_file():
            pixels = follow_up(patient_anatomy(k // 2, side), k)
            Image.fromarray(pixels, mode="L").save(path, format="PNG")
    return paths


def time_mode(
    mode: str,
    entries: list[Any],
    module: Any,
    *,
    image_size: int,
    workers: int,
    batch_size: int,
    chunk: int,
) -> tuple[float, int]:
    """Seconds to read (and, for ``predict``, run the module on) every file; images done."""
    import torch

    done = 0
    started = time.perf_counter()
    with torch.no_grad():
        for batch in read_images(
            entries, image_size, batch_size=batch_size, workers=workers, chunk=chunk
        ):
            if mode == "predict" and len(batch.images):
                outputs = module.outputs(torch.from_numpy(batch.images))
                outputs["probabilities"].numpy()
            done += len(batch.images)
    return time.perf_counter() - started, done


def main(argv: list[str] | None = None) -> int:
    import torch

    from cxr_tune.bundle.inference import build_inference_module, load_torchscript, save_torchscript
    from cxr_tune.models import create_model

    args = parse_args(argv)
    paths = write_images(args.runs / f"png_{args.side}", args.images, args.side)
    megabytes = sum(p.stat().st_size for p in paths) / 2**20
    torch.manual_seed(0)
    model = create_model(args.arch, num_classes=len(CLASSES)).eval()
    module = build_inference_module(
        model, args.arch, image_size=args.image_size, task="multiclass", classes=CLASSES
    )
    model_path = save_torchscript(module, args.runs / f"{args.arch}_{args.image_size}.ts")
    scripted, _ = load_torchscript(model_path)
    entries = list_inputs(paths)
    chunk_default = 8
    # Untimed: start the reader's fork server (it imports this script, hence PyTorch, once);
    # every timed pass then starts its own pool of workers forked from it.
    for _ in read_images(entries[:2], args.image_size, batch_size=2, workers=1):
        pass
    rows: list[Row] = []
    settings = list(product(args.workers, args.batch_sizes, args.threads))
    best: dict[tuple[int, int, int], dict[str, float]] = {s: {} for s in settings}
    for _ in range(args.repeats):
        for workers, batch_size, threads in settings:
            torch.set_num_threads(threads)
            for mode in ("decode", "predict"):
                seconds, done = time_mode(
                    mode, entries, scripted, image_size=args.image_size, workers=workers,
                    batch_size=batch_size, chunk=args.chunk or min(chunk_default, batch_size),
                )  # fmt: skip
                assert done == len(paths), (done, len(paths))
                key = best[(workers, batch_size, threads)]
                key[mode] = min(key.get(mode, float("inf")), seconds)
    for (workers, batch_size, threads), times in best.items():
        rows.append(
            Row(
                workers=workers,
                batch_size=batch_size,
                threads=threads,
                images=len(paths),
                decode_s=times["decode"],
                predict_s=times["predict"],
                decode_images_per_s=len(paths) / times["decode"],
                predict_images_per_s=len(paths) / times["predict"],
                ratio=times["predict"] / times["decode"],
            )
        )
    fastest_decode = min(rows, key=lambda r: r.decode_s)
    fastest_predict = min(rows, key=lambda r: r.predict_s)
    best_ratio = fastest_predict.predict_s / fastest_decode.decode_s
    print(
        format_table(
            ["workers", "batch", "threads", "decode img/s", "predict img/s", "ratio"],
            [
                [
                    r.workers,
                    r.batch_size,
                    r.threads,
                    r.decode_images_per_s,
                    r.predict_images_per_s,
                    r.ratio,
                ]
                for r in rows
            ],
        )  # fmt: skip
    )
    print(
        f"\nbest decode {fastest_decode.decode_images_per_s:.1f} img/s (workers "
        f"{fastest_decode.workers}, batch {fastest_decode.batch_size}); best predict "
        f"{fastest_predict.predict_images_per_s:.1f} img/s (workers {fastest_predict.workers}, "
        f"batch {fastest_predict.batch_size}, threads {fastest_predict.threads}); "
        f"ratio {best_ratio:.2f} (goal <= {GOAL_RATIO})"
    )
    result = {
        "benchmark": "predict_throughput",
        "machine": machine_description(),
        "params": {
            "images": len(paths),
            "side": args.side,
            "png_megabytes": round(megabytes, 1),
            "image_size": args.image_size,
            "arch": args.arch,
            "repeats": args.repeats,
            "chunk": args.chunk,
            "quick": args.quick,
        },
        "rows": [asdict(r) for r in rows],
        "best": {
            "decode": asdict(fastest_decode),
            "predict": asdict(fastest_predict),
            "ratio": best_ratio,
            "goal_ratio": GOAL_RATIO,
            "goal_met": best_ratio <= GOAL_RATIO,
        },
        "load_average_after": load_average(),
    }
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
