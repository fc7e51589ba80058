"""``docs/README.md``: a model card (Mitchell et al., 2019) rendered from a plain dict of facts.

The sections are the paper's: model details, intended use, factors, metrics, evaluation data,
training data, quantitative analyses, ethical considerations, caveats and recommendations. The
card says what it is given and says plainly what it was not given ("not evaluated"), so a
missing result never reads as a good one. Whatever the facts, it states that the model is not
for clinical use; when the shortcut probe or the saliency check flagged the model, or its
external results dropped, it says so in the caveats as well as in the numbers.

Facts (every key optional but ``name``, ``architecture``, ``classes``)::

    name, version, date, architecture, task ("multiclass" | "multilabel"), classes, image_size,
    dataset: {name, hash, split_hash, sizes: {train, val, test}, description},
    search: {space, trials, metric, cells}, configuration: {lr, batch_size, ...},
    metrics: {accuracy: {mean, ci95: [lo, hi]}, ...},            # own test split
    external: [{dataset, metric, own: {mean, ci95}, external: {mean, ci95}, drop: {mean, ci95}}],
    probe: {flagged, region, macro_auroc: {mean, ci95}},
    saliency: {flagged, share_in_lungs: {mean, ci95}, lung_share: {mean, ci95},
               difference: {mean, ci95}, images},
    calibration: {temperatures: [...], ece_before: {mean, ci95}, ece_after: {mean, ci95}},
    operating_points: {class, thresholds: {"0.9": t, "0.95": t},
                       specificity_at_sensitivity_90: {mean, ci95}, ...},
    ood: {threshold, percentile, rates: {dataset: rate}},
    versions: {torch, torchvision, cxr_tune}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

NOT_CLINICAL = (
    "**Not for clinical use.** This model is a research artefact of a hyperparameter search. "
    "It has not been validated prospectively, cleared by any regulator, or tested on the "
    "population, scanners and protocols of any hospital. Do not use it to diagnose, triage or "
    "treat anyone."
)
NOT_EVALUATED = "not evaluated"


def render_model_card(facts: Mapping[str, Any]) -> str:
    """The model card of one exported model, as Markdown."""
    sections = [
        f"# Model card: {facts['name']}",
        NOT_CLINICAL,
        _model_details(facts),
        _intended_use(),
        _factors(facts),
        _metrics(facts),
        _evaluation_data(facts),
        _training_data(facts),
        _quantitative(facts),
        _ethics(),
        _caveats(facts),
    ]
    return "\n\n".join(s.strip() for s in sections if s) + "\n"


def _model_details(facts: Mapping[str, Any]) -> str:
    classes = ", ".join(str(c) for c in facts["classes"])
    task = facts.get("task", "multiclass")
    output = "one probability per label (sigmoid)" if task == "multilabel" else "softmax"
    lines = [
        "## Model details",
        f"- Architecture: {facts['architecture']} (torchvision), trained from "
        f"{'ImageNet weights' if _config(facts).get('pretrained') else 'random initialisation'}.",
        f"- Task: {task}; outputs ({output}): {classes}.",
        f"- Input: one grayscale radiograph, decoded to 8 bits and resized to "
        f"{facts.get('image_size', '?')} px (shorter side, then the centre square).",
        f"- Version {facts.get('version', '0.1.0')}, exported {facts.get('date', 'unknown date')}.",
    ]
    search = facts.get("search") or {}
    if search:
        lines.append(
            f"- Chosen by a hyperparameter search (space `{search.get('space', '?')}`, "
            f"{search.get('trials', '?')} trials, selected on {search.get('metric', '?')} on "
            "the validation split)."
        )
    config = _config(facts)
    if config:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
        lines.append(f"- Configuration: {shown}.")
    versions = facts.get("versions") or {}
    if versions:
        lines.append("- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    lines.append(
        "- Files: `models/model.ts` (TorchScript: preprocessing, network and calibration; "
        "`torch.jit.load` is enough), `models/model.pt` (state dict), `configs/metadata.json`, "
        "`configs/inference.json` (MONAI bundle runner)."
    )
    return "\n".join(lines)


def _intended_use() -> str:
    return "\n".join(
        [
            "## Intended use",
            "- Primary use: research on chest X-ray classification: comparing architectures "
            "and training settings, studying shortcuts, transfer between datasets and "
            "calibration.",
            "- Primary users: machine-learning researchers.",
            "- Out of scope: any clinical decision, screening or triage; images that are not "
            "frontal chest radiographs; populations and sites unlike the training data.",
        ]
    )


def _factors(facts: Mapping[str, Any]) -> str:
    dataset = (facts.get("dataset") or {}).get("name", "the training dataset")
    return "\n".join(
        [
            "## Factors",
            f"- Acquisition site and device: the model saw only {dataset}; other sites differ "
            "in contrast, noise, field of view and burned-in text or markers (see the external "
            "results below).",
            "- Population: age, sex and disease mix of the training data; a class whose images "
            "come from one source can be told apart by its source rather than its disease.",
            "- Image handling: view (PA/AP), inversion, windowing of DICOM files, crops.",
        ]
    )


def _metrics(facts: Mapping[str, Any]) -> str:
    return "\n".join(
        [
            "## Metrics",
            "- Accuracy, macro precision, recall and F1 (macro AUROC for multi-label data) on "
            "the held-out test split, with 95% bootstrap intervals over the test images.",
            "- Per-class sensitivity and specificity; the COVID class's specificity at 90% and "
            "95% sensitivity (the operating points).",
            "- Expected calibration error before and after temperature scaling.",
            "- Shortcut probe: the macro AUROC with the lungs removed from the images; saliency "
            "check: the share of Grad-CAM saliency inside the lung fields.",
            "- Out-of-distribution flag: the Mahalanobis distance of the penultimate features to "
            "the training images' above the validation split's 99th percentile.",
        ]
    )


def _evaluation_data(facts: Mapping[str, Any]) -> str:
    dataset = facts.get("dataset") or {}
    sizes = dataset.get("sizes") or {}
    lines = ["## Evaluation data"]
    lines.append(
        f"- Own test split of {dataset.get('name', 'the training dataset')}: "
        f"{sizes.get('test', '?')} images, split by patient (or near-duplicate cluster) from "
        "the training and validation images, read once by the final evaluation."
    )
    external = facts.get("external") or []
    names = sorted({str(row.get("dataset")) for row in external})
    lines.append(
        "- External sets: " + (", ".join(names) if names else NOT_EVALUATED + " (none given)") + "."
    )
    return "\n".join(lines)


def _training_data(facts: Mapping[str, Any]) -> str:
    dataset = facts.get("dataset") or {}
    sizes = dataset.get("sizes") or {}
    lines = [
        "## Training data",
        f"- {dataset.get('name', 'unknown')}"
        + (f": {dataset['description']}" if dataset.get("description") else "")
        + f" ({sizes.get('train', '?')} training and {sizes.get('val', '?')} validation images).",
    ]
    if dataset.get("hash") or dataset.get("split_hash"):
        lines.append(
            f"- Dataset hash `{dataset.get('hash', '?')}`, split hash "
            f"`{dataset.get('split_hash', '?')}`."
        )
    return "\n".join(lines)


def _quantitative(facts: Mapping[str, Any]) -> str:
    lines = ["## Quantitative analyses", "### Own test split"]
    metrics = facts.get("metrics") or {}
    if metrics:
        lines += ["| metric | value (95% interval) |", "| --- | --- |"]
        lines += [f"| {name} | {_value(v)} |" for name, v in metrics.items()]
    else:
        lines.append(NOT_EVALUATED + ".")
    lines += ["", "### External results"]
    external = facts.get("external") or []
    if external:
        lines += ["| dataset | metric | own | external | drop |", "| --- | --- | --- | --- | --- |"]
        for row in external:
            lines.append(
                f"| {row.get('dataset')} | {row.get('metric', 'macro_f1')} | "
                f"{_value(row.get('own'))} | {_value(row.get('external'))} | "
                f"{_value(row.get('drop'))} |"
            )
    else:
        lines.append(NOT_EVALUATED + ": no external dataset was scored.")
    lines += ["", "### Shortcut probe and saliency", _probe_line(facts), _saliency_line(facts)]
    lines += ["", "### Calibration and operating points", _calibration_line(facts)]
    lines.append(_operating_line(facts))
    lines += ["", "### Out-of-distribution flag", _ood_line(facts)]
    return "\n".join(lines)


def _probe_line(facts: Mapping[str, Any]) -> str:
    probe = facts.get("probe")
    if not probe:
        return "- Shortcut probe: " + NOT_EVALUATED + "."
    verdict = (
        "**FLAGGED**: the model still tells the classes apart with the lungs removed, so it "
        "likely uses something outside them (markers, borders, the source collection)"
        if probe.get("flagged")
        else "not flagged: with the lungs removed the model is near chance"
    )
    return (
        f"- Shortcut probe ({probe.get('region', 'lungs removed')}): macro AUROC "
        f"{_value(probe.get('macro_auroc'))}; {verdict}."
    )


def _saliency_line(facts: Mapping[str, Any]) -> str:
    saliency = facts.get("saliency")
    if not saliency:
        return "- Saliency (Grad-CAM) in the lungs: " + NOT_EVALUATED + "."
    verdict = (
        "**FLAGGED**: the saliency is not clearly inside the lungs"
        if saliency.get("flagged")
        else "not flagged: the saliency is concentrated in the lungs"
    )
    return (
        f"- Saliency (Grad-CAM) in the lungs: {_value(saliency.get('share_in_lungs'))} of the "
        f"saliency against {_value(saliency.get('lung_share'))} of the image covered by the "
        f"lungs (difference {_value(saliency.get('difference'))}, "
        f"{saliency.get('images', '?')} images); {verdict}."
    )


def _calibration_line(facts: Mapping[str, Any]) -> str:
    calibration = facts.get("calibration")
    if not calibration:
        return "- Calibration: " + NOT_EVALUATED + "."
    temperatures = ", ".join(f"{t:.3g}" for t in calibration.get("temperatures", []))
    return (
        f"- Temperature scaling (fitted on the validation split): T = {temperatures or '?'}; "
        f"expected calibration error on the test split {_value(calibration.get('ece_before'))} "
        f"before, {_value(calibration.get('ece_after'))} after."
    )


def _operating_line(facts: Mapping[str, Any]) -> str:
    points = facts.get("operating_points")
    if not points:
        return "- Operating points: " + NOT_EVALUATED + "."
    parts = []
    for target in ("90", "95"):
        spec = points.get(f"specificity_at_sensitivity_{target}")
        thresholds = points.get("thresholds") or {}
        # Keyed by the sensitivity as a fraction: "0.9" (as the evaluation writes it) or "0.90".
        threshold = thresholds.get(f"{int(target) / 100:g}", thresholds.get(f"0.{target}"))
        if spec is None and threshold is None:
            continue
        text = f"at {target}% sensitivity: specificity {_value(spec)}"
        if threshold is not None:
            text += f" (threshold {float(threshold):.3g})"
        parts.append(text)
    label = points.get("class", "covid")
    return f"- Operating points for {label}: " + ("; ".join(parts) or NOT_EVALUATED) + "."


def _ood_line(facts: Mapping[str, Any]) -> str:
    ood = facts.get("ood")
    if not ood:
        return "- " + NOT_EVALUATED + "."
    line = (
        f"- Threshold {float(ood.get('threshold', math.nan)):.4g} (the validation split's "
        f"{ood.get('percentile', 99):g}th percentile of the distance)."
    )
    rates = ood.get("rates") or {}
    if rates:
        line += " Flag rates: " + ", ".join(f"{k} {float(v):.1%}" for k, v in rates.items()) + "."
    return line


def _ethics() -> str:
    return "\n".join(
        [
            "## Ethical considerations",
            "- Trained on public or generated images; no patient data ships with the model. "
            "Public chest X-ray collections mix sources by class, so a model can learn the "
            "source (site, age group, burned-in text) rather than the disease.",
            "- A wrong output can harm a patient if it is trusted: a missed COVID-19 or "
            "pneumonia, or a false alarm. Hence: not for clinical use.",
            "- DICOM files are read for their pixels only; no header value is kept.",
        ]
    )


def _caveats(facts: Mapping[str, Any]) -> str:
    lines = ["## Caveats and recommendations", "- " + NOT_CLINICAL.replace("**", "")]
    if (facts.get("probe") or {}).get("flagged"):
        lines.append(
            "- The shortcut probe flagged this model: do not trust its scores on data whose "
            "markers, borders or sources differ from the training data's."
        )
    if (facts.get("saliency") or {}).get("flagged"):
        lines.append(
            "- The saliency check flagged this model: its Grad-CAM maps are not clearly inside "
            "the lung fields; look at the overlays before believing any score."
        )
    drops = [row for row in facts.get("external") or [] if _clear_drop(row.get("drop"))]
    for row in drops:
        lines.append(
            f"- On {row.get('dataset')} its {row.get('metric', 'macro_f1')} dropped by "
            f"{_value(row.get('drop'))}: expect worse results on other sites."
        )
    if not facts.get("external"):
        lines.append(
            "- It was not scored on any external dataset: its performance on another site is "
            "unknown."
        )
    lines.append(
        "- Flag images whose out-of-distribution distance is above the threshold rather than "
        "trusting their probabilities; check calibration on your own data before using the "
        "probabilities as risks."
    )
    return "\n".join(lines)


def _config(facts: Mapping[str, Any]) -> Mapping[str, Any]:
    return facts.get("configuration") or {}


def _clear_drop(drop: Any) -> bool:
    if not isinstance(drop, Mapping):
        return False
    low = (drop.get("ci95") or [math.nan])[0]
    return isinstance(low, (int, float)) and math.isfinite(low) and low > 0


def _value(value: Any) -> str:
    """``0.912 (0.871-0.950)`` from ``{mean, ci95}``; a bare number as is; missing as a dash."""
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        mean = value.get("mean")
        ci = value.get("ci95") or []
        text = _number(mean)
        if _finite_pair(ci):
            text += f" ({_number(ci[0])} to {_number(ci[1])})"
        return text
    return _number(value)


def _finite_pair(ci: Sequence[Any]) -> bool:
    return len(ci) == 2 and all(isinstance(c, (int, float)) and math.isfinite(c) for c in ci)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value) if value is not None else "-"
    return "-" if not math.isfinite(value) else f"{value:.3f}"
