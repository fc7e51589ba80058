"""Synthetic chest-X-ray-like images and the NIH ChestX-ray14 and CheXpert layouts around them.

Used by ``scale.py``. Every patient gets an anatomy of their own (body outline, two lung fields,
heart shadow, soft texture); their images are follow-ups of it (shifted, re-exposed, new noise).
Distinct patients look alike but not alike enough to be near-duplicates (measured: the 99.99th
percentile of their signature similarity is about 0.96, below the audit's 0.985). A share of the
images are *planted near-duplicates*: an image of one patient filed again under another patient,
flipped, cropped, rotated, re-exposed or unchanged, as happens in the public sets.

Everything is a function of (seed, image index), so a layout can be generated in parallel and
again, byte for byte.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

NIH_FINDINGS = (
    ("Infiltration", 0.18),
    ("Effusion", 0.12),
    ("Atelectasis", 0.10),
    ("Nodule", 0.06),
    ("Mass", 0.05),
    ("Pneumothorax", 0.05),
    ("Consolidation", 0.04),
    ("Pleural_Thickening", 0.03),
    ("Cardiomegaly", 0.025),
    ("Emphysema", 0.022),
    ("Edema", 0.02),
    ("Fibrosis", 0.015),
    ("Pneumonia", 0.013),
    ("Hernia", 0.002),
)
CHEXPERT_OBSERVATIONS = (
    ("No Finding", 0.09, 0.0),
    ("Enlarged Cardiomediastinum", 0.05, 0.05),
    ("Cardiomegaly", 0.12, 0.04),
    ("Lung Opacity", 0.47, 0.02),
    ("Lung Lesion", 0.04, 0.01),
    ("Edema", 0.23, 0.06),
    ("Consolidation", 0.07, 0.12),
    ("Pneumonia", 0.03, 0.08),
    ("Atelectasis", 0.15, 0.15),
    ("Pneumothorax", 0.09, 0.01),
    ("Pleural Effusion", 0.38, 0.05),
    ("Pleural Other", 0.02, 0.01),
    ("Fracture", 0.04, 0.003),
    ("Support Devices", 0.52, 0.005),
)
COPY_KINDS = ("same", "hflip", "vflip", "crop", "rot3", "exposure", "offcrop")


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return y, x


def _soft_ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, sharp: float
) -> np.ndarray:
    inside = 1 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2
    return 0.5 * (1 + np.tanh(np.clip(inside * sharp, -30, 30) / 2))


@lru_cache(maxsize=16)
def patient_anatomy(seed: int, size: int) -> np.ndarray:
    """One patient's noiseless anatomy, float32 (size, size) around 0..1 (cached: a patient's
    images are rendered one after another). Do not modify the result."""
    rng = np.random.default_rng([seed, 1])
    y, x = _grid(size)
    cx = 0.5 + rng.normal(0, 0.02)
    image = 0.55 * _soft_ellipse(x, y, cx, 0.55, rng.uniform(0.36, 0.46), 0.6, 12)
    for side in (-1, 1):
        lx, ly = cx + side * rng.uniform(0.14, 0.2), rng.uniform(0.42, 0.5)
        rx, ry = rng.uniform(0.08, 0.13), rng.uniform(0.2, 0.3)
        image -= rng.uniform(0.25, 0.4) * _soft_ellipse(x, y, lx, ly, rx, ry, 8)
    hx, hy = cx + rng.uniform(0.02, 0.07), rng.uniform(0.58, 0.66)
    hrx, hry = rng.uniform(0.08, 0.13), rng.uniform(0.07, 0.11)
    image += rng.uniform(0.15, 0.3) * np.exp(-(((x - hx) / hrx) ** 2 + ((y - hy) / hry) ** 2))
    for _ in range(3):
        fx, fy = rng.integers(1, 5, size=2)
        phase = rng.uniform(0, 6.3)
        image += rng.uniform(0.03, 0.08) * np.cos(2 * np.pi * (fx * x + fy * y) + phase)
    for _ in range(6):
        bx, by, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.04, 0.15)
        image += rng.uniform(-0.15, 0.15) * np.exp(
            -((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2)
        )
    image = image.astype(np.float32)
    image.flags.writeable = False
    return image


def follow_up(anatomy: np.ndarray, seed: int) -> np.ndarray:
    """One image of the patient: shifted a few pixels, re-exposed, with fresh noise (uint8)."""
    rng = np.random.default_rng([seed, 2])
    dx, dy = (int(v) for v in rng.integers(-6, 7, size=2))
    image = np.roll(anatomy, (dy, dx), axis=(0, 1)) * rng.uniform(0.9, 1.1) + rng.uniform(
        -0.05, 0.05
    )
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * 0.02
    return np.clip((image + 0.3) * 200, 0, 255).astype(np.uint8)


def planted_copy(image: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A near-duplicate of ``image``: unchanged, flipped, cropped, rotated or re-exposed."""
    rng = np.random.default_rng([seed, 3])
    size = image.shape[0]
    if kind == "same":
        return image.copy()
    if kind == "hflip":
        return image[:, ::-1].copy()
    if kind == "vflip":
        return image[::-1].copy()
    if kind == "exposure":
        scaled = image.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)
        return np.clip(scaled, 0, 255).astype(np.uint8)
    picture = Image.fromarray(image)
    if kind == "crop":
        m = int(size * 0.1)
        picture = picture.crop((m, m, size - m, size - m))
    elif kind == "offcrop":
        m = int(size * 0.1)
        picture = picture.crop((m, 0, size, size - m))
    elif kind == "rot3":
        picture = picture.rotate(float(rng.choice([-3.0, 3.0])), Image.Resampling.BILINEAR)
    else:
        raise ValueError(kind)
    return np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class Item:
    """One image of a synthetic layout: who, which follow-up, and whether it is a copy."""

    index: int
    patient: int
    follow_up: int
    copy_of: Item | None = None  # the original image, for a planted copy
    kind: str = ""


def plan_items(n_images: int, n_patients: int, seed: int, copy_share: float) -> list[Item]:
    """Images per patient (at least one each), in patient order, with planted copies.

    A planted copy is an extra image of a patient that shows another patient's image.
    """
    rng = np.random.default_rng([seed, 0])
    extra = rng.multinomial(n_images - n_patients, rng.dirichlet(np.full(n_patients, 0.6)))
    counts = extra + 1
    items: list[Item] = []
    originals: list[Item] = []
    copies = rng.random(n_images) < copy_share
    for patient, count in enumerate(counts):
        for k in range(int(count)):
            index = len(items)
            if copies[index] and originals:
                # An earlier patient's image (never this patient's own).
                original = originals[int(rng.integers(0, len(originals)))]
                kind = COPY_KINDS[int(rng.integers(0, len(COPY_KINDS)))]
                items.append(Item(index, patient, k, original, kind))
            else:
                items.append(Item(index, patient, k))
        originals.extend(item for item in items[len(items) - int(count) :] if not item.copy_of)
    return items


def render(item: Item, size: int, seed: int) -> np.ndarray:
    """The pixels of one item (uint8 (size, size))."""
    if item.copy_of is None:
        anatomy = patient_anatomy(seed * 1_000_003 + item.patient, size)
        return follow_up(anatomy, seed * 7_000_003 + item.index)
    return planted_copy(render(item.copy_of, size, seed), item.kind, seed * 11 + item.index)


# --- NIH ChestX-ray14 -----------------------------------------------------------------------

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


def nih_name(item: Item) -> str:
    return f"{item.patient + 1:08d}_{item.follow_up:03d}.png"


def nih_relative(item: Item) -> str:
    folder = f"images_{min(12, item.patient * 12 // 30805 + 1):03d}"
    return f"{folder}/images/{nih_name(item)}"


def nih_labels(rng: np.random.Generator) -> str:
    found = [name for name, share in NIH_FINDINGS if rng.random() < share]
    return "|".join(found) if found else "No Finding"


def write_nih_tables(root: Path, items: Sequence[Item], seed: int) -> None:
    """Data_Entry_2017.csv, train_val_list.txt and test_list.txt for ``items``.

    Labels, views and the test patients (23%) are drawn per image and per patient, so a subset
    of the items gets the same rows as in the full set.
    """
    lines = [NIH_HEADER]
    train, test = [], []
    for item in items:
        rng = np.random.default_rng([seed, 5, item.index])
        name = nih_name(item)
        view = "AP" if rng.random() < 0.4 else "PA"
        lines.append(
            f"{name},{nih_labels(rng)},{item.follow_up},{item.patient + 1},50,M,{view},"
            "2500,2048,0.143,0.143,"
        )
        is_test = np.random.default_rng([seed, 6, item.patient]).random() < 0.23
        (test if is_test else train).append(name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")


# --- CheXpert --------------------------------------------------------------------------------

CHEXPERT_FOLDER = "CheXpert-v1.0-small"
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + [
    name for name, _, _ in CHEXPERT_OBSERVATIONS
]
CHEXPERT_VALID_PATIENTS = 200


def chexpert_relative(item: Item, patients: int) -> str:
    """``{train,valid}/patientNNNNN/studyK/viewM_{frontal,lateral}_F.jpg``; about 200 patients,
    spread evenly, are valid.csv's, and every fourth image is a lateral view."""
    step = max(5, patients // CHEXPERT_VALID_PATIENTS)
    split = "valid" if item.patient % step == step - 1 else "train"
    view = "view1_frontal" if item.follow_up % 4 != 3 else "view2_lateral"
    study = item.follow_up // 2 + 1
    return f"{split}/patient{item.patient + 1:05d}/study{study}/{view}_{item.follow_up}.jpg"


def write_chexpert_tables(root: Path, items: Sequence[Item], patients: int, seed: int) -> None:
    """train.csv and valid.csv for ``items`` (valid.csv without uncertain labels); labels are
    drawn per image, so a subset of the items gets the same rows as in the full set."""
    buffers = {"train": io.StringIO(), "valid": io.StringIO()}
    writers = {k: csv.writer(v, lineterminator="\n") for k, v in buffers.items()}
    for writer in writers.values():
        writer.writerow(CHEXPERT_HEADER)
    for item in items:
        rng = np.random.default_rng([seed, 7, item.index])
        rel = chexpert_relative(item, patients)
        split = rel.split("/", 1)[0]
        lateral = "lateral" in rel
        values = []
        for _, positive, uncertain in CHEXPERT_OBSERVATIONS:
            draw = rng.random()
            if draw < positive:
                values.append("1.0")
            elif split == "train" and draw < positive + uncertain:
                values.append("-1.0")
            elif draw < positive + uncertain + 0.2:
                values.append("0.0")
            else:
                values.append("")
        row = [f"{CHEXPERT_FOLDER}/{rel}", "Female", "60", "Lateral" if lateral else "Frontal"]
        row.append("" if lateral else ("AP" if rng.random() < 0.7 else "PA"))
        writers[split].writerow(row + values)
    root.mkdir(parents=True, exist_ok=True)
    for split, buffer in buffers.items():
        (root / f"{split}.csv").write_text(buffer.getvalue())


# --- writing images ---------------------------------------------------------------------------


def write_images(
    root: Path, items: Sequence[Item], relative: Sequence[str], size: int, seed: int
) -> int:
    """Render and save ``items`` at ``root / relative[k]`` (PNG or JPEG by extension); returns
    the bytes written."""
    written = 0
    for item, rel in zip(items, relative, strict=True):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(render(item, size, seed))
        if rel.endswith(".png"):
            picture.save(path, format="PNG", compress_level=1)
        else:
            picture.save(path, format="JPEG", quality=90)
        written += path.stat().st_size
    return written


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def link_subset(source: Path, target: Path, relative: Sequence[str]) -> None:
    """Hard-link the files ``relative`` of ``source`` into ``target`` (a layout subset)."""
    for rel in relative:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.link(source / rel, dest)
