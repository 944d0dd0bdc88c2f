r"""Modality balance: on-the-fly gradient modulation (OGM, OGM-GE; Peng et al., "Balanced Multimodal Learning via
On-the-fly Gradient Modulation", CVPR 2022), generalised from two modalities to `M` with the auxiliary unimodal heads.

A fused model trained jointly learns fastest from its strongest modality; once that modality fits the training data,
the loss leaves little gradient for the others, whose encoders stay under-trained. OGM slows the dominant modality's
branch down at every training step. With `u_{i,m}` the auxiliary unimodal head's logits of modality `m` for sample
`i` and `y_i` its label, over the samples of the batch that have modality `m`:

    s_m = mean_i softmax(u_{i,m})[y_i]                  (how well modality m alone fits the batch)
    ρ_m = s_m / mean_{n ≠ m} s_n                        (its discrepancy ratio to the other modalities)
    k_m = 1 − tanh(α · ρ_m)  if ρ_m > 1,  else 1         (the paper's coefficient, α = `modality_balance_alpha`)

and the gradient reaching modality `m`'s embedding `x_m` (the projected encoder output the fusion and the auxiliary
head read) becomes `k_m · ∂L/∂x_m`. Every parameter of that branch — encoder and projection — reaches the loss only
through `x_m`, so each of their gradients is scaled by exactly `k_m`, as OGM scales the encoder's gradients.
OGM-GE (generalisation enhancement) adds Gaussian noise of the gradient's own scale,
`k_m · g_m + ε`, `ε ~ N(0, std(g_m)²)`, to every branch, dominant or not; here at the embedding, from where the
noise reaches each branch parameter through the branch's Jacobian (the paper adds it to each parameter's gradient).
The fusion and the heads are not modulated.
"""

import torch


def ogm_coefficients(
    unimodal_logits: torch.Tensor, labels: torch.Tensor, modality_mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    r"""The OGM coefficients `k` `(M,)` of a batch (see the module docstring).

    `unimodal_logits` `(B, M, C)`, `labels` `(B,)` class indices (`-100` rows ignored), `modality_mask` `(B, M)`.
    A modality absent from every row of the batch, or with no other present modality to compare with, gets `k = 1`.
    """
    num_modalities = unimodal_logits.shape[1]
    valid = modality_mask & (labels != -100)[:, None]
    targets = labels.clamp(min=0)[:, None, None].expand(-1, num_modalities, 1)
    true_class = unimodal_logits.detach().float().softmax(-1).gather(-1, targets).squeeze(-1)  # (B, M)
    weights = valid.to(true_class.dtype)
    count = weights.sum(0)
    score = (true_class * weights).sum(0) / count.clamp(min=1.0)  # s_m
    present = (count > 0).to(score.dtype)
    others = present.sum() - present  # how many other modalities have a score
    others_mean = ((score * present).sum() - score * present) / others.clamp(min=1.0)
    ratio = score / others_mean.clamp(min=1e-8)  # ρ_m
    dominant = (ratio > 1) & (present > 0) & (others > 0)
    return torch.where(dominant, 1 - torch.tanh(alpha * ratio), torch.ones_like(ratio))


def modulate_modality_gradients(
    modality_embeds: torch.Tensor, modality_mask: torch.Tensor, coefficients: torch.Tensor, noise: bool
) -> None:
    r"""Scale the gradient reaching `modality_embeds[:, m]` `(B, M, d)` by `coefficients[m]` on the rows where
    modality `m` is present (absent rows hold the learned missing embedding, which is not modulated); with `noise`,
    add `N(0, std(g_m)²)` to each present branch's gradient (OGM-GE)."""
    scale = torch.where(modality_mask, coefficients.to(modality_embeds.dtype), 1.0).unsqueeze(-1)  # (B, M, 1)
    present = modality_mask.unsqueeze(-1).to(modality_embeds.dtype)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        modulated = grad * scale
        if noise:
            counts = present.sum((0, 2), keepdim=True) * grad.shape[-1]  # (1, M, 1) present entries per modality
            mean = (grad * present).sum((0, 2), keepdim=True) / counts.clamp(min=1.0)
            std = (((grad - mean) * present).square().sum((0, 2), keepdim=True) / counts.clamp(min=1.0)).sqrt()
            modulated = modulated + torch.randn_like(grad) * std * present
        return modulated

    modality_embeds.register_hook(hook)


__all__ = ["modulate_modality_gradients", "ogm_coefficients"]
