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
