"""Penultimate features of every registered architecture: the head's input, from one forward
pass, the same through the hook, the split body/head and the uint8 batch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_tune.engine import LoopSettings, prepare_batch
from cxr_tune.features import (
    features_and_logits,
    head_of,
    penultimate_features,
    split_head,
)
from cxr_tune.models import MODELS, create_model

SIZE = 64
CPU = LoopSettings(device=torch.device("cpu"))
# Copying and running these takes seconds on two cores: outside the quick loop.
HEAVY = {"vgg11", "resnet50"}
ARCHS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in MODELS.names()]


@pytest.fixture(scope="module", params=ARCHS)
def built(request) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    return request.param, create_model(request.param, num_classes=3).eval()


def test_features_are_the_heads_input_for_every_registered_model(built) -> None:
    name, model = built
    images = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)
    x = prepare_batch(images, CPU)
    with torch.no_grad():
        feats, logits = features_and_logits(model, name, x)
        expected = model(x)
    head = head_of(model, name)
    assert feats.shape == (3, head.in_features)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(head(feats), expected)
    body, head_copy = split_head(model, name)
    with torch.no_grad():
        torch.testing.assert_close(body(x), feats)
        torch.testing.assert_close(head_copy(body(x)), expected)
    # The caller's model keeps its head (split_head works on copies).
    assert isinstance(model.get_submodule(MODELS.get(name).head), torch.nn.Linear)


def test_penultimate_features_of_uint8_images_match_one_batch(built) -> None:
    name, model = built
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE), dtype=np.uint8)
    feats, logits = penultimate_features(model, name, images, settings=CPU, batch_size=2)
    with torch.no_grad():
        expected, expected_logits = features_and_logits(
            model, name, prepare_batch(torch.as_tensor(images), CPU)
        )
    assert feats.dtype == np.float32 and feats.shape[0] == 5
    # Batches of 2 against one of 5: the CPU kernels may sum in another order (ResNet50).
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-4, atol=1e-4)


def test_penultimate_features_of_no_images_are_empty() -> None:
    model = create_model("alexnet", num_classes=2)
    feats, logits = penultimate_features(
        model, "alexnet", np.zeros((0, SIZE, SIZE), np.uint8), settings=CPU
    )
    assert feats.shape == (0, 4096) and logits.shape == (0, 2)
