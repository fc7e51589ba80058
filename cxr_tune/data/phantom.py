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
    """

    n_images: int = 640
    image_size: int = 64
    seed: int = 0
    imbalance: str | Sequence[float] | None = None
    multilabel: bool = False
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.n_images < 8:
            raise ValueError(f"The value of `n_images` is {self.n_images}, but must be >= 8.")
        if self.image_size < 16:
            raise ValueError(f"The value of `image_size` is {self.image_size}, but must be >= 16.")

    def key(self) -> str:
        """A short stable string naming this exact dataset (part of cache keys and hashes)."""
        shares = self.imbalance if isinstance(self.imbalance, str) else tuple(self.imbalance or ())
        text = f"phantom-v2|{self.n_images}|{self.image_size}|{self.seed}|{shares}|{self.multilabel}|{self.strength}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    patients = _draw_patients(spec.n_images, spec.seed)
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
    groups = np.array([f"patient-{p:05d}" for p in patients])
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
    rng = np.random.default_rng([spec.seed, 0])
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


def _draw_patients(n: int, seed: int) -> np.ndarray:
    """Patient id per image: most patients have one image, some a follow-up next to it."""
    rng = np.random.default_rng([seed, 1])
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


def _render_batch(
    spec: PhantomSpec, index: np.ndarray, findings: np.ndarray, patients: np.ndarray
) -> np.ndarray:
    size = spec.image_size
    anatomy = [np.random.default_rng([spec.seed, 2, int(p)]) for p in patients]
    shot = [np.random.default_rng([spec.seed, 3, int(i)]) for i in index]

    # Patient anatomy (shared by follow-ups) and per-image positioning.
    lung_rx = _col([r.uniform(0.24, 0.30) for r in anatomy])
    lung_ry = _col([r.uniform(0.48, 0.60) for r in anatomy])
    lung_gap = _col([r.uniform(0.34, 0.42) for r in anatomy])
    heart_r = _col([r.uniform(0.22, 0.32) for r in anatomy])
    rib_freq = _col([r.uniform(4.5, 6.0) for r in anatomy])
    angle = _col([np.deg2rad(s.normal(0.0, 3.0)) for s in shot])
    scale = _col([s.uniform(0.9, 1.05) for s in shot])
    shift_x = _col([s.normal(0.0, 0.03) for s in shot])
    shift_y = _col([s.normal(0.0, 0.03) for s in shot])

    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    cos, sin = np.cos(angle), np.sin(angle)
    x = (cos * gx[None] + sin * gy[None]) / scale - shift_x
    y = (-sin * gx[None] + cos * gy[None]) / scale - shift_y

    soft = 0.08
    body = _ellipse(x, y, 0.0, 0.1, 0.88, 1.05, soft)
    left = _ellipse(x, y, -lung_gap, -0.05, lung_rx, lung_ry, soft)
    right = _ellipse(x, y, lung_gap, -0.05, lung_rx, lung_ry, soft)
    lungs = np.clip(left + right, 0.0, 1.0)
    heart = _ellipse(x, y, 0.12, 0.28, heart_r, heart_r * 0.8, soft)
    spine = _sigmoid((0.09 - np.abs(x)) / 0.02) * body
    ribs = np.maximum(0.0, np.cos(2 * np.pi * rib_freq * (y + 0.35 * x**2))) ** 6 * lungs

    image = 0.04 + 0.34 * body - 0.22 * lungs + 0.16 * spine + 0.2 * heart * (0.4 + 0.6 * lungs)
    image += 0.07 * ribs
    image += spec.strength * _findings_layer(x, y, left, right, findings, shot, size)

    for b, s in enumerate(shot):
        exposure = 0.035 * _smooth_noise(s, size, 3)
        grain = s.uniform(0.01, 0.035) * s.standard_normal((size, size)).astype(np.float32)
        contrast, brightness, gamma = (
            s.uniform(0.8, 1.2),
            s.uniform(-0.05, 0.05),
            s.uniform(0.8, 1.25),
        )
        value = np.clip((image[b] + exposure) * contrast + brightness, 0.0, 1.0) ** gamma
        image[b] = value + grain
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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
