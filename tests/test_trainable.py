"""The trainable's handling of failures it can recognise (no Ray needed)."""

from __future__ import annotations

import pytest
import torch

from cxr_tune.trainable import is_out_of_memory


def test_a_failed_cpu_allocation_counts_as_out_of_memory() -> None:
    # A request no machine can grant fails at once, without touching memory.
    with pytest.raises(RuntimeError) as err:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(err.value)
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))


def test_save_checkpoint_writes_what_torch_load_reads(tmp_path) -> None:
    from cxr_tune.trainable import save_checkpoint

    payload = {"model": {"w": torch.arange(6.0)}, "epoch": 2}
    save_checkpoint(payload, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], payload["model"]["w"])


@pytest.mark.slow  # a fresh interpreter imports torch and Ray
def test_a_checkpoint_that_finds_no_room_raises_the_disk_error(tmp_path) -> None:
    import resource
    import subprocess
    import sys

    from tests.conftest import repo_root

    code = (
        "import errno, torch\n"
        "from pathlib import Path\n"
        "from cxr_tune.trainable import DISK_FULL, save_checkpoint\n"
        "try:\n"
        f"    save_checkpoint({{'w': torch.zeros(1_000_000)}}, Path({str(tmp_path)!r}) / 's.pt')\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno], exc.errno in DISK_FULL, exc.filename)\n"
    )

    def limit() -> None:  # 1 MB files at most: the 4 MB checkpoint cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        preexec_fn=limit,
        timeout=120,
    )
    assert done.stdout.split() == ["EFBIG", "True", str(tmp_path / "s.pt")], done.stderr
