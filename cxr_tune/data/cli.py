"""``cxr-tune data inspect|prepare|labels [KEY=]PATH`` (also ``python -m cxr_tune.data``): look
at a dataset, decode it once, see how datasets map onto shared classes.

``inspect`` prepares the cache (or reuses it) and prints what was found: the layout and why,
images per class and split, image modes and sizes (of every decoded image), skipped files per
reason, notes, and the leakage audit of the split. ``prepare`` decodes into the cache and says
where and how long. ``labels`` shows how datasets map onto the shared classes of a transfer
(``cxr_tune/data/label_maps.yaml``, or ``--label-map FILE`` over it). ``cxr_tune.cli`` runs
these commands: bad input prints one line on stderr
and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cxr_tune.constants import DEFAULT_IMAGE_SIZE, DEFAULT_MIN_LABEL_POSITIVES, DEFAULT_SPLIT_MODE

# Heavy modules (numpy, PIL, the parsers) are imported after argument parsing: --help is instant.
DESCRIPTION = "Inspect a dataset folder, or decode it once into the cache."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``data`` command's subcommands and options."""
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    inspect = commands.add_parser("inspect", help="counts, modes, sizes, skips, leakage audit")
    prepare = commands.add_parser("prepare", help="decode every image once into the cache")
    for sub in (inspect, prepare):
        sub.add_argument("path", help="dataset folder, or KEY=PATH to force a layout")
        sub.add_argument("--data-key", help="force a layout (same as KEY=PATH)")
        sub.add_argument(
            "--image-size",
            type=int,
            default=DEFAULT_IMAGE_SIZE,
            help=f"cache image side ({DEFAULT_IMAGE_SIZE})",
        )
        sub.add_argument("--cache-dir", help="cache folder ($CXR_TUNE_CACHE or ~/.cache/cxr_tune)")
        sub.add_argument("--seed", type=int, default=0, help="split seed (0)")
        sub.add_argument("--workers", type=int, default=0, help="decoding processes (0: auto)")
        sub.add_argument(
            "--views",
            help="covid_chestxray, nih_chestxray14, chexpert: comma-separated views to keep "
            "(default: frontal)",
        )
        sub.add_argument(
            "--uncertain",
            help="chexpert: uncertain labels (-1) count as ones, zeros, or are ignored "
            "(masked in the loss and metrics; the default)",
        )
        sub.add_argument(
            "--split",
            default=DEFAULT_SPLIT_MODE,
            help="a dataset's own split (train/ and test/ folders, ...): grouped (default) moves "
            "images to keep patients and near-duplicates whole; published keeps it exactly",
        )
        sub.add_argument(
            "--min-label-positives",
            type=int,
            default=DEFAULT_MIN_LABEL_POSITIVES,
            help="multi-label datasets: a label is kept when it has this many positive images "
            f"in every split (default: {DEFAULT_MIN_LABEL_POSITIVES})",
        )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    labels = commands.add_parser(
        "labels", help="each dataset's classes on the shared classes, and what two datasets share"
    )
    labels.add_argument("paths", nargs="+", help="dataset folders ([KEY=]PATH) or phantom")
    labels.add_argument("--label-map", help="your own label-map YAML, laid over the built-in one")


def run(args: argparse.Namespace) -> int:
    """Run ``data inspect``, ``data prepare`` or ``data labels``; returns the exit code."""
    if args.data_command == "labels":
        return run_labels(args.paths, args.label_map)
    from cxr_tune.data.options import DataOptions, default_cache_dir
    from cxr_tune.data.prepare import prepare
    from cxr_tune.data.published import check_split_mode
    from cxr_tune.errors import ConfigError

    if args.image_size < 8:
        raise ConfigError(f"--image-size: the value is {args.image_size}, but must be >= 8.")
    if args.min_label_positives < 1:
        raise ConfigError(
            f"--min-label-positives: the value is {args.min_label_positives}, but must be >= 1."
        )
    source = parse_source(args.path, args.data_key)
    options = DataOptions(
        image_size=args.image_size,
        seed=args.seed,
        cache_dir=Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir(),
        workers=args.workers,
        parser_options=_parser_options(args),
        split=check_split_mode(args.split),
        min_label_positives=args.min_label_positives,
    )
    entry = prepare(source, options, progress=None)
    if args.data_command == "prepare":
        print(_prepared_line(entry))
        return 0
    summary = summarise(entry)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def run_labels(paths: list[str], label_map: str | None) -> int:
    """Print each dataset's mapping onto the shared classes and, for every ordered pair, what a
    transfer between them scores and leaves out."""
    from cxr_tune.config import DataSource, is_builtin_name
    from cxr_tune.data.labelmap import classes_of, load_label_maps, map_dataset, shared_classes

    maps = load_label_maps(label_map)
    datasets = []
    for text in paths:
        source = DataSource(text, None) if is_builtin_name(text) else parse_source(text, None)
        found = classes_of(source)
        datasets.append(found)
        side = map_dataset(found, maps)
        shown = ", ".join(
            f"{own} -> {shared or '(left out)'}" for own, shared in side.shared.items()
        )
        print(f"{found.name} ({found.task}): {shown}")
    print(f"mapping: {' + '.join(maps.sources)}")
    for train in datasets:
        for test in datasets:
            if train is not test:
                print("\n".join(shared_classes(train, test, maps).describe()))
    return 0


def _parser_options(args: argparse.Namespace) -> dict[str, Any]:
    """The layout options given on the command line (checked by the layout that reads them)."""
    given = {"views": args.views, "uncertain": args.uncertain}
    return {name: value for name, value in given.items() if value is not None}


def parse_source(text: str, key: str | None) -> Any:
    """``[KEY=]PATH`` (as ``--data`` takes it) -> DataSource; ``--data-key`` wins over KEY=."""
    from cxr_tune.config import DataSource
    from cxr_tune.errors import DataError

    head, sep, tail = text.partition("=")
    raw = text
    if sep and head and head.replace("_", "").isalnum() and not Path(text).exists():
        key, raw = key or head, tail
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataError(f"The folder '{raw}' does not exist.")
    if not path.is_dir():
        raise DataError(f"'{raw}' is not a folder; give a dataset's root folder.")
    return DataSource(key=key, path=path.resolve())


def _prepared_line(entry: Any) -> str:
    sizes = entry.meta["sizes"]
    action = "decoded" if entry.built else "reused cache"
    return (
        f"{entry.meta['dataset']}: {action} {sum(sizes.values())} images "
        f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']}) at "
        f"{entry.meta['image_size']} px in {entry.seconds:.1f} s -> {entry.path}"
    )


def summarise(entry: Any) -> dict[str, Any]:
    """Everything ``inspect`` shows, as one JSON-able dict."""
    meta = entry.meta
    split = entry.split_info()
    return {
        "dataset": meta["dataset"],
        "title": meta["title"],
        "root": meta["root"],
        "detected": entry.detection.reason,
        "task": meta["task"],
        "classes": meta["classes"],
        "image_size": meta["image_size"],
        "cache": {"path": str(entry.path), "built_now": entry.built, "seconds": entry.seconds},
        "sizes": meta["sizes"],
        "counts": meta["counts"],
        "image_modes": meta["image_modes"],
        "image_sizes": meta["image_sizes"],
        "image_stats_from": f"all {meta['image_sizes'].get('images', 0)} decoded images",
        "skipped": entry.skipped(),
        "labels_dropped": meta["labels_dropped"],
        "uncertain_policy": meta.get("uncertain_policy"),
        "masked_labels": meta.get("masked_labels", 0),
        "notes": meta["notes"],
        "split": {
            "hash": split["hash"],
            "seed": split["seed"],
            "fractions": split["fractions"],
            "fixed_by_layout": split["fixed_by_layout"],
            "mode": split["mode"],
            "published": split["published"],
            "patient_ids_from_names": split["patient_ids_from_names"],
        },
        "leakage_audit": {**split["audit"], **split["near_duplicates"]},
        "dataset_hash": meta["dataset_hash"],
    }


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable ``inspect`` report."""
    cache = s["cache"]
    lines = [
        f"{s['dataset']}: {s['title']}",
        f"  folder:   {s['root']}",
        f"  detected: {s['detected']}",
        f"  task:     {s['task']}, {len(s['classes'])} "
        f"{'labels' if s['task'] == 'multilabel' else 'classes'}, cache images {s['image_size']} px",
        f"  cache:    {cache['path']} ({'built now' if cache['built_now'] else 'reused'}, "
        f"{cache['seconds']:.1f} s)",
        *_policy_lines(s),
        "",
        _count_table(s),
        "",
        f"Image modes ({s['image_stats_from']}): "
        + ", ".join(f"{mode} {n}" for mode, n in s["image_modes"].items()),
        _size_line(s["image_sizes"]),
        "",
        _skip_lines(s["skipped"]),
    ]
    if s["notes"]:
        lines += ["", "Notes:"] + [f"  - {note}" for note in s["notes"]]
    audit = s["leakage_audit"]
    lines += [
        "",
        f"Leakage audit: {audit['groups']} groups ({audit['patient_groups']} by patient id, "
        f"{audit.get('exact_copies', 0)} exact pixel copies, "
        f"{audit['near_duplicate_pairs']} near-duplicate pairs at similarity >= "
        f"{audit['min_similarity']}, largest group {audit['largest_cluster']} images, "
        f"{audit['refused_merges']} merges refused by the size cap); "
        f"{audit['crossing']} groups cross splits"
        + (f" (e.g. {', '.join(audit['examples'])})" if audit["crossing"] else "")
        + ".",
        f"Split: hash {s['split']['hash']}, seed {s['split']['seed']}, fractions "
        f"{'/'.join(str(f) for f in s['split']['fractions'])}" + _published_line(s["split"]),
        f"Dataset hash: {s['dataset_hash']}",
    ]
    return "\n".join(lines)


def _published_line(split: dict[str, Any]) -> str:
    """What became of the dataset's own split (the notes above give the counts)."""
    audit = split.get("published")
    if not audit:
        return ""
    if audit["mode"] == "published":
        return "; the dataset's published split kept exactly (--split published)"
    return (
        f"; the dataset's published split regrouped (--split grouped): "
        f"{audit['moved_total']} images moved, {audit['crossing_pairs_same_patient']} "
        f"same-patient and {audit['crossing_pairs_near_duplicate']} near-duplicate pairs "
        "crossed it"
    )


def _policy_lines(s: dict[str, Any]) -> list[str]:
    if not s.get("uncertain_policy"):
        return []
    return [
        f"  uncertain labels: {s['uncertain_policy']} "
        f"({s['masked_labels']} label values masked in the loss and metrics)"
    ]


def _count_table(s: dict[str, Any]) -> str:
    splits = ("train", "val", "test")
    what = "positives per label" if s["task"] == "multilabel" else "images per class"
    width = max([len(c) for c in s["classes"]] + [len("total")]) + 2
    lines = [f"Counts ({what}):", " " * width + "".join(f"{h:>8}" for h in (*splits, "total"))]
    for name in s["classes"]:
        row = [s["counts"][sp][name] for sp in splits]
        lines.append(f"{name:<{width}}" + "".join(f"{v:>8}" for v in (*row, sum(row))))
    sizes = [s["sizes"][sp] for sp in splits]
    lines.append(f"{'images':<{width}}" + "".join(f"{v:>8}" for v in (*sizes, sum(sizes))))
    return "\n".join(lines)


def _size_line(sizes: dict[str, Any]) -> str:
    if not sizes:
        return "Image sizes: none"
    common = ", ".join(f"{size} x{n}" for size, n in sizes["most_common"])
    return (
        f"Image sizes (w x h): min {sizes['min'][0]}x{sizes['min'][1]}, median "
        f"{sizes['median'][0]}x{sizes['median'][1]}, max {sizes['max'][0]}x{sizes['max'][1]}; "
        f"most common {common}"
    )


def _skip_lines(skipped: dict[str, Any]) -> str:
    if not skipped["total"]:
        return "Skipped files: none"
    lines = [f"Skipped files: {skipped['total']}"]
    for reason, count in skipped["counts"].items():
        example = skipped["examples"].get(reason, [])
        lines.append(f"  {reason}: {count}" + (f" (e.g. {example[0]})" if example else ""))
    return "\n".join(lines)
