"""Does the saliency flag tell a model that reads the phantom's corner marker from one that does
not, and at which Grad-CAM block? AlexNet trained by the trials' own loop on ``phantom`` and on
``phantom_marker`` (the shortcut probe's recipe: Adam, lr 3e-4, batch 32, no augmentation),
several seeds; for each model, Grad-CAM of the predicted class at every declared block on the
test split, the share of saliency in the lung masks against the lungs' share of the image
(``cxr_tune.saliency.lung_saliency``), and which block ``choose_layer`` picks at that size.

    python scripts/bench/saliency_layers.py                     # 64 px, seeds 0-2, 3 epochs
    python scripts/bench/saliency_layers.py --quick             # 1 seed, 1 epoch, 320 images

Prints a table and writes ``scripts/bench/results/saliency_layers.json``. Trains 2 x seeds
models: about a minute each at 64 px on two cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench.common import RESULTS, format_table, machine_description, write_result  # noqa: E402

RECIPE = {"optimizer": "adam", "lr": 3e-4, "batch_size": 32, "augment": "none"}
DATASETS = ("phantom", "phantom_marker")


def train(dataset: Any, model: str, seed: int, epochs: int) -> Any:
    """The trials' loop on the CPU in fp32, without a validation split (as the evaluation)."""
    import torch

    from cxr_tune.config import TrialConfig
    from cxr_tune.engine import build_state, loop_settings, place_split, train_epochs

    cfg = TrialConfig.from_dict(
        {**RECIPE, "model": model, "epochs": epochs, "image_size": dataset.image_size,
         "dataset": dataset.name, "seed": seed}
    )  # fmt: skip
    device = torch.device("cpu")
    state = build_state(cfg, dataset, device)
    split = place_split(dataset.split("train"), device, dataset.task)
    for _ in train_epochs(state, cfg, dataset, split, None, loop_settings(device, "fp32")):
        pass
    return state.model.eval()


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from cxr_tune.config import DataSource
    from cxr_tune.data import DataOptions, load_dataset
    from cxr_tune.engine import LoopSettings
    from cxr_tune.saliency import choose_layer, lung_saliency, saliency_maps, target_layers

    cpu = LoopSettings(device=torch.device("cpu"))
    rows = []
    for name in DATASETS:
        options = DataOptions(image_size=args.size, phantom_images=args.images)
        arrays = load_dataset(DataSource(name, None), options)
        test = arrays.split("test")
        masks = np.asarray(test.masks)
        for seed in args.seeds:
            started = time.process_time()
            model = train(arrays, args.model, seed, args.epochs)
            trained_cpu = time.process_time() - started
            with torch.no_grad():
                from cxr_tune.engine import prepare_batch

                logits = model(prepare_batch(torch.as_tensor(test.images), cpu))
            accuracy = float((logits.argmax(1).numpy() == np.asarray(test.labels)).mean())
            chosen = choose_layer(model, args.model, args.size)
            for layer in target_layers(args.model):
                maps, _ = saliency_maps(model, args.model, test.images, settings=cpu, layer=layer)
                found = lung_saliency(maps, masks, rounds=1000, seed=0)
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "layer": layer,
                        "grid": _grid(model, layer, args),
                        "chosen": layer == chosen.name,
                        "test_accuracy": round(accuracy, 4),
                        "share_in_lungs": round(found.share_in_lungs["mean"], 4),
                        "lung_share": round(found.lung_share["mean"], 4),
                        "difference": round(found.difference["mean"], 4),
                        "difference_ci95": [round(v, 4) for v in found.difference["ci95"]],
                        "flagged": found.flagged,
                        "images": found.images,
                        "train_cpu_s": round(trained_cpu, 1),
                    }
                )
            print(f"{name} seed {seed}: trained in {trained_cpu:.0f} s of CPU", flush=True)
    return rows


def _grid(model: Any, layer: str, args: argparse.Namespace) -> int:
    from cxr_tune.saliency import layer_grids

    return layer_grids(model, args.model, args.size)[layer]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per block: does the flag fire on every marker model and on no plain-phantom model?"""
    out: dict[str, Any] = {}
    for layer in dict.fromkeys(r["layer"] for r in rows):  # in the order measured
        marker = [r["flagged"] for r in rows if r["layer"] == layer and r["dataset"] == DATASETS[1]]
        plain = [r["flagged"] for r in rows if r["layer"] == layer and r["dataset"] == DATASETS[0]]
        out[layer] = {
            "marker_flagged": f"{sum(marker)}/{len(marker)}",
            "phantom_flagged": f"{sum(plain)}/{len(plain)}",
            "separates": bool(marker and plain and all(marker) and not any(plain)),
        }
    return out


def _table_row(r: dict[str, Any]) -> list[Any]:
    return [
        r["dataset"], r["seed"], r["layer"], f"{r['grid']}x{r['grid']}",
        "yes" if r["chosen"] else "", r["test_accuracy"], r["share_in_lungs"], r["lung_share"],
        f"{r['difference']} {r['difference_ci95']}", "yes" if r["flagged"] else "no",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="image size (px)")
    parser.add_argument("--images", type=int, default=640, help="phantom images per dataset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 320 images")
    parser.add_argument("--output", type=Path, default=RESULTS / "saliency_layers.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.seeds = 320, 1, [0]
    started = time.perf_counter()
    rows = measure(args)
    headers = ["data", "seed", "block", "grid", "chosen", "acc", "in lungs", "lungs' share",
               "difference [95% CI]", "flagged"]  # fmt: skip
    print(format_table(headers, [_table_row(r) for r in rows]))
    summary = summarise(rows)
    for layer, verdict in summary.items():
        print(f"{layer}: marker flagged {verdict['marker_flagged']}, phantom flagged "
              f"{verdict['phantom_flagged']}, separates: {verdict['separates']}")  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_SELF)
    write_result(
        args.output,
        {
            "benchmark": "saliency_layers",
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine_description(),
            "wall_s": round(time.perf_counter() - started, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "rows": rows,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
