"""The TorchScript inference module: the training path's preprocessing, network and calibration
in one file; the same probabilities as the plain model through the engine, in this process and
in one where cxr_tune cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_tune.bundle.inference import (
    build_inference_module,
    load_torchscript,
    reference_probabilities,
    save_torchscript,
    script,
)
from cxr_tune.calibration import Calibration, TemperatureFit
from cxr_tune.data.images import decode_file
from cxr_tune.models import MODELS, create_model
from tests.data.builders import pattern, to_mode

SIZE = 64
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def calibration(*temperatures: float, task: str = "multiclass") -> Calibration:
    return Calibration(task, tuple(TemperatureFit(t, 0.0, 0.0, 10) for t in temperatures))


@pytest.fixture(scope="module")
def alexnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("alexnet", num_classes=4).eval()


@pytest.fixture(scope="module")
def scripted(alexnet: torch.nn.Module) -> torch.jit.ScriptModule:
    module = build_inference_module(
        alexnet, "alexnet", image_size=SIZE, task="multiclass", classes=CLASSES,
        calibration=calibration(1.7),
    )  # fmt: skip
    return script(module)


def images(n: int = 6, size: int = SIZE) -> np.ndarray:
    return np.stack([pattern(seed, size, size) for seed in range(n)])


def test_scripted_probabilities_equal_the_engine_path(alexnet, scripted) -> None:
    batch = images()
    expected = reference_probabilities(
        alexnet, batch, task="multiclass", calibration=calibration(1.7)
    )
    with torch.no_grad():
        found = scripted(torch.as_tensor(batch)).numpy()
        outputs = scripted.outputs(torch.as_tensor(batch))
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(found.sum(axis=1), 1.0, atol=1e-5)
    raw = reference_probabilities(alexnet, batch, task="multiclass")
    np.testing.assert_allclose(outputs["raw"].numpy(), raw, atol=1e-5, rtol=0)
    assert outputs["features"].shape == (6, 4096) and outputs["logits"].shape == (6, 4)


def test_every_input_layout_gives_the_same_probabilities(scripted) -> None:
    batch = torch.as_tensor(images(2))
    with torch.no_grad():
        expected = scripted(batch)
        torch.testing.assert_close(scripted(batch[0]), expected[:1])  # (H, W)
        torch.testing.assert_close(scripted(batch.unsqueeze(1)), expected)  # (B, 1, H, W)
        as_float = batch.float() / 255.0
        torch.testing.assert_close(scripted(as_float), expected)  # float 0..1
        rgb = batch.unsqueeze(-1).repeat(1, 1, 1, 3)
        torch.testing.assert_close(scripted(rgb), expected)  # (B, H, W, 3), gray colour
        torch.testing.assert_close(scripted(rgb[0]), expected[:1])  # (H, W, 3)
        torch.testing.assert_close(scripted(rgb.permute(0, 3, 1, 2)), expected)  # (B, 3, H, W)
    with pytest.raises(Exception, match="expected an image"):
        scripted(torch.zeros(1, 2, 3, 4, 5, dtype=torch.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_preprocess_equals_decode_file_at_the_image_size(
    scripted, tmp_path: Path, mode: str
) -> None:
    picture = to_mode(pattern(7, SIZE, SIZE), mode)
    picture.save(tmp_path / "x.png")
    decoded = decode_file(tmp_path / "x.png", SIZE).pixels
    with Image.open(tmp_path / "x.png") as opened:
        raw = torch.as_tensor(np.array(opened))
    with torch.no_grad():
        found = scripted.preprocess(raw)[0].numpy()
    np.testing.assert_array_equal(found, decoded)


@pytest.mark.parametrize(("width", "height"), [(256, 320), (150, 97), (40, 48)])
def test_preprocess_of_other_sizes_comes_within_a_few_levels_of_decode_file(
    scripted, tmp_path: Path, width: int, height: int
) -> None:
    """The module's own resize (PyTorch's) against the decoder's (Pillow's): the geometry is
    the same (shorter side, centre square); the gray levels differ by rounding only."""
    Image.fromarray(pattern(11, width, height)).save(tmp_path / "y.png")
    decoded = decode_file(tmp_path / "y.png", SIZE).pixels.astype(int)
    with Image.open(tmp_path / "y.png") as opened:
        raw = torch.as_tensor(np.array(opened))
    with torch.no_grad():
        found = scripted.preprocess(raw)[0].numpy().astype(int)
    difference = np.abs(found - decoded)
    assert found.shape == (SIZE, SIZE)
    assert difference.max() <= 3 and difference.mean() < 0.6, (difference.max(), difference.mean())


def test_multilabel_module_uses_one_temperature_per_label() -> None:
    torch.manual_seed(1)
    model = create_model("alexnet", num_classes=3).eval()
    labels = calibration(0.5, 1.0, 2.0, task="multilabel")
    module = script(
        build_inference_module(
            model,
            "alexnet",
            image_size=SIZE,
            task="multilabel",
            classes=("a", "b", "c"),
            calibration=labels,
        )  # fmt: skip
    )
    batch = images(3)
    expected = reference_probabilities(model, batch, task="multilabel", calibration=labels)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.as_tensor(batch)).numpy(), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_scripts(name: str) -> None:
    torch.manual_seed(2)
    model = create_model(name, num_classes=2).eval()
    module = script(
        build_inference_module(model, name, image_size=SIZE, task="multiclass", classes=("x", "y"))
    )
    batch = images(2)
    with torch.no_grad():
        found = module(torch.as_tensor(batch)).numpy()
    np.testing.assert_allclose(
        found, reference_probabilities(model, batch, task="multiclass"), atol=1e-5
    )


# Runs in a fresh interpreter: no site processing (so no editable-install finder), only the
# directory holding torch on sys.path; cxr_tune must not be importable there.
WITHOUT_CXR_TUNE = """
import json, sys
sys.path.append(sys.argv[1])
import numpy, torch
try:
    import cxr_tune
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("cxr_tune is importable: " + str(cxr_tune.__file__))
extra = {"cxr_tune.json": ""}
module = torch.jit.load("model.ts", _extra_files=extra)
images = torch.from_numpy(numpy.load("images.npy"))
with torch.no_grad():
    print(json.dumps({"probabilities": module(images).tolist(), "facts": json.loads(extra["cxr_tune.json"])}))
"""


@pytest.mark.slow
def test_model_ts_runs_where_cxr_tune_cannot_be_imported(alexnet, tmp_path: Path) -> None:
    module = build_inference_module(
        alexnet, "alexnet", image_size=SIZE, task="multiclass", classes=CLASSES,
        calibration=calibration(1.7),
    )  # fmt: skip
    save_torchscript(module, tmp_path / "saved" / "model.ts", {"architecture": "alexnet"})
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    (run_dir / "model.ts").write_bytes((tmp_path / "saved" / "model.ts").read_bytes())
    batch = images(4)
    np.save(run_dir / "images.npy", batch)
    site = str(Path(torch.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", WITHOUT_CXR_TUNE, site],
        cwd=run_dir, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    expected = reference_probabilities(
        alexnet, batch, task="multiclass", calibration=calibration(1.7)
    )
    np.testing.assert_allclose(np.asarray(result["probabilities"]), expected, atol=1e-5, rtol=0)
    assert result["facts"]["classes"] == list(CLASSES) and result["facts"]["image_size"] == SIZE
    loaded, facts = load_torchscript(tmp_path / "saved" / "model.ts")
    assert facts["architecture"] == "alexnet" and facts["temperatures"] == pytest.approx([1.7])
