"""Miniature copies of every supported dataset layout, with generated images and every quirk.

Each ``build_*`` function writes a small folder tree that has the same folder and file names and
the same quirks as the real download (see DATASETS.md), and returns an :class:`Expected` saying
exactly what a correct reader must find. Reused by the search-per-layout tests::

    from tests.data.builders import build_covid19_radiography
    expected = build_covid19_radiography(tmp_path)
    # run on expected.root; assert against expected.counts, expected.skips, ...

Images are smooth random patterns (distinct under a perceptual hash unless made as copies),
small (40-72 px) so that decoding a whole miniature takes well under a second.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_tune.data.images import (
    SKIP_EMPTY,
    SKIP_NOT_IMAGE,
    SKIP_SYSTEM,
    SKIP_TRUNCATED,
)


@dataclass
class Expected:
    """What a correct reader finds in a built miniature.

    Attributes:
        root: the folder to give to ``--data`` (may be a wrapper above the dataset).
        dataset_root: the folder the layout itself starts at.
        dataset: registry name of the layout.
        classes: class names (multi-class) or kept label vocabulary (multi-label), sorted as
            the reader reports them.
        counts: images per class (multi-class) or positives per label (multi-label), after
            every skip.
        images: number of images in the cache (all skips applied).
        skips: skip reason -> count, parse-time and decode-time together.
        groups: relative path (from dataset_root) -> patient group, where the layout has one.
        copies: (original, copy) relative paths that must share a split (near-duplicates).
        dropped_labels: multi-label only: labels too rare to keep.
        notes: substrings that must appear in the manifest notes.
    """

    root: Path
    dataset_root: Path
    dataset: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    images: int
    skips: dict[str, int] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str, str]] = field(default_factory=list)
    dropped_labels: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# --- images ---------------------------------------------------------------------------------


def pattern(seed: int, width: int = 64, height: int = 64) -> np.ndarray:
    """A smooth random uint8 image: Gaussian blobs and waves, unique per seed.

    Distinct seeds are far apart for the near-duplicate signature (cosine < 0.95), so only the
    copies a builder makes on purpose are grouped.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / width, y / height
    image = np.zeros_like(u)
    for _ in range(3):
        fx, fy = rng.integers(1, 4, size=2)
        image += rng.uniform(0.3, 1.0) * np.cos(2 * np.pi * (fx * u + fy * v) + rng.uniform(0, 6.3))
    for _ in range(8):
        cx, cy, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.06, 0.2)
        image += rng.uniform(-1.5, 1.5) * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma**2))
    image -= image.min()
    return (image / max(image.max(), 1e-9) * 235 + 10).astype(np.uint8)


def to_mode(gray: np.ndarray, mode: str) -> Image.Image:
    """The pattern as a PIL image in ``mode`` (the content stays recognisably the same)."""
    base = Image.fromarray(gray, mode="L")
    if mode == "L":
        return base
    if mode == "LA":
        return Image.merge("LA", (base, Image.new("L", base.size, 255)))
    if mode == "P":
        return base.convert("P")
    if mode in ("RGB", "RGBA", "CMYK"):
        rgb = Image.merge("RGB", (base, base.point(lambda v: int(v * 0.95)), base))
        return rgb if mode == "RGB" else rgb.convert(mode)
    if mode == "I;16":
        # A 12-bit range that does not start at 0: decoding must scale by min..max.
        return Image.fromarray(gray.astype(np.uint16) * 12 + 300)
    if mode == "I":
        return Image.fromarray(gray.astype(np.int32) * 100 - 5000)
    raise ValueError(f"no generator for mode {mode}")


def save_image(path: Path, seed: int, mode: str = "L", size: tuple[int, int] = (64, 64)) -> Path:
    """Write pattern ``seed`` in ``mode``; the format follows the extension (any case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = to_mode(pattern(seed, *size), mode)
    ext = path.suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}[ext]
    image.save(path, format=fmt)
    return path


def save_truncated(path: Path, seed: int) -> Path:
    """A PNG cut in the middle of its pixel data."""
    buffer = io.BytesIO()
    Image.fromarray(pattern(seed)).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def save_copy(path: Path, seed: int, kind: str) -> Path:
    """An augmented copy of pattern ``seed``: hflip, vflip, crop (10% off each side), rot3
    (3 degrees), offcrop (the top-right 90%, then resized back)."""
    image = Image.fromarray(pattern(seed, 72, 72))
    if kind == "hflip":
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif kind == "vflip":
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    elif kind == "crop":
        image = image.crop((7, 7, 65, 65)).resize((72, 72), Image.Resampling.BILINEAR)
    elif kind == "rot3":
        image = image.rotate(3, resample=Image.Resampling.BILINEAR, fillcolor=10)
    elif kind == "offcrop":
        image = image.crop((7, 0, 72, 65)).resize((72, 72), Image.Resampling.BILINEAR)
    else:
        raise ValueError(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_junk(folder: Path) -> None:
    """The files operating systems and people leave in class folders."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "notes.txt").write_text("scanned at site B\n")


# --- Dataset 1 ------------------------------------------------------------------------------

D1_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
D1_SOURCES = {
    "COVID": "https://github.com/ieee8023/covid-chestxray-dataset",
    "Lung_Opacity": "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
    "Normal": "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
    "Viral Pneumonia": "https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia",
}
# Modes cycled through the images of each class.
D1_MODES = ("L", "RGB", "L", "RGBA", "LA", "P", "I;16", "L")


def build_covid19_radiography(parent: Path, per_class: int = 6, wrapper: bool = True) -> Expected:
    """Dataset 1 (v4+), optionally as the Kaggle zip unpacks it: ``archive/<dataset>/``.

    Quirks: "Viral Pneumonia" (space), masks/ beside images/, FILE NAME in upper case for
    Normal (``NORMAL-1`` vs ``Normal-1.png``), one image without an xlsx row, every mode, a
    16-bit PNG, a truncated PNG, a zero-byte PNG, an upper-case extension, .DS_Store,
    Thumbs.db and a .txt in class folders, README.md.txt at the root.
    """
    root = parent / "archive" / "COVID-19_Radiography_Dataset" if wrapper else parent
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md.txt").write_text("COVID-19 Radiography Database\n")
    seed = 1000
    for class_index, name in enumerate(D1_CLASSES):
        images, masks = root / name / "images", root / name / "masks"
        rows = []
        for k in range(1, per_class + 1):
            seed += 1
            mode = D1_MODES[(k - 1 + class_index) % len(D1_MODES)]
            ext = ".PNG" if (name == "Normal" and k == 2) else ".png"
            size = (64, 64) if k % 3 else (72, 56)
            save_image(images / f"{name}-{k}{ext}", seed, mode, size)
            save_image(masks / f"{name}-{k}.png", seed + 50_000, "L", (32, 32))
            file_name = f"{name.upper()}-{k}" if name == "Normal" else f"{name}-{k}"
            if not (name == "Viral Pneumonia" and k == per_class):
                rows.append((file_name, "PNG", "256*256", D1_SOURCES[name]))
        _write_xlsx(root / f"{name}.metadata.xlsx", rows)
    write_junk(root / "Normal" / "images")
    save_truncated(root / "Lung_Opacity" / "images" / f"Lung_Opacity-{per_class + 1}.png", 7)
    (root / "COVID" / "images" / f"COVID-{per_class + 1}.png").write_bytes(b"")
    counts = dict.fromkeys(D1_CLASSES, per_class)
    return Expected(
        root=parent / "archive" if wrapper else root,
        dataset_root=root,
        dataset="covid19_radiography",
        classes=D1_CLASSES,
        counts=counts,
        images=per_class * len(D1_CLASSES),
        skips={SKIP_SYSTEM: 2, SKIP_NOT_IMAGE: 1, SKIP_TRUNCATED: 1, SKIP_EMPTY: 1},
        notes=(
            f"Read {per_class * len(D1_CLASSES)} lung masks",
            "1 image(s) of class Viral Pneumonia have no row",
        ),
    )


def _write_xlsx(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(["FILE NAME", "FORMAT", "SIZE", "URL"])
    for row in rows:
        sheet.append(list(row))
    book.save(path)


def build_covid19_radiography_v3(parent: Path, per_class: int = 4) -> Expected:
    """An older release (v1-v3): NORMAL/, COVID-19/, Viral Pneumonia/ holding images directly."""
    root = parent / "COVID-19 Radiography Database"
    classes = ("COVID-19", "NORMAL", "Viral Pneumonia")
    seed = 3000
    for name in classes:
        for k in range(1, per_class + 1):
            seed += 1
            save_image(root / name / f"{name} ({k}).png", seed)
    return Expected(
        root=root,
        dataset_root=root,
        dataset="covid19_radiography",
        classes=classes,
        counts=dict.fromkeys(classes, per_class),
        images=per_class * len(classes),
        notes=("Older release (v1-v3)",),
    )


# --- Dataset 2 ------------------------------------------------------------------------------

D2_CLASSES = ("covid", "normal", "pneumonia")
D2_COPY_KINDS = ("hflip", "vflip", "crop", "rot3", "offcrop")


def build_covid19_pneumonia_normal(parent: Path, per_class: int = 6, copies: int = 5) -> Expected:
    """Dataset 2: covid/, normal/, pneumonia/; ``copies`` augmented covid copies (flips, centre
    and off-centre crops, rotation) of the first covid images; mixed extension case (.png, .jpg,
    .JPG, .jpeg, .PNG).
    """
    root = parent / "Data"
    exts = (".png", ".jpg", ".JPG", ".jpeg", ".PNG")
    seed = 2000
    for name in D2_CLASSES:
        for k in range(1, per_class + 1):
            seed += 1
            ext = exts[(k - 1) % len(exts)]
            save_image(root / name / f"{name.upper()}({k}){ext}", seed, "L", (72, 72))
    first = 2001  # seed of covid image 1
    pairs = []
    for k in range(copies):
        kind = D2_COPY_KINDS[k % len(D2_COPY_KINDS)]
        original = k % per_class
        copy = f"covid/COVID-aug-{k + 1}.png"
        save_copy(root / copy, first + original, kind)
        ext = exts[original % len(exts)]
        pairs.append((f"covid/COVID({original + 1}){ext}", copy))
    write_junk(root / "pneumonia")
    counts = {"covid": per_class + copies, "normal": per_class, "pneumonia": per_class}
    return Expected(
        root=root,
        dataset_root=root,
        dataset="covid19_pneumonia_normal",
        classes=D2_CLASSES,
        counts=counts,
        images=sum(counts.values()),
        skips={SKIP_SYSTEM: 2, SKIP_NOT_IMAGE: 1},
        copies=pairs,
    )


# --- Dataset 3 ------------------------------------------------------------------------------

D3_HEADER = (
    "patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,intubation_present,"
    "went_icu,in_icu,needed_supplemental_O2,extubated,temperature,pO2_saturation,"
    "leukocyte_count,neutrophil_count,lymphocyte_count,view,modality,date,location,folder,"
    "filename,doi,url,license,clinical_notes,other_notes,"
)
D3_FRONTAL = ("PA", "AP", "AP Supine", "AP semi erect", "AP erect")


def build_covid_chestxray(
    parent: Path, covid_patients: int = 14, normal_patients: int = 14
) -> Expected:
    """Dataset 3: metadata.csv (trailing-comma header, Latin-1, string patient ids) + images/.

    Kept: COVID-19 patients (2 frontal images each, one per view name in turn) and No Finding
    patients (1 image each); rare findings (SARS, Herpes with a trailing space, Streptococcus)
    with too few patients to reach every split. Skipped rows: a lateral view, CT slices (one a
    JPEG in images/), todo and Unknown findings, a row whose file is missing, a file listed
    twice; plus a file in images/ that the CSV does not list.
    """
    root = parent / "covid-chestxray-dataset"
    images = root / "images"
    rows: list[dict[str, str]] = []
    groups: dict[str, str] = {}
    seed = 4000

    def add(pid: str, finding: str, view: str, modality: str = "X-ray", write: bool = True) -> str:
        nonlocal seed
        seed += 1
        name = f"{pid}-{seed}.{'png' if seed % 2 else 'jpg'}"
        if write:
            mode = ("L", "RGB", "L", "RGBA")[seed % 4]
            save_image(images / name, seed, mode, (64, 56) if seed % 3 else (60, 72))
        rows.append(
            {
                "patientid": pid,
                "finding": finding,
                "view": view,
                "modality": modality,
                "folder": "images",
                "filename": name,
            }
        )
        return name

    for p in range(covid_patients):
        pid = f"{100 + p}{'a' if p % 2 else ''}"
        for k in range(2):
            name = add(pid, "Pneumonia/Viral/COVID-19", D3_FRONTAL[(p + k) % len(D3_FRONTAL)])
            groups[f"images/{name}"] = f"patient:{pid}"
    for p in range(normal_patients):
        pid = f"{300 + p}b"
        name = add(pid, "No Finding", "PA")
        groups[f"images/{name}"] = f"patient:{pid}"
    rare = (
        ("400", "Pneumonia/Viral/SARS"),
        ("401", "Pneumonia/Viral/Herpes "),
        ("402", "Pneumonia/Bacterial/Streptococcus"),
    )
    for pid, finding in rare:
        name = add(pid, finding, "AP")
        groups[f"images/{name}"] = f"patient:{pid}"
    add("100", "Pneumonia/Viral/COVID-19", "L")  # lateral
    add("500", "Pneumonia/Viral/COVID-19", "Axial", "CT")  # CT slice as JPEG in images/
    add("501", "Pneumonia/Viral/COVID-19", "Coronal", "CT", write=False)  # CT volume, absent
    rows[-1]["folder"] = "volumes"
    rows[-1]["filename"] = "coronacases_001.nii.gz"
    add("502", "todo", "PA")
    add("503", "Unknown", "AP")
    add("504", "Pneumonia/Viral/COVID-19", "PA", write=False)  # listed, file missing
    rows.append(dict(rows[0]))  # the first image listed twice
    save_image(images / "unlisted-figure.png", 9999)
    _write_metadata_csv(root / "metadata.csv", rows)

    n_covid, n_normal = 2 * covid_patients, normal_patients
    # The rare findings are dropped as labels, but their images stay (positives of the parents).
    counts = {
        "COVID-19": n_covid,
        "No Finding": n_normal,
        "Pneumonia": n_covid + len(rare),
        "Viral": n_covid + 2,
    }
    return Expected(
        root=root,
        dataset_root=root,
        dataset="covid_chestxray",
        classes=("COVID-19", "No Finding", "Pneumonia", "Viral"),
        counts=counts,
        images=n_covid + n_normal + len(rare),
        skips={
            "view not chosen (L)": 1,
            "not an X-ray (modality CT)": 2,
            "no label (finding todo/Unknown)": 2,
            "listed in metadata.csv, file missing": 1,
            "listed twice in metadata.csv": 1,
            "in images/ but not in metadata.csv": 1,
        },
        groups=groups,
        dropped_labels=("Bacterial", "Herpes", "SARS", "Streptococcus"),
        notes=("metadata.csv is not UTF-8; read as latin-1",),
    )


def _write_metadata_csv(path: Path, rows: list[dict[str, str]]) -> None:
    columns = D3_HEADER.rstrip(",").split(",")
    buffer = io.StringIO()
    buffer.write(D3_HEADER + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        full = {c: "" for c in columns}
        full.update(row)
        full["clinical_notes"] = "Hôpital Bichat, fièvre"  # not ASCII: Latin-1 bytes on disk
        writer.writerow([full[c] for c in columns] + [""])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue().encode("latin-1"))


# --- imagefolder ----------------------------------------------------------------------------


def build_imagefolder(parent: Path, per_class: int = 6) -> Expected:
    """``<class>/**`` with a nested subfolder, a 32-bit TIFF (mode I), a CMYK JPEG, mixed
    extension case, an empty class folder, a hidden folder, junk files and a loose root file.
    """
    root = parent / "my_xrays"
    plan = {
        "effusion": ("L", "I", "CMYK", "P", "RGB", "LA"),
        "normal": ("L", "RGBA", "L", "I;16", "RGB", "L"),
    }
    exts = {"I": ".tif", "CMYK": ".JPG", "RGB": ".jpeg"}
    seed = 5000
    for name, modes in plan.items():
        for k in range(per_class):
            seed += 1
            mode = modes[k % len(modes)]
            sub = "batch2/" if k == per_class - 1 else ""
            save_image(root / name / f"{sub}{name}_{k}{exts.get(mode, '.png')}", seed, mode)
    (root / "empty_class").mkdir(parents=True)
    save_image(root / ".cache" / "hidden.png", 1)
    write_junk(root / "normal")
    (root / "labels.txt").write_text("effusion\nnormal\n")
    return Expected(
        root=root,
        dataset_root=root,
        dataset="imagefolder",
        classes=("effusion", "normal"),
        counts={"effusion": per_class, "normal": per_class},
        images=2 * per_class,
        skips={SKIP_SYSTEM: 2, SKIP_NOT_IMAGE: 2},
    )


def build_imagefolder_splits(parent: Path, with_val: bool = True) -> Expected:
    """``train/``, ``val/`` (optional), ``test/`` of class folders: the layout fixes the split."""
    root = parent / "split_xrays"
    sizes = {"train": 8, "val": 3, "test": 3} if with_val else {"train": 10, "test": 3}
    seed = 6000
    for split, n in sizes.items():
        for name in ("a", "b"):
            for k in range(n):
                seed += 1
                save_image(root / split / name / f"{name}{k}.png", seed)
    total = sum(sizes.values())
    return Expected(
        root=root,
        dataset_root=root,
        dataset="imagefolder",
        classes=("a", "b"),
        counts={"a": total, "b": total},
        images=2 * total,
    )


# --- NIH ChestX-ray14 -----------------------------------------------------------------------

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
# Label combinations dealt to patients in turn (each patient has two images with one combination).
NIH_COMBOS: tuple[str, ...] = (
    "Effusion",
    "Infiltration",
    "Effusion|Infiltration",
    "No Finding",
    "Atelectasis",
)


def build_nih_chestxray14(
    parent: Path, train_patients: int = 40, test_patients: int = 15
) -> Expected:
    """NIH ChestX-ray14 as the Kaggle zip unpacks it: ``archive/`` holding Data_Entry_2017.csv
    (trailing-comma header, bracketed size columns), images_001/images/ and images_002/images/,
    train_val_list.txt and test_list.txt, BBox_List_2017.csv.

    Patients have two images each (``<8-digit patient>_<3-digit follow-up>.png``); the label
    combinations of NIH_COMBOS are dealt in turn, so every kept finding reaches every split.
    Quirks: one Hernia patient (too rare: dropped as a label), an AP and a PA view, a row whose
    file is missing, a row listed twice, a row on neither split list, an image that no row lists,
    .DS_Store and a .txt in an image folder.
    """
    root = parent / "archive"
    rows: list[list[str]] = []
    groups: dict[str, str] = {}
    train_names: list[str] = []
    test_names: list[str] = []
    counts: dict[str, int] = {}
    seed = 7000

    def add(patient: int, follow_up: int, findings: str, *, write: bool = True) -> str:
        nonlocal seed
        seed += 1
        name = f"{patient:08d}_{follow_up:03d}.png"
        folder = "images_001" if patient % 2 else "images_002"
        if write:
            save_image(root / folder / "images" / name, seed, "L", (64, 64))
        view = "AP" if seed % 3 == 0 else "PA"
        rows.append(
            [
                name,
                findings,
                str(follow_up),
                str(patient),
                "58",
                "M",
                view,
                "2500",
                "2048",
                "0.143",
                "0.143",
                "",
            ]
        )
        return f"{folder}/images/{name}"

    patients = train_patients + test_patients
    for p in range(patients):
        patient = 11 + p
        findings = NIH_COMBOS[p % len(NIH_COMBOS)]
        for follow_up in range(2):
            rel = add(patient, follow_up, findings)
            groups[rel] = f"patient:{patient}"
            (test_names if p >= train_patients else train_names).append(rel.rsplit("/", 1)[-1])
            for label in findings.split("|"):
                if label != "No Finding":
                    counts[label] = counts.get(label, 0) + 1
    kept = len(rows)
    hernia = add(9, 0, "Hernia|Effusion")  # the only Hernia: dropped as a label, image kept
    groups[hernia] = "patient:9"
    train_names.append(hernia.rsplit("/", 1)[-1])
    counts["Effusion"] += 1
    add(8, 0, "Effusion", write=False)  # listed, file missing
    train_names.append("00000008_000.png")
    rows.append(list(rows[0]))  # listed twice
    add(7, 0, "Mass")  # on neither split list
    save_image(root / "images_002" / "images" / "00000006_000.png", 9991)  # no row lists it
    write_junk(root / "images_001" / "images")
    lines = [NIH_HEADER] + [",".join(r) for r in rows]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_names) + "\n")
    (root / "test_list.txt").write_text("\n".join(test_names) + "\n")
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h]\n")
    return Expected(
        root=root,
        dataset_root=root,
        dataset="nih_chestxray14",
        classes=tuple(sorted(counts)),
        counts=counts,
        images=kept + 1,
        skips={
            SKIP_SYSTEM: 2,
            SKIP_NOT_IMAGE: 1,
            "listed in Data_Entry, file missing": 1,
            "listed twice in Data_Entry": 1,
            "in neither train_val_list.txt nor test_list.txt": 1,
            "in the image folders but not in Data_Entry": 1,
        },
        groups=groups,
        dropped_labels=("Hernia",),
        notes=("Official split kept", "BBox_List_2017.csv"),
    )


# --- CheXpert --------------------------------------------------------------------------------

CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
# Per patient in turn: observation -> value ("1.0", "0.0", "-1.0"; unnamed ones are blank).
CHEXPERT_ROWS: tuple[dict[str, str], ...] = (
    {"Cardiomegaly": "1.0", "Edema": "-1.0", "Support Devices": "1.0"},
    {"Edema": "1.0", "Pleural Effusion": "1.0", "Cardiomegaly": "0.0"},
    {"No Finding": "1.0"},
    {"Pleural Effusion": "1.0", "Cardiomegaly": "-1.0"},
    {"Edema": "-1.0", "Support Devices": "1.0", "Pleural Effusion": "0.0"},
)
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]


def chexpert_expected_labels(values: dict[str, str], policy: str) -> tuple[set[str], set[str]]:
    """(positive labels, masked labels) of one row under an uncertain-label policy."""
    positive = {name for name, v in values.items() if v == "1.0"}
    uncertain = {name for name, v in values.items() if v == "-1.0"}
    if policy == "ones":
        return positive | uncertain, set()
    return positive, (uncertain if policy == "ignore" else set())


def build_chexpert(parent: Path, train_patients: int = 60, valid_patients: int = 15) -> Expected:
    """CheXpert-v1.0-small under ``parent`` (as unzipped: Path is relative to ``parent``).

    Every patient has one study with a frontal view (AP or PA) and a lateral view (skipped by
    default); train patients get CHEXPERT_ROWS in turn (with uncertain values), valid.csv
    patients the same without uncertainty (the radiologists' labels have none). Quirks: a row
    whose file is missing, a row listed twice, an image no row lists, .DS_Store in a study.
    ``Expected`` is for the default policy (ignore); ``chexpert_expected_labels`` gives any
    policy's labels per row, and ``Expected.groups`` maps each kept image to its patient.
    """
    root = parent / "CheXpert-v1.0-small"
    seed = 8000
    counts: dict[str, int] = {}
    groups: dict[str, str] = {}
    kept = 0

    def patient_rows(split: str, first: int, n: int) -> list[list[str]]:
        nonlocal seed, kept
        rows = []
        for p in range(n):
            number = first + p
            values = dict(CHEXPERT_ROWS[p % len(CHEXPERT_ROWS)])
            if split == "valid":
                values = {k: ("1.0" if v == "-1.0" else v) for k, v in values.items()}
            study = f"{split}/patient{number:05d}/study1"
            for view, fl, appa in (
                ("view1_frontal", "Frontal", "AP" if p % 2 else "PA"),
                ("view2_lateral", "Lateral", ""),
            ):
                seed += 1
                save_image(root / study / f"{view}.jpg", seed, "L", (64, 72))
                labels = [values.get(name, "") for name in CHEXPERT_OBSERVATIONS]
                rows.append(
                    [f"CheXpert-v1.0-small/{study}/{view}.jpg", "Female", "68", fl, appa, *labels]
                )
                if fl == "Frontal":
                    kept += 1
                    groups[f"{study}/{view}.jpg"] = f"patient:{number}"
                    for name in chexpert_expected_labels(values, "ignore")[0]:
                        counts[name] = counts.get(name, 0) + 1
        return rows

    train = patient_rows("train", 1, train_patients)
    valid = patient_rows("valid", 64541, valid_patients)
    missing = list(train[0])
    missing[0] = "CheXpert-v1.0-small/train/patient09999/study1/view1_frontal.jpg"
    train += [missing, list(train[2])]  # a missing file, a row listed twice
    save_image(root / "train" / "patient09998" / "study1" / "view1_frontal.jpg", 9992)
    write_junk(root / "train" / "patient00001" / "study1")
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CHEXPERT_HEADER)
        writer.writerows(rows)
        (root / name).write_text(buffer.getvalue())
    return Expected(
        root=parent,
        dataset_root=root,
        dataset="chexpert",
        classes=tuple(sorted(counts)),
        counts=counts,
        images=kept,
        skips={
            SKIP_SYSTEM: 2,
            SKIP_NOT_IMAGE: 1,
            "view not chosen (Lateral)": train_patients + valid_patients,
            "listed in train.csv, file missing": 1,
            "listed twice in the CSV files": 1,
            "in train/ or valid/ but in no CSV file": 1,
        },
        groups=groups,
        notes=("Uncertain labels (-1): policy ignore", "valid.csv is the test split"),
    )


BUILDERS = {
    "covid19_radiography": build_covid19_radiography,
    "covid19_pneumonia_normal": build_covid19_pneumonia_normal,
    "covid_chestxray": build_covid_chestxray,
    "nih_chestxray14": build_nih_chestxray14,
    "chexpert": build_chexpert,
    "imagefolder": build_imagefolder,
}
