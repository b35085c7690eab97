"""The dense Flow-DPO loss, as a pure function of per-frame errors and labels (DenseDPO Eq. 5, Eq. 7, App. E).

Errors are squared velocity errors ‖v − G(x_t, t, c)‖² averaged over channels and space: one value per latent
frame, shape (B, T). Labels are integers (B, T): +1 when video a is better in that frame, −1 when b is, 0 tie.
Both videos of a pair must have been noised with the same t and the same ε.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpo.config import FORMS


@dataclass
class DPOLossOutput:
    loss: torch.Tensor  # scalar, differentiable
    implicit_accuracy: torch.Tensor  # share of non-tie frames (dense) or pairs (eq7) with inside > 0; detached
    margin: torch.Tensor  # mean over the same of l·[(e_ref,a − e_θ,a) − (e_ref,b − e_θ,b)]; detached
    num_decided: torch.Tensor  # non-tie frames (dense) or pairs with any non-tie frame (eq7)


def dense_dpo_loss(
    policy_err_a: torch.Tensor,
    policy_err_b: torch.Tensor,
    ref_err_a: torch.Tensor,
    ref_err_b: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 500.0,
    form: str = "dense",
    weights: torch.Tensor | None = None,
) -> DPOLossOutput:
    """Dense Flow-DPO.

    dense (default, App. E): inside = −0.5·β·l·[(e_θ,a − e_ref,a) − (e_θ,b − e_ref,b)] per frame;
        loss = mean over non-tie frames of −log σ(inside).
    eq7 (Eq. 7 as printed): the frame terms of a pair are summed inside one sigmoid;
        loss = mean over pairs with a non-tie frame of −log σ(Σ_t inside_t).
    Vanilla Flow-DPO is the case T = 1 (errors averaged over frames, one label per clip).
    Tie frames contribute neither loss nor gradient. With no non-tie frame the loss is 0 (still differentiable).
    weights (B, T) >= 0, dense only: the loss is the weighted mean Σ w·(−log σ(inside)) / Σ w over non-tie frames
    (e.g. the judge's confidence in each frame's segment); all ones is the unweighted loss. The implicit accuracy
    and the margin stay unweighted.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    shapes = {tuple(x.shape) for x in (policy_err_a, policy_err_b, ref_err_a, ref_err_b, labels)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"errors and labels must all be (B, T); got shapes {sorted(shapes)}")
    if weights is not None and (form != "dense" or tuple(weights.shape) != tuple(labels.shape)):
        raise ValueError(f"weights go with form dense and the labels' shape {tuple(labels.shape)}")
    labels = labels.to(policy_err_a.dtype)
    decided = labels != 0  # (B, T)
    # How much more the policy improved on a than on b, relative to the reference: > 0 favours a.
    delta = (ref_err_a - policy_err_a) - (ref_err_b - policy_err_b)  # (B, T)
    inside = 0.5 * beta * labels * delta  # == −0.5·β·l·[(e_θ,a − e_ref,a) − (e_θ,b − e_ref,b)]
    if form == "dense":
        terms, mask, signed = inside, decided, labels * delta
    else:
        terms = (inside * decided).sum(dim=1)  # (B,)
        mask = decided.any(dim=1)
        signed = (labels * delta * decided).sum(dim=1)
    n = mask.sum()
    losses = F.softplus(-terms)  # −log σ(x) = softplus(−x), stable for large |x| (β = 500 makes them large)
    if weights is None:
        loss = (losses * mask).sum() / n.clamp(min=1)
    else:
        w = weights.to(losses.dtype) * mask
        loss = (losses * w).sum() / w.sum().clamp(min=1e-12)
    with torch.no_grad():
        acc = ((terms > 0) & mask).sum() / n.clamp(min=1)
        margin = (signed * mask).sum() / n.clamp(min=1)
    return DPOLossOutput(loss=loss, implicit_accuracy=acc, margin=margin, num_decided=n.detach())


def per_frame_error(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over channels and space: (B, C, T, H, W) -> (B, T)."""
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))


def clip_labels(frame_labels: torch.Tensor) -> torch.Tensor:
    """One label per clip by majority vote over its non-tie frames: (B, T) -> (B, 1) (vanilla Flow-DPO)."""
    votes = frame_labels.sum(dim=1, keepdim=True)
    return torch.sign(votes).to(frame_labels.dtype)
