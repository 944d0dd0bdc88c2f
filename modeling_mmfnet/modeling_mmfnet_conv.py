"""MMFNetConvModel: the seed design's small convolutional feature extractor, as a registered HF backbone."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_mmfnet import MMFNetConvConfig


@dataclass
class MMFNetConvModelOutput(BaseModelOutputWithPooling):
    r"""
    token_mask (`torch.BoolTensor` of shape `(batch_size, num_tokens)`, *optional*):
        Which tokens of `last_hidden_state` cover at least one valid frame (when an `attention_mask` was given).
    """

    token_mask: torch.BoolTensor | None = None


def normalize_per_utterance(
    input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    r"""Standardise each mel bin over the valid frames of its clip: `(x - μ_{b,f}) / sqrt(σ²_{b,f} + eps)`.

    `input_features` is `(B, n_mels, T)`, `attention_mask` `(B, T)` (1 = valid frame). Padding frames are set to 0
    (the normalised mean) so they carry no signal.
    """
    if attention_mask is None:
        variance, mean = torch.var_mean(input_features, dim=-1, keepdim=True, correction=0)
        return (input_features - mean) * torch.rsqrt(variance + eps)
    weights = attention_mask[:, None, :].to(input_features.dtype)
    count = weights.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (input_features * weights).sum(-1, keepdim=True) / count
    variance = ((input_features - mean).square() * weights).sum(-1, keepdim=True) / count
    return (input_features - mean) * torch.rsqrt(variance + eps) * weights


def conv_norm(normalization: str, channels: int) -> nn.Module:
    """The norm after a convolution: GroupNorm (`min(8, channels)` groups), BatchNorm2d, or none."""
    if normalization == "group":
        return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)
    if normalization == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class MMFNetConvBlock(GradientCheckpointingLayer):
    r"""`y = maxpool_2(GELU(norm(conv_{k×k}(x))))`, with `convs_per_block - 1` more `GELU(norm(conv(·)))` before the
    pool. GroupNorm (the default) keeps it independent of the batch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        normalization: str = "group",
        convs_per_block: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = conv_norm(normalization, out_channels)
        self.extra_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2)
            for _ in range(convs_per_block - 1)
        )
        self.extra_norms = nn.ModuleList(conv_norm(normalization, out_channels) for _ in range(convs_per_block - 1))
        self.activation = nn.GELU()
        self.pool = nn.MaxPool2d(kernel_size=2, ceil_mode=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.norm(self.conv(hidden_states)))
        for conv, norm in zip(self.extra_convs, self.extra_norms, strict=True):
            hidden_states = self.activation(norm(conv(hidden_states)))
        return self.pool(hidden_states)


class MMFNetConvPreTrainedModel(PreTrainedModel):
    config: MMFNetConvConfig
    base_model_prefix = "mmfnet_conv"
    main_input_name = "pixel_values"
    input_modalities = ("image", "audio")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MMFNetConvBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class MMFNetConvModel(MMFNetConvPreTrainedModel):
    r"""A stack of [`MMFNetConvBlock`]s that returns its feature map as tokens, like any HF encoder.

    Inputs are images `pixel_values` `(B, C, H, W)` or spectrograms `input_features` `(B, n_mels, T)` (standardised
    by [`normalize_per_utterance`], then read as a one-channel image; `attention_mask` `(B, T)` marks valid frames).
    The output `last_hidden_state` has shape `(B, H'·W', hidden_sizes[-1])` with `H' = ⌈H / 2^L⌉`, or
    `(B, 1, hidden_sizes[-1])` with `config.global_pooling` (`"average"` / `"max"` over the valid positions);
    `pooler_output` is its (mask-aware) mean.
    """

    def __init__(self, config: MMFNetConvConfig) -> None:
        super().__init__(config)
        channels = [config.num_channels, *config.hidden_sizes]
        self.blocks = nn.ModuleList(
            MMFNetConvBlock(c_in, c_out, config.kernel_size, config.normalization, config.convs_per_block)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MMFNetConvModelOutput:
        if (pixel_values is None) == (input_features is None):
            raise ValueError("MMFNetConvModel takes exactly one of `pixel_values` (B, C, H, W) or `input_features`.")
        if pixel_values is not None:
            if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
                raise ValueError(
                    f"`pixel_values` must have shape (batch, {self.config.num_channels}, height, width), "
                    f"got {tuple(pixel_values.shape)}."
                )
            hidden_states = pixel_values
        else:
            if input_features.dim() != 3 or self.config.num_channels != 1:
                raise ValueError(
                    "`input_features` must have shape (batch, n_mels, frames) for a one-channel MMFNetConvModel, "
                    f"got {tuple(input_features.shape)} with num_channels={self.config.num_channels}."
                )
            hidden_states = input_features.to(self.blocks[0].conv.weight.dtype)
            if self.config.spectrogram_normalization == "utterance":
                hidden_states = normalize_per_utterance(hidden_states, attention_mask)
            hidden_states = hidden_states.unsqueeze(1)
        hidden_states = hidden_states.to(self.blocks[0].conv.weight.dtype)

        token_mask = None
        if attention_mask is not None and input_features is not None:
            # a frame is valid after pooling if any frame it covers was valid
            token_mask = (
                attention_mask[:, None, None, :].to(hidden_states.dtype).expand(-1, 1, *hidden_states.shape[2:])
            )

        all_hidden_states = () if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states)
            if token_mask is not None:
                token_mask = block.pool(token_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states.flatten(2).transpose(1, 2),)

        last_hidden_state = hidden_states.flatten(2).transpose(1, 2)  # (B, H'·W', C)
        if token_mask is not None:
            token_mask = token_mask.flatten(1) > 0
        if self.config.global_pooling != "none":
            last_hidden_state = self._global_pool(last_hidden_state, token_mask)
            token_mask = None if token_mask is None else token_mask.any(1, keepdim=True)
        last_hidden_state = self.dropout(last_hidden_state)
        if token_mask is None:
            pooled = last_hidden_state.mean(dim=1)
        else:
            weights = token_mask.unsqueeze(-1).to(last_hidden_state.dtype)
            pooled = (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return MMFNetConvModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            token_mask=token_mask,
        )

    def _global_pool(self, tokens: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        """Global average or max pooling of `(B, N, C)` tokens over the valid ones: `(B, 1, C)`."""
        if self.config.global_pooling == "average":
            if token_mask is None:
                return tokens.mean(dim=1, keepdim=True)
            weights = token_mask.unsqueeze(-1).to(tokens.dtype)
            return (tokens * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1.0)
        if token_mask is None:
            return tokens.amax(dim=1, keepdim=True)
        pooled = tokens.masked_fill(~token_mask.unsqueeze(-1), torch.finfo(tokens.dtype).min).amax(1, keepdim=True)
        return torch.where(token_mask.any(1)[:, None, None], pooled, 0.0)  # a clip with no valid frame: zeros


__all__ = [
    "MMFNetConvBlock",
    "MMFNetConvModel",
    "MMFNetConvModelOutput",
    "MMFNetConvPreTrainedModel",
    "normalize_per_utterance",
]
