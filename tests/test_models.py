from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cxr_tune.errors import ConfigError
from cxr_tune.models import MODELS, check_image_size, check_pretrained, create_model, weights_path


@pytest.mark.parametrize("name", MODELS.names())
def test_model_forward_on_one_channel(name):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_registry_has_the_papers_architectures():
    assert MODELS.names() == ["alexnet", "vgg11", "resnet50"]


def test_unknown_model_suggests_the_closest():
    with pytest.raises(
        ConfigError,
        match=r"Unknown model 'resnet5'. Did you mean 'resnet50'\? Available: alexnet, resnet50, vgg11",
    ):
        create_model("resnet5", num_classes=2)


def test_alexnet_refuses_images_too_small():
    with pytest.raises(ConfigError, match="alexnet needs at least 63 px"):
        check_image_size("alexnet", 32)


def test_pretrained_without_cached_weights_fails_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"pretrained: true needs the ImageNet weights of vgg11.*set pretrained: false",
    ):
        check_pretrained("vgg11")


def test_pretrained_loads_cached_weights_and_sums_rgb_filters(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = MODELS.get("alexnet").build()
    path = weights_path("alexnet")
    assert path.is_relative_to(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model("alexnet", num_classes=4, pretrained=True)
    rgb = reference.features[0].weight
    assert torch.allclose(model.features[0].weight, rgb.sum(dim=1, keepdim=True))
    assert torch.equal(model.features[3].weight, reference.features[3].weight)
    assert model.classifier[6].out_features == 4


def test_the_registry_and_the_checks_load_no_torch() -> None:
    # Planning, --dry-run and the command line's checks read the registry only.
    script = (
        "import sys; from cxr_tune.models import MODELS, check_image_size; "
        "from cxr_tune.optim import OPTIMIZERS; "
        "check_image_size('alexnet', 64); assert MODELS.names() and OPTIMIZERS.names(); "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
