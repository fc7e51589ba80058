"""The training loop on the CPU: correctness against a plain reference loop, augmentation,
divergence detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from cxr_tune.data.types import SplitArrays
from cxr_tune.engine import (
    GRAY_MEAN,
    GRAY_STD,
    augment_batch,
    compile_supported,
    eval_batch_size,
    evaluate,
    iterate_batches,
    loop_settings,
    place_model,
    to_device,
    train_one_epoch,
)

CPU = loop_settings(torch.device("cpu"))


def _tiny_model(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def _split(n: int = 64, size: int = 16, num_classes: int = 3, seed: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = (rng.random((n, size, size)) * 80 + labels[:, None, None] * 60).astype(np.uint8)
    return SplitArrays(images=images, labels=labels.astype(np.int64))


def _reference_epoch(model, optimizer, split: SplitArrays, order: list[torch.Tensor]) -> float:
    """The plain fp32 loop: per batch, convert on the host, one loss.item() per step."""
    model.train()
    losses, seen = 0.0, 0
    for index in order:
        x = torch.tensor(split.images[index.numpy()], dtype=torch.float32).unsqueeze(1) / 255.0
        x = (x - GRAY_MEAN) / GRAY_STD
        y = torch.tensor(split.labels[index.numpy()])
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses += loss.item() * len(index)
        seen += len(index)
    return losses / seen


def test_fast_loop_trains_exactly_like_the_reference_loop():
    """Same seed, same batches, fp32 on the CPU: weights agree to 1e-5 and losses to 1e-6."""
    split = _split()
    fast, reference = _tiny_model(), _tiny_model()
    fast_opt = torch.optim.SGD(fast.parameters(), lr=0.05, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        order = list(
            iterate_batches(
                len(split), 16, shuffle=True, generator=torch.Generator().manual_seed(epoch)
            )
        )
        ref_loss = _reference_epoch(reference, ref_opt, split, order)
        stats = train_one_epoch(
            fast,
            fast_opt,
            to_device(split, CPU.device, "multiclass"),
            task="multiclass",
            batch_size=16,
            settings=CPU,
            augment="none",
            generator=torch.Generator().manual_seed(epoch),
        )
        assert stats.loss == pytest.approx(ref_loss, abs=1e-6)
    for a, b in zip(fast.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_evaluate_matches_scikit_learn_on_the_same_predictions():
    split = _split(n=50)
    model = _tiny_model().eval()
    result = evaluate(
        model,
        to_device(split, CPU.device, "multiclass"),
        task="multiclass",
        num_classes=3,
        settings=CPU,
        batch_size=7,
    )
    x = (
        torch.tensor(split.images, dtype=torch.float32).unsqueeze(1) / 255.0 - GRAY_MEAN
    ) / GRAY_STD
    with torch.no_grad():
        logits = model(x)
    predictions = logits.argmax(1).numpy()
    assert result.metrics["accuracy"] == pytest.approx(
        skm.accuracy_score(split.labels, predictions)
    )
    assert result.metrics["macro_f1"] == pytest.approx(
        skm.f1_score(split.labels, predictions, average="macro", labels=range(3), zero_division=0)
    )
    assert result.loss == pytest.approx(
        float(nn.functional.cross_entropy(logits, torch.tensor(split.labels))), rel=1e-5
    )


def test_multilabel_evaluation_uses_bce_and_probabilities():
    rng = np.random.default_rng(1)
    split = SplitArrays(
        images=(rng.random((40, 16, 16)) * 255).astype(np.uint8),
        labels=(rng.random((40, 3)) < 0.4).astype(np.uint8),
    )
    result = evaluate(
        _tiny_model(3),
        to_device(split, CPU.device, "multilabel"),
        task="multilabel",
        num_classes=3,
        settings=CPU,
    )
    assert {"macro_auroc", "micro_f1", "subset_accuracy", "macro_f1"} <= set(result.metrics)
    assert (
        result.probabilities.shape == (40, 3)
        and ((result.probabilities >= 0) & (result.probabilities <= 1)).all()
    )


def test_training_reduces_the_loss_on_a_learnable_problem():
    split = _split(n=96)
    model = _tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    data = to_device(split, CPU.device, "multiclass")
    losses = [
        train_one_epoch(
            model, optimizer, data, task="multiclass", batch_size=16, settings=CPU, augment="none"
        ).loss
        for _ in range(8)
    ]
    assert losses[-1] < 0.7 * losses[0]


def test_huge_learning_rate_is_flagged_as_diverged():
    split = _split(n=64)
    model = _tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)  # logits overflow to inf: the loss becomes NaN at once
    optimizer = torch.optim.SGD(model.parameters(), lr=1e10)
    stats = train_one_epoch(
        model,
        optimizer,
        to_device(split, CPU.device, "multiclass"),
        task="multiclass",
        batch_size=16,
        settings=CPU,
    )
    assert stats.diverged


@pytest.mark.parametrize("kind", ["none", "paper", "light", "strong"])
def test_augmentation_keeps_shape_and_is_seeded(kind):
    x = torch.randn(8, 1, 32, 32)
    a = augment_batch(x, kind, torch.Generator().manual_seed(3))
    b = augment_batch(x, kind, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    if kind != "none":
        assert not torch.equal(a, x)


def test_paper_augmentation_only_flips():
    x = torch.randn(64, 1, 8, 8)
    out = augment_batch(x, "paper", torch.Generator().manual_seed(0))
    flipped = [(torch.equal(o, i.flip(-1))) for o, i in zip(out, x)]
    kept = [(torch.equal(o, i)) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


def test_last_single_image_batch_is_dropped_when_shuffling():
    batches = list(
        iterate_batches(33, 16, shuffle=True, generator=torch.Generator().manual_seed(0))
    )
    assert [len(b) for b in batches] == [16, 16]
    assert [len(b) for b in iterate_batches(33, 16, shuffle=False)] == [16, 16, 1]


def test_place_model_ignores_compile_on_the_cpu_and_keeps_plain_fp32():
    model = place_model(_tiny_model(), CPU, compile=True)
    assert not compile_supported(CPU.device)
    assert model._compiled_call_impl is None  # plain module: nothing compiled on a CPU
    assert CPU.autocast_dtype is None and not CPU.channels_last
    assert all(p.is_contiguous() for p in model.parameters())


def test_explicit_bf16_on_the_cpu_uses_autocast_and_channels_last_and_trains():
    settings = loop_settings(torch.device("cpu"), "bf16")
    assert settings.autocast_dtype == torch.bfloat16 and settings.channels_last
    model = place_model(_tiny_model(), settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    data = to_device(_split(n=96), settings.device, "multiclass")
    losses = [
        train_one_epoch(
            model, optimizer, data, task="multiclass", batch_size=16, settings=settings
        ).loss
        for _ in range(6)
    ]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("size", [64, 224, 512])
def test_eval_batches_are_moderate_on_a_cpu_and_large_on_a_gpu(size):
    cpu, gpu = (
        eval_batch_size(torch.device("cpu"), size),
        eval_batch_size(torch.device("cuda"), size),
    )
    assert 8 <= cpu <= 32 and gpu >= cpu


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.mark.gpu
@CUDA
def test_gpu_loop_uses_bf16_channels_last_and_matches_the_cpu_loss():
    """On CUDA: bf16 autocast, channels_last weights and batches; the first epoch's loss is
    within bf16 rounding (3%) of the same epoch in fp32 on the CPU."""
    settings = loop_settings(torch.device("cuda"))
    assert settings.autocast_dtype == torch.bfloat16 and settings.channels_last
    assert torch.backends.cudnn.benchmark
    split = _split()
    losses = []
    for run in (settings, CPU):
        model = place_model(_tiny_model(), run)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        data = to_device(split, run.device, "multiclass")
        stats = train_one_epoch(
            model,
            optimizer,
            data,
            task="multiclass",
            batch_size=16,
            settings=run,
            augment="none",
            generator=torch.Generator().manual_seed(0),
        )
        losses.append(stats.loss)
        if run is settings:
            weight = next(model.parameters())
            assert weight.is_contiguous(memory_format=torch.channels_last)
            assert data.images.dtype == torch.uint8 and data.images.is_cuda
    assert losses[0] == pytest.approx(losses[1], rel=0.03)


@pytest.mark.gpu
@CUDA
def test_gpu_compile_keeps_checkpoint_keys_and_trains():
    settings = loop_settings(torch.device("cuda"))
    plain_keys = list(_tiny_model().state_dict())
    model = place_model(_tiny_model(), settings, compile=True)
    assert model._compiled_call_impl is not None
    assert list(model.state_dict()) == plain_keys
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    data = to_device(_split(), settings.device, "multiclass")
    stats = train_one_epoch(
        model, optimizer, data, task="multiclass", batch_size=16, settings=settings
    )
    assert not stats.diverged
    result = evaluate(model, data, task="multiclass", num_classes=3, settings=settings)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_multilabel_loss_skips_masked_entries_and_equals_bce_without_them():
    import torch
    from torch import nn

    from cxr_tune.engine import loss_function

    logits = torch.randn(6, 4)
    targets = (torch.rand(6, 4) < 0.5).float()
    criterion = loss_function("multilabel")
    assert torch.allclose(criterion(logits, targets), nn.BCEWithLogitsLoss()(logits, targets))
    masked = targets.clone()
    masked[:3, 2] = 255.0  # MASKED_LABEL
    known = masked <= 1
    expected = nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])
    assert torch.allclose(criterion(logits, masked), expected)
    # No gradient reaches the masked logits.
    logits.requires_grad_(True)
    criterion(logits, masked).backward()
    assert torch.count_nonzero(logits.grad[:3, 2]) == 0


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_streaming_gives_the_same_epoch_result_as_resident(task: str) -> None:
    from cxr_tune.config import TrialConfig
    from cxr_tune.data.types import DatasetArrays
    from cxr_tune.engine import StreamedSplit, TrainingState, place_split, train_epochs

    split = _split(n=70, size=32)
    if task == "multilabel":
        hot = np.eye(3, dtype=np.uint8)[split.labels]
        hot[::7, 1] = 255  # masked entries travel with the batch too
        split = SplitArrays(images=split.images, labels=hot)
    dataset = DatasetArrays(
        name="tiny",
        task=task,  # type: ignore[arg-type]
        classes=("a", "b", "c"),
        image_size=32,
        splits={"train": split, "val": _split(n=20, size=32, seed=1)},
        dataset_hash="x",
        split_hash="y",
    )
    if task == "multilabel":
        val = dataset.splits["val"]
        dataset.splits["val"] = SplitArrays(val.images, np.eye(3, dtype=np.uint8)[val.labels])
    cfg = TrialConfig(image_size=32, batch_size=16, epochs=2, augment="light")
    results, weights = [], []
    for path in ("resident", "streaming"):
        model = _tiny_model()
        state = TrainingState(model, torch.optim.Adam(model.parameters(), lr=1e-2), None)
        train = place_split(dataset.split("train"), torch.device("cpu"), task, path)
        val = place_split(dataset.split("val"), torch.device("cpu"), task, path)
        assert isinstance(train, StreamedSplit) == (path == "streaming")
        results.append(list(train_epochs(state, cfg, dataset, train, val, CPU)))
        weights.append(state.model.state_dict())
    timing = ("train_images_per_s", "epoch_time_s")
    for resident, streamed in zip(*results, strict=True):
        assert {k: v for k, v in resident.items() if k not in timing} == {
            k: v for k, v in streamed.items() if k not in timing
        }
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_streamed_split_stops_its_prefetch_thread_when_the_loop_stops_early() -> None:
    import threading

    from cxr_tune.engine import place_split

    split = _split(n=200, size=16)
    streamed = place_split(split, torch.device("cpu"), "multiclass", "streaming")
    before = threading.active_count()
    order = list(iterate_batches(len(split), 8, shuffle=False))
    for k, (images, labels) in enumerate(streamed.batches(order)):
        np.testing.assert_array_equal(images.numpy(), split.images[order[k].numpy()])
        np.testing.assert_array_equal(labels.numpy(), split.labels[order[k].numpy()])
        if k == 3:
            break
    assert threading.active_count() == before


@pytest.mark.gpu
@CUDA
def test_streaming_on_cuda_feeds_the_same_batches_as_resident():
    """On CUDA: the prefetcher's pinned buffers, side-stream copies and events deliver the
    resident split's batches exactly, and an fp32 epoch trains to the same loss."""
    from cxr_tune.engine import place_split

    device = torch.device("cuda")
    split = _split(n=300, size=32)
    resident = place_split(split, device, "multiclass", "resident")
    streamed = place_split(split, device, "multiclass", "streaming")
    order = list(iterate_batches(len(split), 16, shuffle=True, generator=torch.Generator()))
    for (a, ya), (b, yb) in zip(resident.batches(order), streamed.batches(order), strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    settings = loop_settings(device, "fp32")
    losses = []
    torch.backends.cudnn.deterministic = True
    for data in (resident, streamed):
        model = place_model(_tiny_model(), settings)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        stats = train_one_epoch(
            model,
            optimizer,
            data,
            task="multiclass",
            batch_size=16,
            settings=settings,
            generator=torch.Generator().manual_seed(0),
            device_generator=torch.Generator(device=device).manual_seed(0),
        )
        losses.append(stats.loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
