"""Benchmark: precision and recall of the near-duplicate audit on real radiographs.

The audit (``cxr_tune.data.dedup``) calls two images near-duplicates when the cosine similarity
of their signatures reaches a threshold. This measures, on real chest radiographs of public
collections with patient ids, at a range of thresholds:

- recall on true copies: each image copied the ways augmented datasets copy (flips, rotations
  with black or repeated-edge corners, crops, shifts, JPEG re-encoding, down-scaling, and a
  combination), as Dataset 2's 912 augmented covid images are; recall is the share of copies
  the audit groups with their original (any chain of pairs at the threshold, as its
  single-linkage clustering joins them), with the recall of single (original, copy) pairs;
- false pairs: pairs of different radiographs of different patients at or above the threshold,
  counted among the originals and among originals and copies together, with their rate per
  pair and what that rate means for a dataset of Dataset 2's and Dataset 1's size. The
  collections file some radiographs twice under two patient ids; pairs looked at by eye and
  found to be one radiograph (``dedup_calibration_review.json``, by file digest) are duplicates,
  not false pairs;
- same-patient pairs (follow-ups, other views of one patient): a category of their own, not
  duplicates and not errors; the share the audit joins is reported.

Originals larger than ``--max-side`` (1024 px, about Dataset 2's size) are shrunk first; copies
are made from, and compared with, that version. Images go through the cache's own decoder
(``cxr_tune.data.images.decode_bytes``) and the audit's own pair search
(``near_duplicate_pairs``), so the figures are the audit's.

Collections (public GitHub repositories, fetched outside the repository; no image and no
patient id of them is written to the committed summary, only counts):

- ``ml-workgroup+covid-19-image-repository``: ``data.csv`` (patient_id, image_id), ``png/``;
- ``agchung+Figure1-COVID-chestxray-dataset``: ``images/<patientid>[a-z].jpg|png``;
- ``agchung+Actualmed-COVID-chestxray-dataset``: ``metadata.csv`` (patientid, imagename),
  ``images/`` (only the images present are used);
- ``armiro+COVID-CXNet``: ``metadata.csv`` (filename, patient_id), ``images/`` (rows with a
  patient id only).

    python scripts/bench/dedup_calibration.py --root /work/data/calib   # all four, minutes
    python scripts/bench/dedup_calibration.py --smoke-test              # generated, seconds
    python scripts/bench/dedup_calibration.py --table-from RESULT.json --margin 0   # choose again
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cxr_tune.data import dedup  # noqa: E402
from cxr_tune.data.images import decode_bytes  # noqa: E402
from scripts.bench.common import machine_description  # noqa: E402

RESULTS = REPO / "scripts" / "bench" / "results" / "dedup_calibration.json"
RUNS = REPO / "scripts" / "bench" / "runs" / "dedup_calibration"
REVIEW = REPO / "scripts" / "bench" / "results" / "dedup_calibration_review.json"
THRESHOLDS: tuple[float, ...] = (
    0.95,
    0.96,
    0.97,
    0.975,
    0.98,
    0.985,
    0.99,
    0.993,
    0.995,
    0.997,
    0.998,
    0.999,
)
# Pairs below this are not collected (none of the thresholds looks lower).
FLOOR = 0.9
# Dataset 2 (covid19_pneumonia_normal) and Dataset 1 (covid19_radiography) sizes.
SCALES = {"dataset2_6939": 6939, "dataset1_21165": 21165}


@dataclass(frozen=True)
class Radiograph:
    """One original radiograph: its bytes, collection, patient, and the digest of its file."""

    data: bytes
    collection: str
    patient: str
    name: str
    digest: str = ""


# --- collections ----------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return list(csv.DictReader(io.StringIO(text)))


def _hannover(root: Path) -> Iterable[tuple[Path, str]]:
    for row in _read_csv(root / "data.csv"):
        yield root / "png" / f"{row['image_id'].strip()}.png", row["patient_id"].strip()


def _figure1(root: Path) -> Iterable[tuple[Path, str]]:
    for path in sorted((root / "images").iterdir()):
        yield path, re.sub(r"[a-z]$", "", path.stem)


def _actualmed(root: Path) -> Iterable[tuple[Path, str]]:
    for row in _read_csv(root / "metadata.csv"):
        yield root / "images" / row["imagename"].strip(), row["patientid"].strip()


def _cxnet(root: Path) -> Iterable[tuple[Path, str]]:
    for row in _read_csv(root / "metadata.csv"):
        if row.get("patient_id", "").strip():
            yield root / "images" / row["filename"].strip(), row["patient_id"].strip()


COLLECTIONS: dict[str, Callable[[Path], Iterable[tuple[Path, str]]]] = {
    "ml-workgroup+covid-19-image-repository": _hannover,
    "agchung+Figure1-COVID-chestxray-dataset": _figure1,
    "agchung+Actualmed-COVID-chestxray-dataset": _actualmed,
    "armiro+COVID-CXNet": _cxnet,
}


def load_collections(root: Path, limit: int | None) -> list[Radiograph]:
    """Every present image with a patient id, from the collections found under ``root``."""
    images: list[Radiograph] = []
    for name, reader in COLLECTIONS.items():
        folder = root / name
        if not folder.is_dir():
            print(f"collection {name}: not found under {root}, skipped", file=sys.stderr)
            continue
        seen: set[Path] = set()
        for path, patient in reader(folder):
            if path in seen or not path.is_file() or not patient:
                continue
            seen.add(path)
            data = path.read_bytes()
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            images.append(Radiograph(data, name, f"{name}/{patient}", path.name, digest))
    return images[:limit] if limit else images


def generated_images(n: int) -> list[Radiograph]:
    """Smoke test: phantom radiographs, one patient each (PNG bytes)."""
    from cxr_tune.data.phantom import PhantomSpec, generate

    data = generate(PhantomSpec(n_images=n, image_size=128, seed=7))
    out = []
    for i, (pixels, group) in enumerate(zip(data.images, data.groups, strict=True)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(Radiograph(buffer.getvalue(), "phantom", str(group), f"{i}.png"))
    return out


# --- copies ---------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    # Fast PNG compression: the bytes decode to the same pixels, only the file is larger.
    image.save(buffer, format=fmt, quality=quality, compress_level=1)
    return buffer.getvalue()


def _crop(image: Image.Image, share: float, anchor: str = "center") -> Image.Image:
    w, h = image.size
    cw, ch = int(w * share), int(h * share)
    left = {"center": (w - cw) // 2, "corner": 0}[anchor]
    top = {"center": (h - ch) // 2, "corner": 0}[anchor]
    return image.crop((left, top, left + cw, top + ch))


def _shift(image: Image.Image, share: float) -> Image.Image:
    w, h = image.size
    return image.transform(image.size, Image.Transform.AFFINE, (1, 0, -share * w, 0, 1, -share * h))


def _rotate_edge(image: Image.Image, degrees: float) -> Image.Image:
    """Rotate with the border pixels repeated into the corners (Keras' ``fill_mode="nearest"``)
    instead of black (PIL's and torchvision's default)."""
    pad = max(image.size) // 2
    padded = Image.fromarray(np.pad(np.asarray(image), pad, mode="edge"))
    turned = padded.rotate(degrees, resample=Image.Resampling.BILINEAR)
    return turned.crop((pad, pad, pad + image.width, pad + image.height))


TRANSFORMS: dict[str, Callable[[Image.Image], bytes]] = {
    "flip_horizontal": lambda im: _encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "flip_vertical": lambda im: _encode(im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)),
    "rotate_5": lambda im: _encode(im.rotate(5, resample=Image.Resampling.BILINEAR)),
    "rotate_10": lambda im: _encode(im.rotate(-10, resample=Image.Resampling.BILINEAR)),
    "rotate_15": lambda im: _encode(im.rotate(15, resample=Image.Resampling.BILINEAR)),
    "rotate_5_edge": lambda im: _encode(_rotate_edge(im, 5)),
    "rotate_10_edge": lambda im: _encode(_rotate_edge(im, -10)),
    "rotate_180": lambda im: _encode(im.transpose(Image.Transpose.ROTATE_180)),
    "crop_center_90": lambda im: _encode(_crop(im, 0.9)),
    "crop_center_80": lambda im: _encode(_crop(im, 0.8)),
    "crop_corner_90": lambda im: _encode(_crop(im, 0.9, "corner")),
    "shift_10": lambda im: _encode(_shift(im, 0.1)),
    "jpeg_q60": lambda im: _encode(im, "JPEG", 60),
    "half_size_jpeg_q75": lambda im: _encode(
        im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR), "JPEG", 75
    ),
    "flip_rotate_5_crop_90_jpeg": lambda im: _encode(
        _crop(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(5), 0.9), "JPEG", 80
    ),
}


def _gray(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("L")


def shrink(image: Radiograph, side: int) -> Radiograph:
    """The image with its longer side at most ``side`` (PNG), as Dataset 2's ~1024 px images:
    copies are made from, and compared with, this version."""
    gray = _gray(image.data)
    if max(gray.size) <= side:
        return image
    scale = side / max(gray.size)
    small = gray.resize(
        (max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
        Image.Resampling.BILINEAR,
    )
    return Radiograph(_encode(small), image.collection, image.patient, image.name, image.digest)


# --- measuring ------------------------------------------------------------------------------


def thumbs_of(blobs: Iterable[bytes], size: int) -> tuple[np.ndarray, list[int]]:
    """Thumbnails as the cache makes them, and the indices of the blobs that decoded."""
    thumbs, kept = [], []
    for i, blob in enumerate(blobs):
        decoded = decode_bytes(blob, size)
        if decoded.thumb is not None:
            thumbs.append(decoded.thumb)
            kept.append(i)
    return np.stack(thumbs), kept


def pair_similarities(thumbs: np.ndarray) -> dict[tuple[int, int], float]:
    """(i, j) -> similarity for every pair at or above FLOOR, from the audit's own search."""
    pairs, sims = dedup.near_duplicate_pairs(thumbs, FLOOR)
    return {(int(a), int(b)): float(s) for (a, b), s in zip(pairs, sims, strict=True)}


@dataclass
class Family:
    """One original and its copies, searched together: which transform each member is, and
    the similarities of its pairs at or above FLOOR."""

    members: list[str]  # "" for the original, else the transform
    found: dict[tuple[int, int], float]


def families(originals: list[Radiograph], size: int) -> list[Family]:
    """Each original searched together with its own copies (true duplicates)."""
    names = list(TRANSFORMS)
    out = []
    for image in originals:
        gray = _gray(image.data)
        blobs = [image.data] + [TRANSFORMS[t](gray) for t in names]
        thumbs, kept = thumbs_of(blobs, size)
        if not kept or kept[0] != 0:
            continue
        out.append(
            Family(["" if i == 0 else names[i - 1] for i in kept], pair_similarities(thumbs))
        )
    return out


def positives(fams: list[Family]) -> dict[str, list[float]]:
    """Similarity of every (original, copy) pair per transform, and of (copy, copy) pairs;
    a pair below FLOOR counts as FLOOR - 1 (missed at every threshold)."""
    out: dict[str, list[float]] = {name: [] for name in TRANSFORMS}
    out["copy_copy"] = []
    for fam in fams:
        for a in range(len(fam.members)):
            for b in range(a + 1, len(fam.members)):
                kind = fam.members[b] if a == 0 else "copy_copy"
                out[kind].append(fam.found.get((a, b), FLOOR - 1.0))
    return out


def grouped_share(fams: list[Family], threshold: float) -> dict[str, float]:
    """Share of copies that end up in their original's group at ``threshold`` (single linkage,
    as the audit clusters: any chain of pairs at or above it), per transform and overall."""
    hit: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for fam in fams:
        sets = dedup.UnionFind(len(fam.members))
        for (a, b), sim in fam.found.items():
            if sim >= threshold:
                sets.union(a, b)
        root = sets.find(0)
        for i, name in enumerate(fam.members[1:], start=1):
            total[name] += 1
            hit[name] += sets.find(i) == root
    shares = {name: hit[name] / total[name] for name in total}
    shares["all"] = sum(hit.values()) / max(sum(total.values()), 1)
    return shares


@dataclass
class Pool:
    """Originals and copies searched all against all, labelled by source image and patient."""

    source: list[int]
    patient: list[str]
    is_copy: list[bool]
    found: dict[tuple[int, int], float]
    names: list[str]


def reviewed_sources(originals: list[Radiograph], review: Path | None) -> list[int]:
    """Each original's source radiograph: itself, unless the review found it to be one
    radiograph with another (filed twice under two patient ids); then the two share one."""
    sets = dedup.UnionFind(len(originals))
    if review is not None and review.is_file():
        index: dict[str, list[int]] = {}
        for k, image in enumerate(originals):
            index.setdefault(image.digest, []).append(k)
        for a, b, _ in json.loads(review.read_text())["same_radiograph"]:
            members = index.get(a, []) + index.get(b, [])
            for i in members[1:]:
                sets.union(members[0], i)
    return [int(r) for r in sets.roots()]


def pool(
    originals: list[Radiograph], size: int, copies: tuple[str, ...], sources: list[int]
) -> Pool:
    """Every original plus the chosen copies of every original, searched all against all."""
    blobs, source, patient, is_copy, names = [], [], [], [], []
    for k, image in enumerate(originals):
        gray = _gray(image.data) if copies else None
        for name in ("", *copies):
            blobs.append(image.data if not name else TRANSFORMS[name](gray))
            source.append(sources[k])
            patient.append(image.patient)
            is_copy.append(bool(name))
            names.append(f"{image.collection}/{image.name}" + (f" ({name})" if name else ""))
    thumbs, kept = thumbs_of(blobs, size)
    found = pair_similarities(thumbs)
    return Pool(
        [source[i] for i in kept],
        [patient[i] for i in kept],
        [is_copy[i] for i in kept],
        found,
        [names[i] for i in kept],
    )


def pair_listing(p: Pool, k: int = 40) -> dict[str, list[list[Any]]]:
    """The most similar different-patient and same-patient pairs, by file (per-run output, to
    look at by eye; never committed)."""
    listing: dict[str, list[list[Any]]] = {"different": [], "same_patient": []}
    for (a, b), sim in sorted(p.found.items(), key=lambda kv: -kv[1]):
        if p.source[a] == p.source[b]:
            continue
        kind = "same_patient" if p.patient[a] == p.patient[b] else "different"
        if len(listing[kind]) < k:
            listing[kind].append([round(sim, 5), p.names[a], p.names[b]])
    return listing


def pair_counts(p: Pool) -> dict[str, Any]:
    """Pairs per category (all, and at or above each threshold)."""
    n = len(p.source)
    per_patient = Counter(p.patient)
    per_source = Counter(p.source)
    same_source = sum(c * (c - 1) // 2 for c in per_source.values())
    same_patient = sum(c * (c - 1) // 2 for c in per_patient.values()) - same_source
    total = n * (n - 1) // 2
    hits: dict[str, list[float]] = {"duplicate": [], "same_patient": [], "different": []}
    for (a, b), sim in p.found.items():
        if p.source[a] == p.source[b]:
            hits["duplicate"].append(sim)
        elif p.patient[a] == p.patient[b]:
            hits["same_patient"].append(sim)
        else:
            hits["different"].append(sim)
    return {
        "images": n,
        "pairs": {
            "duplicate": same_source,
            "same_patient": same_patient,
            "different": total - same_source - same_patient,
        },
        "hits": hits,
    }


def threshold_table(
    fams: list[Family], originals_only: dict[str, Any], mixed: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per threshold: copies grouped with their original (overall and per transform),
    pair recall, false pairs, same-patient pairs, precision."""
    rows = []
    positive = positives(fams)
    copy_pairs = np.concatenate([np.asarray(v) for k, v in positive.items() if k != "copy_copy"])
    for t in THRESHOLDS:
        grouped = grouped_share(fams, t)
        row: dict[str, Any] = {
            "threshold": t,
            "recall": grouped["all"],
            "recall_by_transform": {k: v for k, v in grouped.items() if k != "all"},
            "pair_recall": float(np.mean(copy_pairs >= t)),
            "pair_recall_copy_copy": float(np.mean(np.asarray(positive["copy_copy"]) >= t)),
        }
        for label, counts in (("originals", originals_only), ("mixed", mixed)):
            different = sum(s >= t for s in counts["hits"]["different"])
            same_patient = sum(s >= t for s in counts["hits"]["same_patient"])
            duplicate = sum(s >= t for s in counts["hits"]["duplicate"])
            rate = different / max(counts["pairs"]["different"], 1)
            row[label] = {
                "false_pairs": different,
                "false_pair_rate": rate,
                "same_patient_pairs": same_patient,
                "same_patient_share": same_patient / max(counts["pairs"]["same_patient"], 1),
                "duplicate_pairs": duplicate,
                "duplicate_recall": duplicate / max(counts["pairs"]["duplicate"], 1),
                "precision": duplicate / (duplicate + different) if duplicate + different else None,
                "expected_false_pairs": {k: rate * v * (v - 1) / 2 for k, v in SCALES.items()},
            }
        rows.append(row)
    return rows


def choose(rows: list[dict[str, Any]], margin: float) -> dict[str, Any]:
    """The default: the lowest threshold at which no pair of different radiographs of different
    patients is joined here (in either search), raised by ``margin``.

    The margin stands for collections more alike than these: one hospital, one age group, one
    processing (a public 4-class chest X-ray folder, looked at by eye, had distinct patients'
    pairs up to 0.99). Here the most alike distinct pairs come from one hospital's films too.
    """
    clean = [
        r for r in rows if r["originals"]["false_pairs"] == 0 and r["mixed"]["false_pairs"] == 0
    ]
    lowest = min(r["threshold"] for r in clean) if clean else max(r["threshold"] for r in rows)
    candidates = [r for r in rows if r["threshold"] >= lowest + margin - 1e-9]
    best = min(candidates, key=lambda r: r["threshold"]) if candidates else rows[-1]
    at_lowest = next(r for r in rows if r["threshold"] == lowest)
    return {
        "threshold": best["threshold"],
        "lowest_clean_threshold": lowest,
        "margin": margin,
        "rule": "lowest threshold with no different-patient pair joined (originals, and "
        "originals with copies), plus the margin",
        "recall": best["recall"],
        "recall_at_lowest_clean": at_lowest["recall"],
        "previous_default": dedup.DEFAULT_SIMILARITY,
    }


def top_false(counts: dict[str, Any], k: int = 15) -> list[float]:
    return sorted(counts["hits"]["different"], reverse=True)[:k]


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'threshold':>9} {'recall':>7} {'rot15':>6} {'crop80':>6} {'half':>6} "
        f"{'false(orig)':>11} {'false(mix)':>10} {'prec(mix)':>9} {'same-pt':>8} "
        f"{'exp.false D2':>12} {'exp.false D1':>12}"
    )
    print(head)
    for r in rows:
        rb, mix = r["recall_by_transform"], r["mixed"]
        prec = "-" if mix["precision"] is None else f"{mix['precision']:.4f}"
        print(
            f"{r['threshold']:>9} {r['recall']:>7.3f} {rb.get('rotate_15', 0):>6.2f} "
            f"{rb.get('crop_center_80', 0):>6.2f} {rb.get('half_size_jpeg_q75', 0):>6.2f} "
            f"{r['originals']['false_pairs']:>11} {mix['false_pairs']:>10} {prec:>9} "
            f"{r['originals']['same_patient_share']:>8.3f} "
            f"{mix['expected_false_pairs']['dataset2_6939']:>12.1f} "
            f"{mix['expected_false_pairs']['dataset1_21165']:>12.1f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="folder holding the fetched collections")
    parser.add_argument("--size", type=int, default=224, help="cache image size (thumbs)")
    parser.add_argument("--limit", type=int, help="use only the first N originals")
    parser.add_argument(
        "--max-side", type=int, default=1024, help="shrink larger originals to this side first"
    )
    parser.add_argument(
        "--mixed-copies",
        nargs="*",
        default=["flip_horizontal", "rotate_10", "crop_center_90", "half_size_jpeg_q75"],
        help="copies of every original added to the all-against-all search",
    )
    parser.add_argument(
        "--review",
        type=Path,
        default=REVIEW,
        help="pairs looked at by eye: those found to be one radiograph count as duplicates",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.005,
        help="added to the lowest clean threshold, for sets more alike than these (0.005)",
    )
    parser.add_argument(
        "--table-from", type=Path, help="a saved summary: print its table, choose again, rewrite"
    )
    parser.add_argument("--smoke-test", action="store_true", help="generated images, no JSON")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.smoke_test and args.root is None and args.table_from is None:
        parser.error("--root is required (or --smoke-test, or --table-from)")
    return args


def rechoose(path: Path, margin: float) -> int:
    """Print a saved summary's table and choose again (another margin), without re-measuring."""
    summary = json.loads(path.read_text())
    print_table(summary["table"])
    summary["chosen"] = choose(summary["table"], margin)
    print(f"chosen: {summary['chosen']}")
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from is not None:
        return rechoose(args.table_from, args.margin)
    started = time.perf_counter()
    originals = generated_images(24) if args.smoke_test else load_collections(args.root, args.limit)
    originals = [shrink(o, args.max_side) for o in originals]
    collections = Counter(o.collection for o in originals)
    patients = {c: len({o.patient for o in originals if o.collection == c}) for c in collections}
    print(
        f"{len(originals)} images of {sum(patients.values())} patients: "
        + ", ".join(f"{c} {n} ({patients[c]} patients)" for c, n in collections.items())
    )
    fams = families(originals, args.size)
    sources = reviewed_sources(originals, None if args.smoke_test else args.review)
    relabelled = len(originals) - len(set(sources))
    print(f"review: {relabelled} originals are one radiograph with another (filed twice)")
    only_pool = pool(originals, args.size, (), sources)
    mixed_pool = pool(originals, args.size, tuple(args.mixed_copies), sources)
    only, mixed = pair_counts(only_pool), pair_counts(mixed_pool)
    rows = threshold_table(fams, only, mixed)
    print_table(rows)
    chosen = choose(rows, args.margin)
    print(
        f"chosen: {chosen['threshold']} (lowest clean threshold {chosen['lowest_clean_threshold']}"
        f" + margin {chosen['margin']}); recall {chosen['recall']:.3f} "
        f"({chosen['recall_at_lowest_clean']:.3f} at the lowest clean threshold); "
        f"previous default {chosen['previous_default']}"
    )
    print(f"highest different-patient similarities (originals): {top_false(only, 8)}")
    summary = {
        "benchmark": "dedup_calibration",
        "machine": machine_description(),
        "seconds": round(time.perf_counter() - started, 1),
        "image_size": args.size,
        "max_side": args.max_side,
        "collections": {
            c: {"images": collections[c], "patients": patients[c]} for c in collections
        },
        "transforms": list(TRANSFORMS),
        "mixed_copies": list(args.mixed_copies),
        "families": len(fams),
        "review": {
            "file": str(args.review.relative_to(REPO)) if args.review.is_relative_to(REPO) else "",
            "originals_joined_as_one_radiograph": relabelled,
        },
        "recall_definition": "share of copies grouped with their original (single linkage "
        "within the original and its copies)",
        "originals_pairs": only["pairs"],
        "mixed_images": mixed["images"],
        "mixed_pairs": mixed["pairs"],
        "top_false_similarities": {"originals": top_false(only), "mixed": top_false(mixed)},
        "table": rows,
        "chosen": chosen,
    }
    if args.smoke_test:
        return 0
    RUNS.mkdir(parents=True, exist_ok=True)
    run_file = RUNS / f"pairs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    listing = {"originals": pair_listing(only_pool), "mixed": pair_listing(mixed_pool)}
    run_file.write_text(json.dumps(listing, indent=1) + "\n")
    print(f"wrote {run_file} (the closest pairs by file, to look at)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
