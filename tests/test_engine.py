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
