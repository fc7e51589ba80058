"""Benchmark: training and evaluation images/s and peak memory per architecture, a naive fp32
loop against cxr_tune's loop, on one device, in one run.

Both loops train the same torchvision model (1-channel input, 4 classes as Dataset 1) from the
same seed on the same uint8 images (random pixels: throughput does not depend on content) with
Adam, lr 1e-4, at the paper's batch size and image size, with a random horizontal flip:

- naive: what a plain PyTorch script does. A ``DataLoader`` over a ``TensorDataset`` of uint8
  images, each batch converted to normalised float32 on the host and copied to the device, fp32
  NCHW, PyTorch's default Adam, ``loss.item()`` every step, cuDNN autotuning off; evaluation
  in batches of the training batch size with predictions copied back per batch.
- cxr_tune: ``cxr_tune.engine``. The split moved to the device once as uint8, batches selected
  and normalised there, bf16 autocast + channels_last + cuDNN autotuning on a GPU, fused Adam,
  losses accumulated on the device; evaluation by ``engine.evaluate`` with ``eval_batch_size``.
  With ``--compile`` (CUDA only) a third row runs the same loop on an in-place compiled model.

Warm-up steps (cuDNN autotuning, allocator growth, compilation) are run and not timed; inputs
smaller than 224 px are timed over proportionally more steps; ``--repeats N`` measures every
row N times, interleaved, and keeps the fastest (the least disturbed on a shared machine). Peak
memory is the rise during the training measurement: ``torch.cuda.max_memory_allocated`` on a
GPU, the peak resident set size (VmHWM, reset through /proc/self/clear_refs) on a CPU. From the
images/s at 224 px the script projects the time of the paper's full grid on Dataset 1 sizes
(21,165 images: 70% trained and 15% evaluated per epoch, 50 epochs, 3 architectures, one after
another on this device).

    python scripts/bench/train_throughput.py                       # the device present, real run
    python scripts/bench/train_throughput.py --image-size 224 64   # also at 64 px
    python scripts/bench/train_throughput.py --device cuda --compile
    python scripts/bench/train_throughput.py --quick --output /tmp/t.json   # seconds

Imports neither Ray nor Optuna: it runs on a GPU machine that has only PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
from common import RESULTS, format_table, load_average, machine_description, write_result  # noqa: E402

from cxr_tune.data.types import SplitArrays  # noqa: E402
from cxr_tune.engine import (  # noqa: E402
    GRAY_MEAN,
    GRAY_STD,
    eval_batch_size,
    evaluate,
    loop_settings,
    place_model,
    to_device,
    train_one_epoch,
)
from cxr_tune.models import create_model  # noqa: E402
from cxr_tune.optim import create_optimizer  # noqa: E402

ARCHS = ("alexnet", "vgg11", "resnet50")
NUM_CLASSES = 4  # Dataset 1: COVID, Lung_Opacity, Normal, Viral Pneumonia
PAPER = {"image_size": 224, "batch_size": 32, "lr": 1e-4, "epochs": 50}
# Dataset 1 (21,165 images) under cxr_tune's 70/15/15 split: trained and evaluated per epoch.
DATASET1 = {"images": 21_165, "train": 14_815, "val": 3_175}
GRID_TARGET_S = 3600.0  # the target for the projected grid on one H100
RESNET50_TARGET_SPEEDUP = 2.0  # the target on a GPU


@dataclass
class Measurement:
    """One loop's figures for one architecture and image size."""

    arch: str
    image_size: int
    loop: str
    train_images: int
    train_seconds: float
    train_images_per_s: float
    eval_images: int
    eval_seconds: float
    eval_images_per_s: float
    peak_memory_mib: float
    load_average: list[float] | None
    error: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        help="input sides to measure (default: 224; on a CPU 224 and 64)",
    )
    parser.add_argument("--batch-size", type=int, default=PAPER["batch_size"])
    parser.add_argument("--lr", type=float, default=PAPER["lr"])
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (GPU 10, CPU 1)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps at 224 px (GPU 100, CPU 3); smaller inputs get proportionally more, "
        "up to 8x, so that every row is timed for about as long",
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        default=None,
        help="images evaluated at 224 px (default: steps x batch), scaled as --steps",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure every row this many times, interleaved, and keep the fastest (the one "
        "least slowed by other work on a shared machine)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="precision of cxr_tune's loop (the naive loop is always fp32): auto is bf16 on a "
        "GPU and fp32 on a CPU",
    )
    parser.add_argument("--compile", action="store_true", help="add a compiled row (CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="tiny run in seconds (smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS / "train_throughput.json")
    return parser.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but PyTorch sees no CUDA device.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fill_defaults(args: argparse.Namespace, device: torch.device) -> None:
    """Device-dependent defaults: a CPU trains VGG11 at 224 px at a few images/s."""
    on_gpu = device.type == "cuda"
    if args.quick:
        args.image_size, args.batch_size = args.image_size or [64], 8
        args.warmup, args.steps = args.warmup or 1, args.steps or 2
        args.repeats = 1
    args.image_size = args.image_size or ([224] if on_gpu else [224, 64])
    args.warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    args.steps = args.steps or (100 if on_gpu else 3)
    args.eval_images = args.eval_images or args.steps * args.batch_size
    if args.compile and not on_gpu:
        print("--compile is ignored on a CPU (cxr_tune compiles on CUDA only)", file=sys.stderr)
        args.compile = False


def step_scale(size: int, quick: bool) -> int:
    """How many times more steps than at 224 px to time at ``size`` (cheaper steps)."""
    if quick or size >= PAPER["image_size"]:
        return 1
    return max(1, min(8, round((PAPER["image_size"] / size) ** 2)))


def make_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 grayscale images and Dataset 1-like labels, on the host."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


# --- memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Measure the peak memory rise inside the block, in MiB, into the yielded dict."""
    out: dict[str, float] = {}
    release_memory(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        yield out
        torch.cuda.synchronize()
        out["mib"] = (torch.cuda.max_memory_allocated() - start) / 2**20
        return
    import resource

    start_kib = _status_kib("VmRSS") if _reset_peak_rss() else None
    if start_kib is None:  # no /proc: the process-lifetime peak, which only ever rises
        start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield out
    peak_kib = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["mib"] = max(0, peak_kib - start_kib) / 1024


def release_memory(device: torch.device) -> None:
    """Free what the previous measurement left: unreferenced tensors, cached GPU blocks, and
    (glibc) heap pages the allocator keeps, which would hide the next measurement's rise."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # Not glibc (no malloc_trim): the peak RSS rise may then read low.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the naive loop ---------------------------------------------------------------------------


def pytorch_defaults() -> None:
    """PyTorch's out-of-the-box backend flags (cxr_tune's loop changes some of them)."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True


def host_batch(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised, randomly flipped float32 (B, 1, H, W), on the host."""
    x = images_u8.float().div(255.0).sub(GRAY_MEAN).div(GRAY_STD).unsqueeze(1)
    flip = torch.rand(x.shape[0]) < 0.5
    x[flip] = x[flip].flip(-1)
    return x


def naive_train(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace
) -> tuple[int, float]:
    """Train as a plain script does; returns (timed images, seconds) after the warm-up."""
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(
        TensorDataset(images, labels), batch_size=args.batch_size, shuffle=True, drop_last=True
    )
    model.train()
    seen, started, running = 0, time.perf_counter(), 0.0
    for step, (xb, yb) in enumerate(loader):
        if step == args.warmup:
            seen, started = 0, time.perf_counter()
        x, y = host_batch(xb).to(device), yb.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item()  # the per-step host sync a plain script has
        seen += len(yb)
    return seen, time.perf_counter() - started


@torch.no_grad()
def naive_eval(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> tuple[int, float]:
    """Predict in training-size batches, each copied to the device and its predictions back."""
    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size)
    for xb, _ in loader:  # warm-up: one pass over the first batch
        model(host_batch(xb).to(device)).argmax(1).cpu()
        break
    started, correct = time.perf_counter(), 0
    for xb, yb in loader:
        x = xb.float().div(255.0).sub(GRAY_MEAN).div(GRAY_STD).unsqueeze(1).to(device)
        correct += int((model(x).argmax(1).cpu() == yb).sum())
    return len(images), time.perf_counter() - started


# --- cxr_tune's loop --------------------------------------------------------------------------


def fast_train(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[int, float]:
    """Train with ``engine.train_one_epoch``: one untimed epoch of the warm-up steps, then one
    timed epoch of the measured steps."""
    settings = loop_settings(device, args.precision)
    optimizer = create_optimizer("adam", model.parameters(), lr=args.lr)
    warm_n = args.warmup * args.batch_size
    warm = to_device(
        SplitArrays(images[:warm_n].numpy(), labels[:warm_n].numpy()), device, "multiclass"
    )
    timed = to_device(
        SplitArrays(images[warm_n:].numpy(), labels[warm_n:].numpy()), device, "multiclass"
    )

    def epoch(data: Any, seed: int) -> int:
        stats = train_one_epoch(
            model,
            optimizer,
            data,
            task="multiclass",
            batch_size=args.batch_size,
            settings=settings,
            augment="paper",
            generator=torch.Generator().manual_seed(seed),
            device_generator=torch.Generator(device=device).manual_seed(seed),
        )
        return stats.images

    if warm_n:
        epoch(warm, 0)
    synchronize(device)
    started = time.perf_counter()
    seen = epoch(timed, 1)  # ends by reading the loss once: the device has finished
    return seen, time.perf_counter() - started


def fast_eval(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    image_size: int,
    precision: str,
) -> tuple[int, float]:
    """Evaluate with ``engine.evaluate`` at ``eval_batch_size`` (metrics included)."""
    settings = loop_settings(device, precision)
    data = to_device(SplitArrays(images.numpy(), labels.numpy()), device, "multiclass")
    batch = eval_batch_size(device, image_size)
    warm = to_device(
        SplitArrays(images[:batch].numpy(), labels[:batch].numpy()), device, "multiclass"
    )
    evaluate(
        model, warm, task="multiclass", num_classes=NUM_CLASSES, settings=settings, batch_size=batch
    )
    synchronize(device)
    started = time.perf_counter()
    evaluate(
        model, data, task="multiclass", num_classes=NUM_CLASSES, settings=settings, batch_size=batch
    )
    return len(images), time.perf_counter() - started


# --- one measurement --------------------------------------------------------------------------


def build_model(arch: str, device: torch.device, loop: str, precision: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=NUM_CLASSES)
    if loop == "naive":
        return model.to(device)
    settings = loop_settings(device, precision)
    return place_model(model, settings, compile=loop == "cxr_tune+compile")


def measure(
    arch: str, size: int, loop: str, device: torch.device, args: argparse.Namespace
) -> Measurement:
    """Train then evaluate ``arch`` at ``size`` px with one loop; errors become a row."""
    if loop == "naive":
        pytorch_defaults()
    load = load_average()
    try:
        figures = run_loop(arch, size, loop, device, args)
    except Exception as exc:  # e.g. out of memory or no compiler: record it, measure the rest
        return failed(arch, size, loop, load, exc)
    finally:
        release_memory(device)  # the model is gone with run_loop's frame
    train_n, train_s, eval_n, eval_s, peak_mib = figures
    return Measurement(
        arch=arch,
        image_size=size,
        loop=loop,
        train_images=train_n,
        train_seconds=train_s,
        train_images_per_s=train_n / train_s,
        eval_images=eval_n,
        eval_seconds=eval_s,
        eval_images_per_s=eval_n / eval_s,
        peak_memory_mib=peak_mib,
        load_average=load,
    )


def run_loop(
    arch: str, size: int, loop: str, device: torch.device, args: argparse.Namespace
) -> tuple[int, float, int, float, float]:
    """(train images, train s, eval images, eval s, peak MiB while training) of one loop."""
    scale = step_scale(size, args.quick)
    n_train = (args.warmup + args.steps * scale) * args.batch_size
    images, labels = make_images(n_train, size, seed=0)
    eval_images, eval_labels = make_images(args.eval_images * scale, size, seed=1)
    with peak_memory(device) as memory:
        model = build_model(arch, device, loop, args.precision)
        if loop == "naive":
            train_n, train_s = naive_train(model, images, labels, args)
        else:
            train_n, train_s = fast_train(model, images, labels, args, device)
    if loop == "naive":
        eval_n, eval_s = naive_eval(model, eval_images, eval_labels, args.batch_size)
    else:
        eval_n, eval_s = fast_eval(model, eval_images, eval_labels, device, size, args.precision)
    return train_n, train_s, eval_n, eval_s, memory["mib"]


def failed(
    arch: str, size: int, loop: str, load: list[float] | None, exc: Exception
) -> Measurement:
    message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    print(f"{arch} {size}px {loop}: failed ({message})", file=sys.stderr)
    nan = float("nan")
    return Measurement(arch, size, loop, 0, nan, nan, 0, nan, nan, nan, load, error=message)


# --- summary ----------------------------------------------------------------------------------


def fastest(rows: list[Measurement]) -> list[Measurement]:
    """The fastest training measurement of every (architecture, size, loop), in first-seen order."""
    best: dict[tuple[str, int, str], Measurement] = {}
    for row in rows:
        key = (row.arch, row.image_size, row.loop)
        kept = best.get(key)
        if kept is None or (
            not row.error and (kept.error or row.train_images_per_s > kept.train_images_per_s)
        ):
            best[key] = row
    return list(best.values())


def speedups(rows: list[Measurement]) -> dict[str, dict[str, float]]:
    """cxr_tune / naive training images/s, per image size and architecture."""
    by_key = {(r.arch, r.image_size, r.loop): r for r in rows}
    out: dict[str, dict[str, float]] = {}
    for (arch, size, loop), row in by_key.items():
        naive = by_key.get((arch, size, "naive"))
        if loop == "naive" or naive is None or row.error or naive.error:
            continue
        key = str(size) if loop == "cxr_tune" else f"{size}+compile"
        out.setdefault(key, {})[arch] = row.train_images_per_s / naive.train_images_per_s
    return out


def project_grid(rows: list[Measurement], batch_size: int) -> dict[str, Any] | None:
    """Seconds for the paper's grid on Dataset 1 sizes, per loop, from the 224 px rows."""
    paper_rows = [r for r in rows if r.image_size == PAPER["image_size"] and not r.error]
    if not paper_rows:
        return None
    loops: dict[str, dict[str, float]] = {}
    for row in paper_rows:
        epoch_s = (
            DATASET1["train"] / row.train_images_per_s + DATASET1["val"] / row.eval_images_per_s
        )
        loops.setdefault(row.loop, {})[row.arch] = PAPER["epochs"] * epoch_s
    return {
        "dataset": {**DATASET1, "epochs": PAPER["epochs"], "batch_size": batch_size},
        "seconds": {loop: {**per, "total": sum(per.values())} for loop, per in loops.items()},
        "complete": {loop: sorted(per) == sorted(ARCHS) for loop, per in loops.items()},
        "note": "architectures one after another on this device, measured images/s",
    }


def targets(
    speedup: dict[str, dict[str, float]], projection: dict[str, Any] | None
) -> dict[str, Any]:
    """The issue's GPU targets, checked against this run's figures."""
    resnet = speedup.get(str(PAPER["image_size"]), {}).get("resnet50")
    grid = (projection or {}).get("seconds", {}).get("cxr_tune", {}).get("total")
    return {
        "applies_to": "an NVIDIA GPU (the grid target: one H100); on a CPU for reference only",
        "resnet50_speedup_224": resnet,
        "resnet50_speedup_target": RESNET50_TARGET_SPEEDUP,
        "resnet50_speedup_met": None if resnet is None else resnet >= RESNET50_TARGET_SPEEDUP,
        "grid_seconds_cxr_tune": grid,
        "grid_target_seconds": GRID_TARGET_S,
        "grid_target_met": None if grid is None else grid < GRID_TARGET_S,
    }


def print_report(result: dict[str, Any]) -> None:
    rows = [Measurement(**r) for r in result["results"]]
    device = result["device"]
    speed = result["speedups"]
    print(
        f"training throughput on {device} ({result['machine']['cpu_count']} CPUs, "
        f"{result['machine']['torch_threads']} torch threads), batch {result['params']['batch_size']}, "
        f"Adam lr {result['params']['lr']:g}, cxr_tune precision {result['params']['precision']}"
    )
    table = []
    for r in rows:
        key = str(r.image_size) if r.loop != "cxr_tune+compile" else f"{r.image_size}+compile"
        ratio = speed.get(key, {}).get(r.arch) if r.loop != "naive" else None
        table.append(
            [
                f"{r.arch} {r.image_size}px",
                r.loop,
                r.train_images_per_s,
                ratio,
                r.eval_images_per_s,
                r.peak_memory_mib,
                r.error or "",
            ]
        )
    headers = ["model", "loop", "train img/s", "speedup", "eval img/s", "peak MiB", "note"]
    print(format_table(headers, table))
    projection = result.get("projection")
    if projection:
        d = projection["dataset"]
        print(
            f"\nprojected paper grid on {device}: Dataset 1 sizes ({d['images']:,} images; "
            f"{d['train']:,} trained + {d['val']:,} evaluated per epoch), {d['epochs']} epochs, "
            "3 architectures one after another:"
        )
        for loop, per in projection["seconds"].items():
            parts = ", ".join(f"{a} {s / 3600:.2f} h" for a, s in per.items() if a != "total")
            note = "" if projection["complete"][loop] else " (not every architecture measured)"
            print(f"  {loop:<17} {per['total'] / 3600:8.2f} h  ({parts}){note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fill_defaults(args, device)
    loops = ["naive", "cxr_tune"] + (["cxr_tune+compile"] if args.compile else [])
    measured = []
    for repeat in range(args.repeats):
        for size in args.image_size:
            for arch in args.archs:
                for loop in loops:
                    print(f"[{repeat + 1}] {arch} {size}px {loop} ...", file=sys.stderr, flush=True)
                    measured.append(measure(arch, size, loop, device, args))
    rows = fastest(measured)
    speedup = speedups(rows)
    projection = project_grid(rows, args.batch_size)
    result = {
        "benchmark": "train_throughput",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "machine": machine_description(),
        "params": {k: v for k, v in vars(args).items() if k != "output"} | {"loops": loops},
        "results": [asdict(r) for r in rows],
        "all_results": [asdict(r) for r in measured] if args.repeats > 1 else None,
        "speedups": speedup,
        "projection": projection,
        "targets": targets(speedup, projection),
        "load_average_at_end": load_average(),
    }
    print_report(result)
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
