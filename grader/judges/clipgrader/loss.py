"""Multi-positive contrastive loss (ClipGrader, Sec. 3.1).

In a batch of N (crop, target prompt) pairs several pairs share the same (class, quality) prompt,
so the ground truth is not CLIP's identity: ``G[i, j] = 1`` iff pair i and pair j have the same
target. ``G`` is symmetric; each row is normalised to sum to 1 and used as the soft target of a
cross-entropy over images (rows of the logits) and over texts (columns), averaged.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def target_matrix(target_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Row-normalised ``(N, N)`` ground truth: equal targets are all positives of each other."""
    t = torch.as_tensor(target_ids)
    g = (t[:, None] == t[None, :]).float()
    return g / g.sum(1, keepdim=True)


def multi_positive_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                                    target_ids: Sequence[int] | torch.Tensor,
                                    logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric cross-entropy of ``logit_scale * image @ text.T`` against :func:`target_matrix`.

    ``text_features[i]`` is the embedding of pair i's own target prompt (duplicated for pairs
    sharing a target); features are expected L2-normalised.
    """
    logits = logit_scale * image_features @ text_features.T         # (N, N), row = image
    g = target_matrix(target_ids).to(logits.device)
    loss_image = -(g * F.log_softmax(logits, dim=1)).sum(1).mean()
    # G is symmetric, so its rows are also the normalised targets of each text's column.
    loss_text = -(g * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_image + loss_text) / 2
