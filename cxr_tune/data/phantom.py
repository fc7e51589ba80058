"""The built-in ``phantom`` dataset: procedural chest-X-ray-like images, no patient data.

Each image is drawn from a seed: a body outline, two lung fields, mediastinum and spine, a heart
shadow, ribs, noise and exposure variation, plus the findings of its class. The four classes
mimic the paper's Dataset 1:

- ``Normal``: no finding;
- ``COVID``: bilateral, peripheral, lower-zone ground-glass opacities (faint, patchy);
- ``Lung_Opacity``: a lobar consolidation (dense, one lung, one zone);
- ``Viral Pneumonia``: diffuse bilateral opacity with reticular texture.

Finding severity is drawn uniformly from barely visible to obvious, so some images are genuinely
ambiguous: a good model scores well, not perfectly, and a poor optimiser setting does clearly
worse. Images of one simulated patient share anatomy; the split keeps them together.

Everything is a function of (seed, image index): the same seed gives the same bytes, whatever
the batch size used to render.

Sites and shortcuts. The phantom as it always was is site ``"a"``. Site ``"b"`` draws other
patients with the same anatomy and findings under another acquisition look: a wider field of
view (the chest smaller in the frame), flatter contrast with a brighter, steeper tone curve, and
heavier grain. A model trained on one site and scored on the other shows how it transfers.
``marker=True`` burns a bright marker into a corner outside the body, in the corner of the
image's class for :data:`MARKER_AGREEMENT` of the images (else a random corner): a shortcut a
model can learn without looking at the lungs. :func:`lung_masks` gives each image's lung fields,
for probes that blank them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
# Multi-label mode: independent findings; an image with none of them is normal.
FINDINGS: tuple[str, ...] = ("ground_glass", "consolidation", "diffuse_opacity")
# Class shares of the paper's Dataset 1 (COVID 3,616; Lung_Opacity 6,012; Normal 10,192;
# Viral Pneumonia 1,345), for ``imbalance="dataset1"``.
DATASET1_SHARES: tuple[float, ...] = (0.171, 0.284, 0.481, 0.064)
# Share of simulated patients imaged twice (a follow-up with new positioning and noise).
FOLLOW_UP_SHARE = 0.2
_RENDER_BATCH = 64
SITES: tuple[str, ...] = ("a", "b")
# Share of marked images whose marker sits in their class's corner (the rest: a random corner).
MARKER_AGREEMENT = 0.9
# Marker side as a share of the image side, and its inset from the image edge.
MARKER_SIZE = 0.1
MARKER_INSET = 0.03
# Appended to every random stream of a site other than "a", so its patients and shots differ
# from site a's while site a's streams (and bytes) stay exactly as they were.
_SITE_STREAM = {"b": 0xB}


@dataclass(frozen=True)
class SiteLook:
    """How a site acquires images: (low, high) ranges of per-image draws."""

    scale: tuple[float, float]
    contrast: tuple[float, float]
    brightness: tuple[float, float]
    gamma: tuple[float, float]
    grain: tuple[float, float]


LOOKS: dict[str, SiteLook] = {
    # Site a: the phantom's original look; these draws must stay exactly as they are.
    "a": SiteLook(
        scale=(0.9, 1.05),
        contrast=(0.8, 1.2),
        brightness=(-0.05, 0.05),
        gamma=(0.8, 1.25),
        grain=(0.01, 0.035),
    ),
    # Site b: wider field of view, flatter contrast, a brighter and steeper tone curve, more grain.
    "b": SiteLook(
        scale=(0.72, 0.84),
        contrast=(0.65, 0.85),
        brightness=(0.1, 0.18),
        gamma=(1.1, 1.4),
        grain=(0.035, 0.06),
    ),
}


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate.

    Attributes:
        n_images: number of images.
        image_size: side length in pixels (square images).
        seed: the one seed everything derives from.
        imbalance: ``None`` for balanced classes, ``"dataset1"`` for the paper's Dataset 1
            shares, or explicit per-class shares.
        multilabel: draw independent findings instead of one class per image.
        strength: multiplies the opacity of every finding (1.0: the standard difficulty).
        site: ``"a"`` (the original look) or ``"b"`` (other patients, another acquisition look).
        marker: burn a class-correlated marker into a corner outside the body.
    """

    n_images: int = 640
    image_size: int = 64
    seed: int = 0
    imbalance: str | Sequence[float] | None = None
    multilabel: bool = False
    strength: float = 1.0
    site: str = "a"
    marker: bool = False

    def __post_init__(self) -> None:
        if self.n_images < 8:
            raise ValueError(f"The value of `n_images` is {self.n_images}, but must be >= 8.")
        if self.image_size < 16:
            raise ValueError(f"The value of `image_size` is {self.image_size}, but must be >= 16.")
        if self.site not in SITES:
            raise ValueError(f"The value of `site` is {self.site!r}, but must be one of {SITES}.")
        if self.marker and self.multilabel:
            raise ValueError("A marker follows the class of an image: it needs multilabel=False.")

    def key(self) -> str:
        """A short stable string naming this exact dataset (part of cache keys and hashes)."""
        shares = self.imbalance if isinstance(self.imbalance, str) else tuple(self.imbalance or ())
        text = f"phantom-v2|{self.n_images}|{self.image_size}|{self.seed}|{shares}|{self.multilabel}|{self.strength}"
        # Site a without a marker keeps the key it always had.
        if self.site != "a" or self.marker:
            text += f"|site={self.site}|marker={self.marker}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def stream(self, *parts: int) -> np.random.Generator:
        """The random stream ``parts`` of this dataset (site a: exactly the original streams)."""
        tag = _SITE_STREAM.get(self.site)
        return np.random.default_rng(
            [self.seed, *parts] if tag is None else [self.seed, *parts, tag]
        )


@dataclass(frozen=True)
class PhantomData:
    """Generated images with labels and simulated patient ids."""

    images: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray  # int64 (N,) class index, or uint8 (N, F) multi-hot findings
    groups: np.ndarray  # str (N,) patient id
    classes: tuple[str, ...]


def generate(spec: PhantomSpec) -> PhantomData:
    """Render the dataset described by ``spec`` (deterministic)."""
    findings = _draw_findings(spec)
    patients = _draw_patients(spec)
    images = np.empty((spec.n_images, spec.image_size, spec.image_size), dtype=np.uint8)
    for start in range(0, spec.n_images, _RENDER_BATCH):
        stop = min(start + _RENDER_BATCH, spec.n_images)
        images[start:stop] = _render_batch(
            spec, np.arange(start, stop), findings[start:stop], patients[start:stop]
        )
    if spec.multilabel:
        labels = findings.astype(np.uint8)
        classes = FINDINGS
    else:
        labels = _findings_to_class(findings)
        classes = CLASSES
    if spec.marker:
        _burn_markers(spec, images, labels)
    prefix = "patient" if spec.site == "a" else f"site-{spec.site}-patient"
    groups = np.array([f"{prefix}-{p:05d}" for p in patients])
    return PhantomData(images=images, labels=labels, groups=groups, classes=classes)


def _class_counts(n: int, shares: Sequence[float]) -> np.ndarray:
    weights = np.asarray(shares, dtype=float)
    if weights.shape != (len(CLASSES),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"imbalance must give {len(CLASSES)} non-negative shares, got {shares}")
    exact = weights / weights.sum() * n
    counts = np.floor(exact).astype(int)
    # Hand the remainder to the largest fractional parts, so counts sum to n exactly.
    for i in np.argsort(-(exact - counts))[: n - counts.sum()]:
        counts[i] += 1
    return counts


def _draw_findings(spec: PhantomSpec) -> np.ndarray:
    """Boolean (N, 3) matrix of findings: ground glass, consolidation, diffuse opacity."""
    rng = spec.stream(0)
    if spec.multilabel:
        # Independent findings with prevalences that leave ~40% of images normal.
        return rng.random((spec.n_images, len(FINDINGS))) < np.array([0.3, 0.2, 0.15])
    if spec.imbalance is None:
        shares: Sequence[float] = [1.0] * len(CLASSES)
    elif spec.imbalance == "dataset1":
        shares = DATASET1_SHARES
    elif isinstance(spec.imbalance, str):
        raise ValueError(f"Unknown imbalance '{spec.imbalance}'. Available: dataset1.")
    else:
        shares = spec.imbalance
    counts = _class_counts(spec.n_images, shares)
    classes = rng.permutation(np.repeat(np.arange(len(CLASSES)), counts))
    # Class index -> findings row (COVID, Lung_Opacity, Normal, Viral Pneumonia).
    table = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=bool)
    return table[classes]


def _findings_to_class(findings: np.ndarray) -> np.ndarray:
    codes = findings.astype(int) @ np.array([1, 2, 4])
    lookup = {1: 0, 2: 1, 0: 2, 4: 3}
    return np.array([lookup[int(c)] for c in codes], dtype=np.int64)


def _draw_patients(spec: PhantomSpec) -> np.ndarray:
    """Patient id per image: most patients have one image, some a follow-up next to it."""
    rng = spec.stream(1)
    n = spec.n_images
    patients = np.empty(n, dtype=np.int64)
    patient, i = 0, 0
    while i < n:
        take = 2 if (rng.random() < FOLLOW_UP_SHARE and i + 1 < n) else 1
        patients[i : i + take] = patient
        patient += 1
        i += take
    return patients


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _ellipse(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry, softness: float) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1]; all centre/radius arguments broadcast over a batch."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _sigmoid((1.0 - r) / softness)


def _blob(x: np.ndarray, y: np.ndarray, cx, cy, sigma) -> np.ndarray:
    return np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma**2)))


def _col(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Shape a per-image vector as (B, 1, 1) for broadcasting against (B, S, S) grids."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled bilinearly to (size, size)."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


@dataclass
class _Geometry:
    """Anatomy and positioning of a batch: patient-space coordinates and the lung fields."""

    x: np.ndarray
    y: np.ndarray
    left: np.ndarray
    right: np.ndarray
    heart_r: np.ndarray
    rib_freq: np.ndarray
    shot: list[np.random.Generator]


_SOFT = 0.08


def _geometry(spec: PhantomSpec, index: np.ndarray, patients: np.ndarray) -> _Geometry:
    """Draw each image's anatomy (shared by a patient's follow-ups) and positioning.

    The shot streams come back advanced past the positioning draws, ready for the findings.
    """
    size = spec.image_size
    look = LOOKS[spec.site]
    anatomy = [spec.stream(2, int(p)) for p in patients]
    shot = [spec.stream(3, int(i)) for i in index]

    lung_rx = _col([r.uniform(0.24, 0.30) for r in anatomy])
    lung_ry = _col([r.uniform(0.48, 0.60) for r in anatomy])
    lung_gap = _col([r.uniform(0.34, 0.42) for r in anatomy])
    heart_r = _col([r.uniform(0.22, 0.32) for r in anatomy])
    rib_freq = _col([r.uniform(4.5, 6.0) for r in anatomy])
    angle = _col([np.deg2rad(s.normal(0.0, 3.0)) for s in shot])
    scale = _col([s.uniform(*look.scale) for s in shot])
    shift_x = _col([s.normal(0.0, 0.03) for s in shot])
    shift_y = _col([s.normal(0.0, 0.03) for s in shot])

    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    cos, sin = np.cos(angle), np.sin(angle)
    x = (cos * gx[None] + sin * gy[None]) / scale - shift_x
    y = (-sin * gx[None] + cos * gy[None]) / scale - shift_y
    left = _ellipse(x, y, -lung_gap, -0.05, lung_rx, lung_ry, _SOFT)
    right = _ellipse(x, y, lung_gap, -0.05, lung_rx, lung_ry, _SOFT)
    return _Geometry(x, y, left, right, heart_r, rib_freq, shot)


def lung_masks(spec: PhantomSpec, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The lung fields of images ``indices`` of ``spec``'s dataset: uint8 (n, S, S), 1 = lung.

    Recomputed from the seed (the same anatomy and positioning as the rendered images), so a
    probe can ask for the test split's masks without keeping masks for every image.
    """
    indices = np.asarray(indices, dtype=np.int64)
    patients = _draw_patients(spec)[indices] if len(indices) else indices
    out = np.empty((len(indices), spec.image_size, spec.image_size), dtype=np.uint8)
    for start in range(0, len(indices), _RENDER_BATCH):
        stop = min(start + _RENDER_BATCH, len(indices))
        geometry = _geometry(spec, indices[start:stop], patients[start:stop])
        out[start:stop] = (np.clip(geometry.left + geometry.right, 0.0, 1.0) > 0.5).astype(np.uint8)
    return out


def _render_batch(
    spec: PhantomSpec, index: np.ndarray, findings: np.ndarray, patients: np.ndarray
) -> np.ndarray:
    size = spec.image_size
    look = LOOKS[spec.site]
    g = _geometry(spec, index, patients)
    x, y, left, right, shot = g.x, g.y, g.left, g.right, g.shot

    soft = _SOFT
    body = _ellipse(x, y, 0.0, 0.1, 0.88, 1.05, soft)
    lungs = np.clip(left + right, 0.0, 1.0)
    heart_r, rib_freq = g.heart_r, g.rib_freq
    heart = _ellipse(x, y, 0.12, 0.28, heart_r, heart_r * 0.8, soft)
    spine = _sigmoid((0.09 - np.abs(x)) / 0.02) * body
    ribs = np.maximum(0.0, np.cos(2 * np.pi * rib_freq * (y + 0.35 * x**2))) ** 6 * lungs

    image = 0.04 + 0.34 * body - 0.22 * lungs + 0.16 * spine + 0.2 * heart * (0.4 + 0.6 * lungs)
    image += 0.07 * ribs
    image += spec.strength * _findings_layer(x, y, left, right, findings, shot, size)

    for b, s in enumerate(shot):
        exposure = 0.035 * _smooth_noise(s, size, 3)
        grain = s.uniform(*look.grain) * s.standard_normal((size, size)).astype(np.float32)
        contrast, brightness, gamma = (
            s.uniform(*look.contrast),
            s.uniform(*look.brightness),
            s.uniform(*look.gamma),
        )
        value = np.clip((image[b] + exposure) * contrast + brightness, 0.0, 1.0) ** gamma
        image[b] = value + grain
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def marker_corners(spec: PhantomSpec, labels: np.ndarray) -> np.ndarray:
    """The corner (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of each image's
    marker: its class's corner for ``MARKER_AGREEMENT`` of the images, else a random one."""
    rng = spec.stream(5)
    agree = rng.random(len(labels)) < MARKER_AGREEMENT
    random_corner = rng.integers(0, 4, size=len(labels))
    return np.where(agree, np.asarray(labels) % 4, random_corner).astype(np.int64)


def _burn_markers(spec: PhantomSpec, images: np.ndarray, labels: np.ndarray) -> None:
    """Burn a bright square into each image's marker corner (outside the body), in place."""
    size = spec.image_size
    side = max(3, int(round(MARKER_SIZE * size)))
    inset = max(1, int(round(MARKER_INSET * size)))
    far = size - inset - side
    origins = [(inset, inset), (inset, far), (far, inset), (far, far)]
    for i, corner in enumerate(marker_corners(spec, labels)):
        top, left = origins[int(corner)]
        images[i, top : top + side, left : left + side] = 235


def _severity(rng: np.random.Generator) -> float:
    """How pronounced a finding is, uniform from barely there to obvious.

    About one case in ten is too faint to tell from noise and positioning, which keeps the
    best reachable score below 1 however long a model trains.
    """
    return float(rng.uniform(0.02, 1.0))


def _findings_layer(
    x: np.ndarray,
    y: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    findings: np.ndarray,
    shot: list[np.random.Generator],
    size: int,
) -> np.ndarray:
    """Opacities of each image's findings, confined to its lung fields."""
    layer = np.zeros_like(x)
    lungs = np.clip(left + right, 0.0, 1.0)
    for b, rng in enumerate(shot):
        ground_glass, consolidation, diffuse = findings[b]
        if ground_glass:
            # Bilateral, peripheral, lower-zone patches.
            amplitude = 0.35 * _severity(rng)
            for side in (-1.0, 1.0):
                for _ in range(rng.integers(2, 5)):
                    cx = side * rng.uniform(0.48, 0.62)
                    cy = rng.uniform(-0.05, 0.45)
                    sigma = rng.uniform(0.06, 0.12)
                    layer[b] += amplitude * rng.uniform(0.6, 1.0) * _blob(x[b], y[b], cx, cy, sigma)
        if consolidation:
            # One dense lobar opacity in one lung, upper or lower zone.
            side = rng.choice([-1.0, 1.0])
            cx = side * rng.uniform(0.3, 0.45)
            cy = rng.choice([-0.3, 0.25]) + rng.normal(0.0, 0.05)
            rx, ry = rng.uniform(0.12, 0.2), rng.uniform(0.12, 0.22)
            amplitude = 0.6 * _severity(rng)
            lobe = _ellipse(x[b], y[b], cx, cy, rx, ry, 0.15)
            layer[b] += amplitude * lobe * (left[b] if side < 0 else right[b])
        if diffuse:
            # Bilateral haze with a reticular (net-like) texture.
            amplitude = 0.3 * _severity(rng)
            texture = _smooth_noise(rng, size, max(4, size // 8))
            layer[b] += amplitude * lungs[b] * (0.8 + 0.5 * np.abs(texture))
    return layer * lungs
