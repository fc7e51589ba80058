"""Benchmark: ``prepare`` and the near-duplicate audit on NIH- and CheXpert-sized datasets.

Generates synthetic copies of the NIH ChestX-ray14 layout (112,120 PNGs, 30,805 patients) and
the CheXpert layout (224,316 JPEGs, 65,240 patients; a quarter lateral) at 256 px, with
chest-like images and planted near-duplicates filed under other patients (see
``synthetic_cxr.py``), into an ignored folder. Then, for each layout:

- ``python -m cxr_tune.data prepare`` on 25%, 50% and 100% of it (patients in order; the
  smaller layouts are hard links into the full one), each in a fresh cache, timing it and
  sampling the resident memory of its whole process tree (the prepare and its decoding
  processes) every 0.2 s; the growth per image is the slope between 25% and 100%;
- the audit's recall against the exact audit (every pair compared) on the first
  ``--recall-images`` images, with both methods timed in the same run;
- at full size, the planted near-duplicates the audit should find (those at or above the
  threshold, checked pair by pair) and whether the cache keeps each with its original.

And, on the CPU, training throughput with the data device-resident against streamed a batch at
a time from host memory (``engine.StreamedSplit``), side by side in one run, as a ratio
(``--throughput-only`` measures just that and adds it to an existing result file).

Generated images and caches are deleted at the end (``--keep`` keeps them).

    nice -n 10 python scripts/bench/scale.py                     # hours on 2 busy cores
    python scripts/bench/scale.py --smoke-test                   # a minute, nothing kept
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic_cxr as synth  # noqa: E402
from common import REPO, RESULTS, format_table, machine_description, write_result  # noqa: E402

RUNS = REPO / "scripts" / "bench" / "runs" / "scale"
LAYOUTS = {
    # name: (images, patients, bytes per generated image (for the disk check))
    "nih_chestxray14": (112_120, 30_805, 60_000),
    "chexpert": (224_316, 65_240, 20_000),
}
# Peak resident memory allowed: 1.5 GB plus 4 KB per image.
BOUND_BASE = 1.5e9
BOUND_PER_IMAGE = 4096


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--scales", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--size", type=int, default=256, help="side of the generated images")
    parser.add_argument("--image-size", type=int, default=224, help="cache image side")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--recall-images", type=int, default=20_000)
    parser.add_argument("--copy-share", type=float, default=0.01, help="planted copies")
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="shrink both layouts (images and patients)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=RUNS, help="ignored folder for the data")
    parser.add_argument("--keep", action="store_true", help="keep generated images and caches")
    parser.add_argument("--smoke-test", action="store_true", help="tiny layouts, no JSON")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="measure streaming vs resident training throughput only; add it to --output",
    )
    parser.add_argument(
        "--no-all-views",
        dest="all_views",
        action="store_false",
        help="skip the CheXpert prepare with lateral views too (224,316 images)",
    )
    parser.add_argument("--throughput-images", type=int, default=2048)
    parser.add_argument("--throughput-epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    args.sizes = {
        name: (int(images * args.fraction), int(patients * args.fraction), per_image)
        for name, (images, patients, per_image) in LAYOUTS.items()
    }
    if args.smoke_test:
        args.sizes = {"nih_chestxray14": (600, 170, 60_000), "chexpert": (800, 230, 20_000)}
        args.size, args.image_size, args.recall_images = 64, 32, 300
        args.throughput_images, args.throughput_epochs = 128, 1
    return args


# --- generating -------------------------------------------------------------------------------


def _render_batch(task: tuple[str, list[synth.Item], list[str], int, int]) -> int:
    root, items, relative, size, seed = task
    return synth.write_images(Path(root), items, relative, size, seed)


def generate(
    layout: str, root: Path, items: list[synth.Item], patients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Write the layout's images and tables under ``root``; returns sizes and time."""
    started = time.perf_counter()
    relative = relative_paths(layout, items, patients)
    base = root / synth.CHEXPERT_FOLDER if layout == "chexpert" else root
    tasks = [
        (str(base), items[a:b], relative[a:b], args.size, args.seed)
        for a, b in synth.batches(len(items), 500)
    ]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        written = sum(pool.map(_render_batch, tasks))
    write_tables(layout, base, items, patients, args.seed)
    return {"seconds": round(time.perf_counter() - started, 1), "bytes": written}


def relative_paths(layout: str, items: list[synth.Item], patients: int) -> list[str]:
    if layout == "chexpert":
        return [synth.chexpert_relative(item, patients) for item in items]
    return [synth.nih_relative(item) for item in items]


def write_tables(
    layout: str, base: Path, items: list[synth.Item], patients: int, seed: int
) -> None:
    if layout == "chexpert":
        synth.write_chexpert_tables(base, items, patients, seed)
    else:
        synth.write_nih_tables(base, items, seed)


def subset(
    layout: str,
    full: Path,
    target: Path,
    items: list[synth.Item],
    patients: int,
    share: float,
    seed: int,
) -> list[synth.Item]:
    """The first ``share`` of patients as a layout of its own (hard links), for one scale;
    its tables hold the same rows as the full layout's for these images."""
    cutoff = int(round(patients * share))
    chosen = [item for item in items if item.patient < cutoff]
    relative = relative_paths(layout, chosen, patients)
    sub = synth.CHEXPERT_FOLDER if layout == "chexpert" else ""
    synth.link_subset(full / sub, target / sub, relative)
    write_tables(layout, target / sub if sub else target, chosen, patients, seed)
    return chosen


# --- measuring ----------------------------------------------------------------------------


def tree_memory(pid: int) -> dict[int, tuple[int, int]]:
    """Resident and peak resident bytes (VmRSS, VmHWM) of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, stack = {}, [pid]
    while stack:
        current = stack.pop()
        found[current] = _memory(current)
        stack.extend(children.get(current, []))
    return found


def _memory(pid: int) -> tuple[int, int]:
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key = line.split(":", 1)[0] + ":"
                if key in values:
                    values[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return values["VmRSS:"], values["VmHWM:"]


def run_prepare(
    root: Path, cache: Path, args: argparse.Namespace, log: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``python -m cxr_tune.data prepare`` in a child, with its memory sampled every 0.2 s:
    the sum over its process tree (the prepare and its decoding processes), and each
    process's own peak (the kernel's high-water mark, which no sampling gap can miss)."""
    command = [
        sys.executable, "-m", "cxr_tune.data", "prepare", str(root),
        "--image-size", str(args.image_size), "--cache-dir", str(cache),
        "--workers", str(args.workers), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        peaks = {"tree": 0, "main": 0}
        high: dict[int, int] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                tree = tree_memory(child.pid)
                peaks["tree"] = max(peaks["tree"], sum(rss for rss, _ in tree.values()))
                peaks["main"] = max(peaks["main"], tree.get(child.pid, (0, 0))[0])
                for pid, (_, hwm) in tree.items():
                    high[pid] = max(high.get(pid, 0), hwm)
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"prepare failed: see {log}")
    folder = next(p for p in cache.iterdir() if not p.name.startswith("."))
    meta = json.loads((folder / "meta.json").read_text())
    dedup = json.loads((folder / "split.json").read_text())["near_duplicates"]
    workers = [v for pid, v in high.items() if pid != child.pid]
    return {
        "images": sum(meta["sizes"].values()),
        "seconds": round(seconds, 1),
        "decode_seconds": meta["decode_seconds"],
        "audit_seconds": meta.get("audit_seconds"),
        "audit_method": dedup.get("method"),
        "audit": dedup,
        "peak_rss_tree_bytes": peaks["tree"],
        "peak_rss_main_bytes": peaks["main"],
        "hwm_main_bytes": high.get(child.pid, 0),
        "hwm_largest_worker_bytes": max(workers, default=0),
        "max_rss_wait4_bytes": usage.ru_maxrss * 1024,
        "cache_folder": str(folder),
        "sizes": meta["sizes"],
        "skipped_total": meta["skipped_total"],
    }


def thumbnails(paths: list[str], workers: int) -> np.ndarray:
    """The audit's 32 px thumbnails of ``paths`` (decoded as prepare decodes them)."""
    from cxr_tune.data.images import decode_file

    with ProcessPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(decode_file, paths, [64] * len(paths), chunksize=64))
    return np.stack([d.thumb for d in decoded])


def measure_recall(paths: list[str], groups: np.ndarray, workers: int) -> dict[str, Any]:
    """Index vs exact audit on the same thumbnails, side by side."""
    from cxr_tune.data.dedup import audit_pairs, pair_recall

    thumbs = thumbnails(paths, workers)
    exact = audit_pairs(thumbs, groups, method="exact")
    index = audit_pairs(thumbs, groups, method="index")
    return {
        "images": len(paths),
        "exact_pairs": int(len(exact.pairs)),
        "index_pairs": int(len(index.pairs)),
        "recall": pair_recall(index.pairs, exact.pairs),
        "exact_seconds": round(exact.seconds, 1),
        "index_seconds": round(index.seconds, 1),
        "speedup": round(exact.seconds / max(index.seconds, 1e-9), 1),
        "index_stats": index.stats,
    }


def planted_check(
    items: list[synth.Item], relative: list[str], base: Path, cache_folder: Path, workers: int
) -> dict[str, Any]:
    """Planted copies at or above the threshold (checked pair by pair): kept with their
    original in one group of the cache?"""
    from cxr_tune.data.cache import read_manifest
    from cxr_tune.data.dedup import DEFAULT_SIMILARITY, variant_signatures

    where = {item.index: k for k, item in enumerate(items)}
    planted = [
        (where[item.copy_of.index], k)
        for k, item in enumerate(items)
        if item.copy_of is not None and item.copy_of.index in where
    ]
    files = sorted({k for pair in planted for k in pair})
    thumbs = thumbnails([str(base / relative[k]) for k in files], workers)
    position = {k: n for n, k in enumerate(files)}
    variants = variant_signatures(thumbs)
    from cxr_tune.data.dedup import _flip_signs

    signs = _flip_signs()
    above = []
    for a, b in planted:
        pa, pb = position[a], position[b]
        best = max(float(((variants[0, pa] * s) @ variants[:, pb].T).max()) for s in signs)
        best = max(best, *(float(((variants[0, pb] * s) @ variants[:, pa].T).max()) for s in signs))
        if best >= DEFAULT_SIMILARITY:
            above.append((a, b))
    from collections import Counter

    from cxr_tune.data.dedup import DEFAULT_MAX_CLUSTER

    rows = read_manifest(cache_folder)
    group = {row["path"]: row["group"] for row in rows}
    sizes = Counter(group.values())
    # Only pairs whose two images are both in the cache (a view filtered out is not).
    cached = [(a, b) for a, b in above if relative[a] in group and relative[b] in group]
    apart = [(a, b) for a, b in cached if group[relative[a]] != group[relative[b]]]
    # A merge is refused when the two groups together would exceed the cluster cap.
    capped = sum(
        1
        for a, b in apart
        if sizes[group[relative[a]]] + sizes[group[relative[b]]] > DEFAULT_MAX_CLUSTER
    )
    together = len(cached) - len(apart)
    return {
        "planted": len(planted),
        "at_or_above_threshold": len(above),
        "both_in_cache": len(cached),
        "kept_together": together,
        "share_kept_together": together / len(cached) if cached else 1.0,
        "apart_with_groups_over_the_cap": capped,
        "apart_otherwise": len(apart) - capped,
    }


# --- streaming vs resident ------------------------------------------------------------------


def measure_throughput(images: int, epochs: int, image_size: int = 64) -> dict[str, Any]:
    """Training images/s on the CPU with the data resident and streamed, alternating epochs
    (so that other work on the machine weighs on both alike); best and median epoch."""
    import torch
    from torch import nn

    from cxr_tune.data.types import SplitArrays
    from cxr_tune.engine import loop_settings, place_split, train_one_epoch
    from cxr_tune.models import create_model

    rng = np.random.default_rng(0)
    split = SplitArrays(
        images=rng.integers(0, 256, size=(images, image_size, image_size), dtype=np.uint8),
        labels=rng.integers(0, 4, size=images).astype(np.int64),
    )
    settings = loop_settings(torch.device("cpu"))
    rows = []
    for arch in ("alexnet", "tiny"):
        torch.manual_seed(0)
        if arch == "tiny":
            model: nn.Module = nn.Sequential(
                nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                nn.Linear(128, 4),
            )  # fmt: skip
        else:
            model = create_model(arch, num_classes=4, pretrained=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        times: dict[str, list[float]] = {"resident": [], "streaming": []}
        # Epoch -1 of each path warms up (allocator, threads, caches) and is not timed.
        for epoch in range(-1, epochs):
            for path in ("resident", "streaming") if epoch % 2 == 0 else ("streaming", "resident"):
                data = place_split(split, torch.device("cpu"), "multiclass", path)
                started = time.perf_counter()
                train_one_epoch(
                    model, optimizer, data, task="multiclass", batch_size=64,
                    settings=settings, augment="paper",
                    generator=torch.Generator().manual_seed(epoch + 1),
                )  # fmt: skip
                if epoch >= 0:
                    times[path].append(images / (time.perf_counter() - started))
        best = {k: max(v) for k, v in times.items()}
        median = {k: float(np.median(v)) for k, v in times.items()}
        rows.append(
            {
                "model": arch,
                "images": images,
                "image_size": image_size,
                "epochs_each": epochs,
                "images_per_s": times,
                "ratio_best": best["streaming"] / best["resident"],
                "ratio_median": median["streaming"] / median["resident"],
            }
        )
    return {"device": "cpu", "batch_size": 64, "rows": rows}


# --- the run --------------------------------------------------------------------------------


def check_disk(folder: Path, needed: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(
            f"scale.py: {free / 1e9:.1f} GB free under {folder}, but this run needs about "
            f"{needed / 1e9:.1f} GB; free some space or lower --scales."
        )


def bench_layout(layout: str, args: argparse.Namespace) -> dict[str, Any]:
    images, patients, per_image = args.sizes[layout]
    work = args.work / layout
    shutil.rmtree(work, ignore_errors=True)
    cache_bytes = images * (args.image_size**2 + 1100) * 2  # work folder + the cache itself
    check_disk(args.work, images * per_image + cache_bytes + 2e9)
    items = synth.plan_items(images, patients, args.seed, args.copy_share)
    print(f"{layout}: generating {images} images of {patients} patients", file=sys.stderr)
    full = work / "full"
    generated = generate(layout, full, items, patients, args)
    relative = relative_paths(layout, items, patients)
    runs = []
    for share in sorted(args.scales):
        root = full if share >= 1.0 else work / f"p{int(share * 100)}"
        if share < 1.0:
            subset(layout, full, root, items, patients, share, args.seed)
        cache = work / f"cache-{int(share * 100)}"
        print(f"{layout}: prepare {share:.0%}", file=sys.stderr)
        run = run_prepare(root, cache, args, work / f"prepare-{int(share * 100)}.log")
        run["share"] = share
        if share >= 1.0:
            base = full / synth.CHEXPERT_FOLDER if layout == "chexpert" else full
            run["planted"] = planted_check(
                items, relative, base, Path(run["cache_folder"]), args.workers
            )
        runs.append(run)
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
            if share < 1.0:
                shutil.rmtree(root, ignore_errors=True)
    if layout == "chexpert" and args.all_views:
        # Every image, lateral views too (the default keeps frontal views only).
        print(f"{layout}: prepare 100% with every view", file=sys.stderr)
        cache = work / "cache-all-views"
        views = ("--views", "Frontal,Lateral")
        run = run_prepare(full, cache, args, work / "prepare-all-views.log", views)
        run["share"] = 1.0
        run["views"] = "Frontal,Lateral"
        runs.append(run)
        shutil.rmtree(cache, ignore_errors=True)
    base = full / synth.CHEXPERT_FOLDER if layout == "chexpert" else full
    first = items[: args.recall_images]
    print(f"{layout}: recall on {len(first)} images", file=sys.stderr)
    recall = measure_recall(
        [str(base / rel) for rel in relative[: len(first)]],
        np.array([item.patient for item in first]),
        args.workers,
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "layout": layout,
        "images": images,
        "patients": patients,
        "generated": generated,
        "prepare": runs,
        "growth_bytes_per_image": growth(runs),
        "recall": recall,
    }


def growth(runs: list[dict[str, Any]]) -> float | None:
    """Peak-memory slope per image between the smallest and the largest run (by images)."""
    if len(runs) < 2:
        return None
    low = min(runs, key=lambda r: r["images"])
    high = max(runs, key=lambda r: r["images"])
    span = high["images"] - low["images"]
    return (high["peak_rss_tree_bytes"] - low["peak_rss_tree_bytes"]) / span if span else None


def summary_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for result in results:
        for run in result["prepare"]:
            bound = BOUND_BASE + BOUND_PER_IMAGE * run["images"]
            rows.append(
                [
                    result["layout"],
                    f"{run['share']:.0%}" + (" all views" if run.get("views") else ""),
                    run["images"],
                    run["seconds"],
                    run["decode_seconds"],
                    run["audit_seconds"],
                    run["peak_rss_tree_bytes"] / 1e9,
                    run.get("hwm_main_bytes", run["peak_rss_main_bytes"]) / 1e9,
                    run.get("hwm_largest_worker_bytes", 0) / 1e9,
                    bound / 1e9,
                    "yes" if run["peak_rss_tree_bytes"] < bound else "NO",
                ]
            )
    return rows


def print_throughput(throughput: dict[str, Any]) -> None:
    for row in throughput["rows"]:
        print(
            f"throughput ({row['model']}, {row['image_size']} px, CPU): streaming / resident = "
            f"{row['ratio_best']:.2f} (best epochs), {row['ratio_median']:.2f} (median)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.throughput_only:
        throughput = measure_throughput(args.throughput_images, args.throughput_epochs)
        print_throughput(throughput)
        if not args.smoke_test:
            previous = json.loads(args.output.read_text()) if args.output.exists() else {}
            previous["throughput"] = {"machine": machine_description(), **throughput}
            write_result(args.output, previous)
        return 0
    if args.smoke_test:
        args.work = Path(os.environ.get("TMPDIR", "/tmp")) / f"cxr-scale-smoke-{os.getpid()}"
    results = [bench_layout(layout, args) for layout in args.layouts]
    throughput = measure_throughput(args.throughput_images, args.throughput_epochs)
    headers = [
        "layout", "share", "images", "prepare s", "decode s", "audit s",
        "tree peak GB", "main peak GB", "worker peak GB", "bound GB", "under",
    ]  # fmt: skip
    print(format_table(headers, summary_rows(results)))
    for result in results:
        rec = result["recall"]
        slope = result["growth_bytes_per_image"]
        print(
            f"{result['layout']}: growth {slope:,.0f} B/image between 25% and 100%; "
            f"audit recall {rec['recall']:.4f} on {rec['images']} images "
            f"(index {rec['index_seconds']} s, exact {rec['exact_seconds']} s)"
            if slope is not None
            else f"{result['layout']}: recall {rec['recall']:.4f}"
        )
    print_throughput(throughput)
    if args.smoke_test:
        shutil.rmtree(args.work, ignore_errors=True)
        return 0
    settings = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "sizes"
    }
    for result in results:
        # Each layout keeps the machine and settings it was measured with.
        result["machine"] = machine_description()
        result["settings"] = settings
    # A run of some layouts replaces those and keeps the others of an earlier run.
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    ran = {r["layout"] for r in results}
    kept = [r for r in previous.get("results", []) if r["layout"] not in ran]
    write_result(
        args.output,
        {
            "benchmark": "scale",
            "bound": {"base_bytes": BOUND_BASE, "per_image_bytes": BOUND_PER_IMAGE},
            "results": sorted(kept + results, key=lambda r: r["images"]),
            "throughput": {"machine": machine_description(), **throughput},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
