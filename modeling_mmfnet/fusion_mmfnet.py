"""The MMFNet fusion catalogue.

Every strategy maps the projected modality embeddings `x` of shape `(B, M, d)` and the presence mask `mask` of
shape `(B, M)` (True = present, every row has at least one True) to one fused embedding of shape `(B, d)`.
Rows of `x` for absent modalities already hold the learned missing-modality embedding; the strategies that can
ignore an absent modality outright (gated, attention, tensor, low_rank, transformer) do so through `mask`.
Every parameter is a registered `nn.Parameter` / sub-module, so it is saved in the `state_dict`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_mmfnet import MMFNetConfig


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax of `scores` over `dim` restricted to where `mask` is True (masked entries get weight 0)."""
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(dim=dim) * mask


class MMFNetModalityLinear(nn.Module):
    r"""`M` independent linear maps applied in one batched op: `y_m = W_m x_m + b_m` for `x` of shape `(B, M, i)`."""

    def __init__(self, num_modalities: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_modalities, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_modalities, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bmi,mio->bmo", x, self.weight) + self.bias


class MMFNetConcatFusion(nn.Module):
    r"""The seed design's fusion network: `h = W_2 GELU(W_1 [x_1; …; x_M] + b_1) + b_2`.

    An absent modality contributes its learned missing embedding (already in `x`).
    """

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        num_modalities = len(config.modalities)
        self.mlp = nn.Sequential(
            nn.Linear(num_modalities * config.fusion_dim, config.fusion_hidden_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.fusion_hidden_dim, config.fusion_dim),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(1))


class MMFNetGatedFusion(nn.Module):
    r"""Gated multimodal unit (Arevalo et al. 2017) generalised to `M` modalities.

    `u_m = tanh(W_m x_m)`, `z = softmax_m(G [x_1; …; x_M])` per feature over the present modalities,
    `h = Σ_m z_m ⊙ u_m`.
    """

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        self.num_modalities = len(config.modalities)
        self.transform = MMFNetModalityLinear(self.num_modalities, config.fusion_dim, config.fusion_dim)
        self.gate = nn.Linear(self.num_modalities * config.fusion_dim, self.num_modalities * config.fusion_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        units = torch.tanh(self.transform(x))  # (B, M, d)
        gates = self.gate(x.flatten(1)).view_as(units)  # (B, M, d)
        gates = masked_softmax(gates, mask.unsqueeze(-1), dim=1)
        return self.dropout((gates * units).sum(dim=1))


class MMFNetAttentionFusion(nn.Module):
    r"""Attention-weighted sum: `α = softmax_m(qᵀ tanh(W x_m) / √d)` over the present modalities, `h = Σ_m α_m x_m`."""

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        self.key = nn.Linear(config.fusion_dim, config.fusion_dim)
        self.query = nn.Parameter(torch.empty(config.fusion_dim))
        self.scale = config.fusion_dim**-0.5

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.tanh(self.key(x)) @ self.query * self.scale  # (B, M)
        weights = masked_softmax(scores, mask, dim=1)
        return torch.einsum("bm,bmd->bd", weights, x)


class MMFNetTensorFusion(nn.Module):
    r"""Tensor fusion (Zadeh et al. 2017): `h = MLP(⊗_m [1; z_m])`, `z_m = P_m x_m ∈ R^t`.

    The outer product holds every unimodal, bimodal, … M-modal interaction; an absent modality enters as
    `[1; 0]`, which keeps exactly the interactions among the present ones. Its size is `(t + 1)^M`.
    """

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        num_modalities = len(config.modalities)
        width = config.tensor_fusion_dim
        self.reduce = MMFNetModalityLinear(num_modalities, config.fusion_dim, width)
        self.mlp = nn.Sequential(
            nn.Linear((width + 1) ** num_modalities, config.fusion_hidden_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.fusion_hidden_dim, config.fusion_dim),
        )
        self.norm = nn.LayerNorm(config.fusion_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.reduce(x) * mask.unsqueeze(-1)  # (B, M, t), absent → 0
        z = torch.cat([z.new_ones(z.shape[:-1] + (1,)), z], dim=-1)  # (B, M, t + 1)
        product = z[:, 0]
        for m in range(1, z.shape[1]):  # M ≤ 3 outer products; each one is a single batched op
            product = (product.unsqueeze(-1) * z[:, m].unsqueeze(1)).flatten(1)
        return self.norm(self.mlp(product))


class MMFNetLowRankFusion(nn.Module):
    r"""Low-rank multimodal fusion (Liu et al. 2018): `h = Σ_{i=1}^{r} λ_i ⊙_m (W_m^{(i)} [1; x_m]) + b`.

    It equals tensor fusion with a rank-`r` weight tensor, at linear cost in `M`. The factors `W` are one
    registered parameter of shape `(M, r, d + 1, d)`. An absent modality enters as `[1; 0]`.
    """

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        num_modalities, dim, rank = len(config.modalities), config.fusion_dim, config.low_rank_rank
        self.factors = nn.Parameter(torch.empty(num_modalities, rank, dim + 1, dim))
        self.rank_weights = nn.Parameter(torch.empty(rank))
        self.bias = nn.Parameter(torch.empty(dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = x * mask.unsqueeze(-1)
        z = torch.cat([z.new_ones(z.shape[:-1] + (1,)), z], dim=-1)  # (B, M, d + 1)
        per_modality = torch.einsum("bmi,mrio->bmro", z, self.factors)  # (B, M, r, d)
        fused = torch.einsum("brd,r->bd", per_modality.prod(dim=1), self.rank_weights) + self.bias
        return self.norm(fused)


class MMFNetFusionTransformerLayer(GradientCheckpointingLayer):
    """One pre-norm transformer encoder layer over the modality tokens (checkpointable)."""

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=config.fusion_dim,
            nhead=config.fusion_heads,
            dim_feedforward=config.fusion_hidden_dim,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.layer(hidden_states, src_key_padding_mask=padding_mask)


class MMFNetTransformerFusion(nn.Module):
    r"""Fusion transformer: `h = LN(Encoder([c; x_1 + e_1; …; x_M + e_M], key_padding_mask = ¬mask)[0])`.

    `c` is a learned CLS token and `e_m` a learned modality-type embedding; absent modalities are masked out of
    the attention, so they cannot influence `h`.
    """

    def __init__(self, config: MMFNetConfig) -> None:
        super().__init__()
        num_modalities = len(config.modalities)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.fusion_dim))
        self.modality_type_embeds = nn.Parameter(torch.empty(num_modalities, config.fusion_dim))
        self.layers = nn.ModuleList(MMFNetFusionTransformerLayer(config) for _ in range(config.fusion_layers))
        self.norm = nn.LayerNorm(config.fusion_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden_states = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x + self.modality_type_embeds], dim=1)
        padding_mask = torch.cat([mask.new_zeros(mask.shape[0], 1), ~mask], dim=1)
        for layer in self.layers:
            hidden_states = layer(hidden_states, padding_mask)
        return self.norm(hidden_states[:, 0])


FUSION_CLASSES: dict[str, type[nn.Module]] = {
    "concat": MMFNetConcatFusion,
    "gated": MMFNetGatedFusion,
    "attention": MMFNetAttentionFusion,
    "tensor": MMFNetTensorFusion,
    "low_rank": MMFNetLowRankFusion,
    "transformer": MMFNetTransformerFusion,
}


def build_fusion(config: MMFNetConfig) -> nn.Module:
    """The fusion module named by `config.fusion_type`."""
    if config.fusion_type not in FUSION_CLASSES:
        raise ValueError(f"Unknown `fusion_type` {config.fusion_type!r}; expected one of {tuple(FUSION_CLASSES)}.")
    return FUSION_CLASSES[config.fusion_type](config)
