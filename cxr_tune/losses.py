"""Loss functions of the training loop that PyTorch does not ship as such."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy with logits, averaged over the entries whose target is known.

    A target of 0 or 1 is known; any other value (the data layer's ``MASKED_LABEL``, 255: an
    uncertain CheXpert label under the ``ignore`` policy) is skipped, as the CheXpert paper's
    U-Ignore does. With every entry known it equals ``nn.BCEWithLogitsLoss()``. No host
    synchronisation: the count of known entries stays a device tensor.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = targets <= 1
        safe = torch.where(known, targets, torch.zeros_like(targets)).to(logits.dtype)
        losses = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
        weight = known.to(losses.dtype)
        return (losses * weight).sum() / weight.sum().clamp(min=1.0)
