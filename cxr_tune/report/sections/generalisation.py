"""Report sections: Generalisation (transfer to other datasets with the out-of-distribution
flag rate beside each, the shortcut probe, the saliency in the lungs) and the clinical metrics
of the best configurations (calibration before and after temperature scaling, operating points),
from ``evaluation.json``.

A difference is called clear only when its 95% interval leaves out zero; a probe flags a model
only when its interval says it scores above chance without the lungs; the saliency check flags
a model whose Grad-CAM maps are not clearly inside the lungs. An evaluation written before a
measure existed is shown with a line saying what it lacks.

The saliency overlays (images from the data) are linked, never embedded: a report carries no
image from a dataset (``tests/test_security.py``, promise 6).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cxr_tune.report.plots as plots
from cxr_tune.experiment import Experiment
from cxr_tune.report.context import Context
from cxr_tune.report.document import Bullets, Links, Paragraph, Section, fmt, fmt_ci, make_table
from cxr_tune.report.tables import best_entries


def generalisation_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """The transfer matrix, the drop from in-distribution to external, the shortcut probe, and
    one plain conclusion per cell."""
    section = Section("Generalisation")
    evaluation = exp.evaluation or {}
    if not evaluation:
        section.blocks.append(
            Paragraph(
                "No final evaluation yet (`evaluation.json`): transfer to other datasets and "
                f"the shortcut probe come with it (`python -m cxr_tune.evaluate {exp.folder}`)."
            )
        )
        return [section]
    transfers = list(evaluation.get("transfer", []))
    entries = best_entries(exp)
    section.blocks.append(Paragraph(_intro(evaluation, transfers)))
    sections = [section]
    if transfers:
        sections.append(_transfer_section(transfers, ctx))
        sections.append(_mapping_section(transfers, evaluation))
    sections.append(_ood_section(entries))
    sections.append(_probe_section(entries))
    sections.append(_saliency_section(exp, entries, ctx))
    sections.append(_conclusions_section(entries, transfers))
    return sections


def _intro(evaluation: Mapping[str, Any], transfers: Sequence[Mapping[str, Any]]) -> str:
    externals = evaluation.get("external_sets", [])
    text = (
        "Each cell's best configuration (every evaluation seed) scored outside its own test "
        "split: on the test split of every other dataset it shares classes with, on those "
        "classes only, and on its own test split with the lungs removed. An external set "
        "that no model trained on is scored whole (every usable image); a searched dataset, "
        "on its test split. Intervals are bootstrap 95% intervals over the images scored; a "
        "difference is called clear only when its interval leaves out zero."
    )
    if externals:
        names = ", ".join(_external_line(e) for e in externals)
        text += f" External sets (not searched): {names}."
    if not transfers:
        text += (
            " No transfer here: the experiment has one dataset and no external set shares two "
            "or more classes with it (`--external PATH` adds one)."
        )
    return text


def _external_line(external: Mapping[str, Any]) -> str:
    # Evaluations written before external sets were scored whole name their test split.
    images = external.get("images", external.get("test_images"))
    scored_on = external.get("scored_on", "test split")
    return f"`{external['name']}` ({external['source']}, {images} images: {scored_on})"


def _transfer_section(transfers: Sequence[Mapping[str, Any]], ctx: Context) -> Section:
    section = Section("Transfer matrix", level=3)
    rows = []
    for t in transfers:
        own, ext, drop = t["own"], t["external"], t["drop"]
        rows.append(
            [
                f"`{t['model']}`",
                f"`{t['train']}`",
                f"`{t['test']}`",
                ", ".join(t["classes"]),
                f"{fmt(own['macro_f1']['mean'])} {fmt_ci(own['macro_f1']['ci95'])}",
                f"{fmt(ext['macro_f1']['mean'])} {fmt_ci(ext['macro_f1']['ci95'])}",
                f"{fmt(drop['macro_f1']['mean'])} {fmt_ci(drop['macro_f1']['ci95'])}",
                f"{fmt(own['macro_auroc']['mean'])} → {fmt(ext['macro_auroc']['mean'])} "
                f"{fmt_ci(ext['macro_auroc']['ci95'])}",
                f"{own.get('images', '—')} / {ext.get('images', '—')}",
                _ood_pair(t.get("ood")),
                str(t.get("seeds", "")),
            ]
        )
    section.blocks.append(
        make_table(
            [
                "model",
                "trained on",
                "scored on",
                "shared classes",
                "macro-F1 own test [95% CI]",
                "macro-F1 external [95% CI]",
                "drop [95% CI]",
                "macro AUROC own → external [CI]",
                "n own / external",
                "OOD flagged own → external",
                "seeds",
            ],
            rows,
            "Both sides on the shared classes only (images of other classes left out; a model's "
            "probability of a left-out class is dropped and the rest renormalised). OOD flagged: "
            "the share of the images scored on each side (all of them, first seed, whatever their "
            "class) whose features lie beyond the "
            "validation split's 99th percentile of Mahalanobis distance; about 1% on images "
            "like the training data.",
        )
    )
    section.blocks.append(_sensitivity_table(transfers))
    section.blocks.append(
        ctx.figure(
            "transfer",
            "Macro-F1 on the shared classes, train dataset (rows) x test dataset (columns), per "
            "architecture; the diagonal is the model's own test split.",
            lambda path: plots.plot_transfer(transfers, path),
        )
    )
    return section


def _sensitivity_table(transfers: Sequence[Mapping[str, Any]]) -> Any:
    rows = []
    for t in transfers:
        for cls in t["classes"]:
            own = t["own"]["sensitivity"][cls]
            ext = t["external"]["sensitivity"][cls]
            rows.append(
                [
                    f"`{t['model']}`",
                    f"`{t['train']}` → `{t['test']}`",
                    cls,
                    f"{fmt(own['mean'])} {fmt_ci(own['ci95'])}",
                    f"{fmt(ext['mean'])} {fmt_ci(ext['ci95'])}",
                ]
            )
    return make_table(
        ["model", "transfer", "class", "sensitivity own test [CI]", "sensitivity external [CI]"],
        rows,
        "Per-class sensitivity (recall) on the shared classes.",
    )


def _mapping_section(
    transfers: Sequence[Mapping[str, Any]], evaluation: Mapping[str, Any]
) -> Section:
    section = Section("Label mappings used", level=3)
    sources = evaluation.get("label_maps", {}).get("sources", [])
    section.blocks.append(
        Paragraph(
            "Classes are put on shared classes by "
            + (" + ".join(f"`{s}`" for s in sources) or "the built-in label map")
            + "; what each transfer left out:"
        )
    )
    seen: set[tuple[str, str]] = set()
    lines: list[str] = []
    for t in transfers:
        pair = (str(t["train"]), str(t["test"]))
        if pair in seen:
            continue
        seen.add(pair)
        lines.extend(str(line).strip() for line in t.get("mapping_lines", []))
        left = t.get("left_out_images", {})
        lines.append(
            f"images left out: {left.get('own', 0)} of `{t['train']}`'s test split, "
            f"{left.get('external', 0)} of `{t['test']}`'s"
        )
    section.blocks.append(Bullets(tuple(lines)))
    return section


def _rate(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1%}"


def _ood_pair(ood: Mapping[str, Any] | None) -> str:
    if not ood or not ood.get("external"):
        return "—"
    return f"{_rate((ood.get('own') or {}).get('flag_rate'))} → {_rate(ood['external'].get('flag_rate'))}"


def _ood_section(entries: Mapping[str, Mapping[str, Any]]) -> Section:
    section = Section("Out-of-distribution flag", level=3)
    rows = []
    for cell, entry in entries.items():
        ood = entry.get("ood")
        if not ood:
            continue
        sets = [("own test split", ood.get("own") or {})]
        sets += [(f"`{name}`", value) for name, value in (ood.get("external") or {}).items()]
        for name, value in sets:
            rows.append(
                [
                    f"`{cell}`",
                    name,
                    str(value.get("images", "—")),
                    _rate(value.get("flag_rate")),
                    fmt(value.get("mean_distance"), 1),
                    fmt(ood.get("threshold"), 1),
                    fmt(value.get("separation_auroc")) if "separation_auroc" in value else "—",
                ]
            )
    if not rows:
        section.blocks.append(
            Paragraph(
                "No out-of-distribution statistics: this evaluation was written before they "
                "were measured (run `cxr-tune evaluate` again to add them)."
            )
        )
        return section
    section.blocks.append(
        make_table(
            [
                "cell",
                "test images of",
                "images",
                "flagged",
                "mean distance",
                "threshold",
                "AUROC vs own",
            ],
            rows,
            "Each best model's penultimate features (first seed): mean and Ledoit-Wolf shrunk "
            "covariance on the training split; an image is flagged when its Mahalanobis distance "
            "exceeds the validation split's 99th percentile (the threshold). Expect about 1% "
            "flagged on the own test split; much more on a set marks images unlike the training "
            "data, whose scores deserve less trust. With about 100 validation images the "
            "threshold is close to their largest distance, so a flag rate can be 0% on a set "
            "that lies clearly further away: 'AUROC vs own' says how well the distance tells "
            "the set's images from the own test split's, whatever the threshold (0.5: not at "
            "all).",
        )
    )
    return section


def _probe_section(entries: Mapping[str, Mapping[str, Any]]) -> Section:
    section = Section("Shortcut probe", level=3)
    rows = []
    for cell, entry in entries.items():
        probe = entry.get("probe")
        if not probe:
            continue
        auroc, f1 = probe["macro_auroc"], probe["macro_f1"]
        rows.append(
            [
                f"`{cell}`",
                probe["region"],
                f"{fmt(auroc['mean'])} {fmt_ci(auroc['ci95'])}",
                f"{fmt(f1['mean'])} {fmt_ci(f1['ci95'])}",
                "**likely uses shortcuts**" if probe["flagged"] else "no",
            ]
        )
    if not rows:
        section.blocks.append(Paragraph("No model was probed (an evaluation from before it)."))
        return section
    margin = next(iter(e["probe"]["margin"] for e in entries.values() if e.get("probe")))
    section.blocks.append(
        make_table(
            ["cell", "removed", "macro AUROC without lungs [95% CI]", "macro-F1 [95% CI]", "flag"],
            rows,
            f"Own test split with the lung field set to black. Chance AUROC is 0.5; a model is "
            f"flagged when the interval's lower end exceeds {0.5 + margin:.2f}. Lung masks are "
            "the dataset's own where it ships them; elsewhere a fixed central region is removed.",
        )
    )
    return section


def _saliency_section(
    exp: Experiment, entries: Mapping[str, Mapping[str, Any]], ctx: Context
) -> Section:
    section = Section("Saliency in the lungs", level=3)
    rows, missing = [], []
    for cell, entry in entries.items():
        saliency = entry.get("saliency")
        if not saliency:
            missing.append(cell)
            continue
        if not saliency.get("available"):
            rows.append([f"`{cell}`", "—", "—", "—", "—", "—", saliency.get("reason", "—"), ""])
            continue
        probe = entry.get("probe") or {}
        rows.append(
            [
                f"`{cell}`",
                f"{saliency['layer']} ({saliency['grid']}x{saliency['grid']})",
                str(saliency.get("images", "—")),
                _ci_text(saliency.get("share_in_lungs")),
                fmt((saliency.get("lung_share") or {}).get("mean")),
                _ci_text(saliency.get("difference")),
                "**not clearly in the lungs**" if saliency.get("flagged") else "no",
                ("**flagged**" if probe.get("flagged") else "no") if probe else "—",
            ]
        )
    if not rows:
        section.blocks.append(
            Paragraph(
                "No saliency: this evaluation was written before Grad-CAM was measured (run "
                "`cxr-tune evaluate` again to add it)."
            )
        )
        return section
    section.blocks.append(
        make_table(
            [
                "cell",
                "Grad-CAM block (grid)",
                "images",
                "saliency in lungs [95% CI]",
                "lungs' share of image",
                "difference [95% CI]",
                "saliency flag",
                "shortcut probe",
            ],
            rows,
            "Grad-CAM of the predicted class (first seed) on the test images with lung masks: "
            "the mean share of each map inside the lung mask, against the mask's share of the "
            "image (what an even spread would give). A model is flagged when the lower end of "
            "the difference's bootstrap 95% interval is not above 0. The block is the deepest "
            "whose map is at least 7 cells a side at the trained image size. On the phantom the "
            "flag told models that read a corner marker from others at 128 px, and did not at "
            "64 px (scripts/bench/README.md): on small images, read it with the overlays.",
        )
    )
    if missing:
        section.blocks.append(
            Paragraph(
                f"No saliency for {', '.join(f'`{c}`' for c in missing)}: evaluated before "
                "Grad-CAM was measured."
            )
        )
    section.blocks += _overlay_links(exp, entries, ctx)
    return section


def _overlay_links(
    exp: Experiment, entries: Mapping[str, Mapping[str, Any]], ctx: Context
) -> list[Any]:
    """Links to the overlay PNGs in the experiment folder, relative to the report."""
    items: list[tuple[str, str]] = []
    for cell, entry in entries.items():
        for path in (entry.get("files") or {}).get("overlays", []):
            target = Path(exp.folder) / path
            if target.is_file():
                items.append((f"{cell}: {Path(path).stem}", _relative(target, ctx.out)))
    if not items:
        return []
    return [
        Paragraph(
            "Overlays of a few test images per class, right and wrong (Grad-CAM over the "
            "image), are in the experiment folder, linked here rather than shown: they are "
            "images from the data, and this report carries none, so that it can be shared "
            "(the files stay with the data's owner)."
        ),
        Links(tuple(items)),
    ]


def _relative(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out.resolve())).as_posix()


def saliency_conclusion(cell: str, saliency: Mapping[str, Any]) -> str:
    """One sentence on where a cell's best model looks."""
    diff = saliency["difference"]
    text = (
        f"`{cell}` Grad-CAM ({saliency['layer']}): {fmt(saliency['share_in_lungs']['mean'])} of "
        f"the saliency in the lungs, which cover {fmt(saliency['lung_share']['mean'])} of the "
        f"image (difference {fmt(diff['mean'])} {fmt_ci(diff['ci95'])})"
    )
    if saliency.get("flagged"):
        return f"{text}: **not clearly inside the lungs**; look at the overlays."
    return f"{text}: concentrated in the lungs."


def _conclusions_section(
    entries: Mapping[str, Mapping[str, Any]], transfers: Sequence[Mapping[str, Any]]
) -> Section:
    section = Section("Conclusions per cell", level=3)
    lines = [transfer_conclusion(t) for t in transfers]
    lines += [probe_conclusion(cell, e["probe"]) for cell, e in entries.items() if e.get("probe")]
    lines += [
        saliency_conclusion(cell, e["saliency"])
        for cell, e in entries.items()
        if (e.get("saliency") or {}).get("available")
    ]
    section.blocks.append(Bullets(tuple(lines)) if lines else Paragraph("Nothing to conclude."))
    return section


def transfer_conclusion(t: Mapping[str, Any]) -> str:
    """One sentence: does the model hold up on the other dataset? Clear only if the interval
    of the drop leaves out zero."""
    drop = t["drop"]["macro_f1"]
    low, high = drop["ci95"]
    own, ext = t["own"]["macro_f1"]["mean"], t["external"]["macro_f1"]["mean"]
    head = (
        f"`{t['model']}` trained on `{t['train']}`, scored on `{t['test']}` "
        f"({', '.join(t['classes'])}): macro-F1 {fmt(own)} on its own test split, {fmt(ext)} "
        f"there"
    )
    if low > 0:
        return f"{head}: a clear drop of {fmt(drop['mean'])} [{fmt(low)}, {fmt(high)}]."
    if high < 0:
        return f"{head}: clearly better there, by {fmt(-drop['mean'])} [{fmt(-high)}, {fmt(-low)}]."
    return (
        f"{head}: no clear difference (drop {fmt(drop['mean'])}, interval [{fmt(low)}, "
        f"{fmt(high)}] includes zero)."
    )


def probe_conclusion(cell: str, probe: Mapping[str, Any]) -> str:
    """One sentence on the shortcut probe of a cell's best configuration."""
    auroc = probe["macro_auroc"]
    text = (
        f"`{cell}` without the lungs ({probe['region']}): macro AUROC {fmt(auroc['mean'])} "
        f"{fmt_ci(auroc['ci95'])}"
    )
    if probe["flagged"]:
        return (
            f"{text}: well above chance, so the model **likely uses shortcuts** outside the lungs."
        )
    return f"{text}: not clearly above {0.5 + probe['margin']:.2f}; no sign of a shortcut."


def clinical_sections(exp: Experiment, ctx: Context) -> list[Section]:
    """Per best configuration: sensitivity and specificity per class, calibration, the COVID
    class's specificity at high sensitivity, ROC, precision-recall and reliability plots."""
    section = Section("Clinical metrics")
    entries = {c: e for c, e in best_entries(exp).items() if e.get("clinical")}
    if not entries:
        section.blocks.append(
            Paragraph("No clinical metrics yet: they come with the final evaluation.")
        )
        return [section]
    section.blocks.append(
        Paragraph(
            "Test split, each cell's best configuration; point values are means over the "
            "evaluation seeds, intervals bootstrap 95% intervals over test images. Multi-class: "
            "one-vs-rest at the predicted class; multi-label: each label at probability 0.5. "
            "Expected calibration error (ECE) over 10 equal-width bins of the top-class "
            "probability (multi-label: of every label's probability)."
        )
    )
    section.blocks.append(_screening_table(entries))
    section.blocks.append(_operating_table(entries))
    sections = [section]
    for cell, entry in entries.items():
        sections.append(_clinical_cell(cell, entry, ctx))
    return sections


def _screening_table(entries: Mapping[str, Mapping[str, Any]]) -> Any:
    rows = []
    for cell, entry in entries.items():
        clinical = entry["clinical"]
        positive = clinical.get("positive_class") or {}
        calibration = clinical.get("calibration") or {}
        rows.append(
            [
                f"`{cell}`",
                f"{fmt(clinical['ece']['mean'])} {fmt_ci(clinical['ece']['ci95'])}",
                _ci_text(calibration.get("after")),
                _ci_text(calibration.get("difference")),
                _temperatures(calibration.get("temperatures")),
                positive.get("class", "—"),
                _ci_text(positive.get("specificity_at_sensitivity_90")),
                _ci_text(positive.get("specificity_at_sensitivity_95")),
            ]
        )
    return make_table(
        [
            "cell",
            "ECE [95% CI]",
            "ECE after temperature scaling",
            "after − before",
            "temperature(s)",
            "COVID class",
            "specificity at 90% sensitivity",
            "at 95%",
        ],
        rows,
        "ECE before and after temperature scaling (one temperature per model, one per label "
        "for multi-label data, fitted on the validation split's negative log-likelihood, Guo "
        "et al. 2017), on the same bootstrap resamples of the test split, so that 'after − "
        "before' is a paired difference; a dash where the evaluation predates calibration. "
        "Specificity at a sensitivity: the best specificity of any threshold on the COVID "
        "class's probability that still finds that share of COVID images (chosen on the test "
        "split itself: an optimistic bound; the operating points below choose on validation).",
    )


def _temperatures(values: Any) -> str:
    """Per seed: the temperature, or the labels' temperatures joined by '/'."""
    if not values:
        return "—"
    return "; ".join("/".join(f"{float(t):.3g}" for t in seed) for seed in values)


def _operating_table(entries: Mapping[str, Mapping[str, Any]]) -> Any:
    rows = []
    for cell, entry in entries.items():
        points = entry["clinical"].get("operating_points")
        if not points:
            continue
        for target, point in points["targets"].items():
            threshold = point.get("threshold")
            rows.append(
                [
                    f"`{cell}`",
                    points["class"],
                    f"{float(target):.0%}",
                    "—" if threshold is None else f"{float(threshold):.4g}",
                    _ci_text(point.get("sensitivity")),
                    _ci_text(point.get("specificity")),
                ]
            )
    if not rows:
        return Paragraph(
            "No operating points: no COVID class, or the evaluation predates calibration (run "
            "`cxr-tune evaluate` again to add them)."
        )
    return make_table(
        [
            "cell",
            "class",
            "target sensitivity",
            "threshold (validation)",
            "test sensitivity [95% CI]",
            "test specificity [95% CI]",
        ],
        rows,
        "Operating points for screening: the threshold on the calibrated COVID probability is "
        "chosen on the validation split (the highest that reaches the target sensitivity "
        "there; first seed shown, each seed uses its own), then applied once to the test "
        "split. The model package flags COVID at the 95% point by default.",
    )


def _ci_text(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "—"
    return f"{fmt(value['mean'])} {fmt_ci(value['ci95'])}"


def _clinical_cell(cell: str, entry: Mapping[str, Any], ctx: Context) -> Section:
    clinical = entry["clinical"]
    section = Section(f"{cell}: clinical metrics", level=3)
    rows = [
        [row["class"], _ci_text(row["sensitivity"]), _ci_text(row["specificity"])]
        for row in clinical["per_class"]
    ]
    section.blocks.append(
        make_table(["class", "sensitivity [95% CI]", "specificity [95% CI]"], rows)
    )
    section.blocks.append(
        ctx.figure(
            f"roc-{plots.slug(cell)}",
            f"{cell}: one-vs-rest ROC and precision-recall curves per class "
            f"({clinical.get('curves_from', '')}).",
            lambda path: plots.plot_roc_pr(clinical, cell, path),
        )
    )
    section.blocks.append(
        ctx.figure(
            f"reliability-{plots.slug(cell)}",
            f"{cell}: reliability diagram (accuracy against confidence per bin; the diagonal "
            "is perfect calibration), ECE "
            f"{fmt(clinical['ece']['mean'])} {fmt_ci(clinical['ece']['ci95'])}.",
            lambda path: plots.plot_reliability(clinical, cell, path),
        )
    )
    return section
