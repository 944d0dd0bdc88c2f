"""Configurations of MMFNet and of its small from-scratch convolutional backbone."""

from __future__ import annotations

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODALITIES: tuple[str, ...] = ("vision", "text", "audio")
FUSION_TYPES: tuple[str, ...] = ("concat", "gated", "attention", "tensor", "low_rank", "transformer")
POOLING_TYPES: tuple[str, ...] = ("mean", "cls", "max", "pooler", "attention")
CONV_NORMALIZATIONS: tuple[str, ...] = ("group", "batch", "none")
CONV_GLOBAL_POOLINGS: tuple[str, ...] = ("none", "average", "max")
MODALITY_BALANCES: tuple[str, ...] = ("none", "ogm", "ogm_ge")


@strict
class MMFNetConvConfig(PreTrainedConfig):
    r"""
    Configuration of [`MMFNetConvModel`], the seed design's per-modality feature extractor: a stack of blocks
    `[conv(k×k) → norm → GELU] × convs_per_block → max-pool(2)` over `num_channels` input channels. It encodes
    images `(B, C, H, W)` and spectrograms `(B, n_mels, T)` (one channel) into a token sequence
    `(B, H'·W', hidden_size)`, or one token `(B, 1, hidden_size)` with `global_pooling`. The defaults are the seed
    design's 3-block CNN; a stronger RGB backbone is e.g. `hidden_sizes=[32, 64, 128, 256]`, `convs_per_block=2`,
    `normalization="batch"`, `global_pooling="average"`.

    Args:
        num_channels (`int`, defaults to 1): input channels (1 for grey images and spectrograms, 3 for RGB).
        hidden_sizes (`list[int]`, defaults to `(32, 64, 128)`): output channels of each block; its length is the
            number of blocks (3 in the seed design).
        kernel_size (`int`, defaults to 3): convolution kernel size.
        dropout (`float`, defaults to 0.0): dropout on the output tokens.
        spectrogram_normalization (`str`, defaults to `"utterance"`): `"utterance"` standardises each mel bin of a
            spectrogram over the clip's valid frames, `x' = (x - mean_t x) / std_t x` (cepstral mean and variance
            normalisation: removes the stationary background, e.g. noise, that a log-mel shares across frames);
            `"none"` feeds the spectrogram as given. Images are never normalised here.
        normalization (`str`, defaults to `"group"`): the norm after each convolution: `"group"` (GroupNorm with
            `min(8, channels)` groups: independent of the batch), `"batch"` (BatchNorm2d: running statistics at
            evaluation; a training batch needs more than one row) or `"none"`.
        convs_per_block (`int`, defaults to 1): convolutions (each with its norm and GELU) before each max-pool;
            the depth is `len(hidden_sizes) × convs_per_block`.
        global_pooling (`str`, defaults to `"none"`): `"none"` returns the final feature map as `H'·W'` tokens
            (pooled downstream, mask-aware); `"average"` / `"max"` reduce it to one token by global average / max
            pooling over the valid positions, `z_c = mean_{h,w} F_{c,h,w}` / `max_{h,w} F_{c,h,w}`.
    """

    model_type = "mmfnet_conv"

    num_channels: int = 1
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    dropout: float = 0.0
    spectrogram_normalization: str = "utterance"
    normalization: str = "group"
    convs_per_block: int = 1
    global_pooling: str = "none"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.hidden_sizes = list(self.hidden_sizes)
        if self.normalization not in CONV_NORMALIZATIONS:
            raise ValueError(f"`normalization` must be one of {CONV_NORMALIZATIONS}, got {self.normalization!r}.")
        if self.global_pooling not in CONV_GLOBAL_POOLINGS:
            raise ValueError(f"`global_pooling` must be one of {CONV_GLOBAL_POOLINGS}, got {self.global_pooling!r}.")
        if isinstance(self.convs_per_block, bool) or self.convs_per_block < 1:
            raise ValueError(f"`convs_per_block` must be an int >= 1, got {self.convs_per_block!r}.")
        if self.spectrogram_normalization not in ("utterance", "none"):
            raise ValueError(
                f"`spectrogram_normalization` must be 'utterance' or 'none', got {self.spectrogram_normalization!r}."
            )
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"`hidden_sizes` must be a non-empty list of positive ints, got {self.hidden_sizes}.")
        if self.num_channels < 1:
            raise ValueError(f"`num_channels` must be >= 1, got {self.num_channels}.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd int, got {self.kernel_size}.")
        super().__post_init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.hidden_sizes[-1]


@strict
class MMFNetConfig(PreTrainedConfig):
    r"""
    Configuration of [`MMFNetModel`] and its heads: which encoder each modality uses and how they are fused.

    Each of `vision_config`, `text_config`, `audio_config` is any `AutoConfig` (object or dict), an
    [`MMFNetConvConfig`], or `None` when the model has no such modality; at least one must be set.
    Modality order everywhere (columns of `modality_mask`, rows of `modality_embeds`) is vision, text, audio,
    restricted to the configured ones.

    Args:
        fusion_type (`str`, defaults to `"concat"`): one of `concat`, `gated`, `attention`, `tensor`, `low_rank`,
            `transformer` (see `fusion_mmfnet.py` for the math of each).
        fusion_dim (`int`, defaults to 256): width `d` each modality is projected to, and of the fused embedding.
        fusion_hidden_dim (`int`, defaults to 512): hidden width of the fusion MLPs / feed-forward layers.
        fusion_layers (`int`, defaults to 2): layers of the `transformer` fusion.
        fusion_heads (`int`, defaults to 4): attention heads of the `transformer` fusion.
        tensor_fusion_dim (`int`, defaults to 16): per-modality width `t` before the outer product of `tensor`
            fusion; the product has `(t + 1)^M` entries.
        low_rank_rank (`int`, defaults to 4): rank `r` of the `low_rank` fusion factors.
        dropout (`float`, defaults to 0.1): dropout in projections, fusion and head.
        vision_pooling / text_pooling / audio_pooling (`str`, defaults to `"mean"`): how an encoder's
            `last_hidden_state` becomes one vector: `mean` / `max` (mask-aware), `cls` (first token), `pooler`
            (the backbone's `pooler_output`), `attention` (learned query, mask-aware softmax).
        modality_dropout (`float`, defaults to 0.0): in training, probability of hiding each present modality of a
            sample (at least one always stays), so the model learns to work with missing modalities.
        freeze_vision / freeze_text / freeze_audio (`bool`, defaults to `False`): freeze that encoder (no
            gradients, kept in eval mode, run under `torch.no_grad`).
        contrastive_weight (`float`, defaults to 0.0): weight of a CLIP-style alignment loss between each pair of
            present modalities' projected embeddings (0 disables it and its parameters).
        logit_scale_init_value (`float`, defaults to 2.6592): initial `log` temperature of that loss; the scale
            `exp(logit_scale)` is clamped at 100.
        aux_unimodal_weight (`float`, defaults to 0.0): weight of auxiliary per-modality classifiers (0 disables).
        modality_balance (`str`, defaults to `"none"`): training-time modality balance (single-label
            classification, two or more modalities, `aux_unimodal_weight > 0`): `"ogm"` scales the gradient of the
            dominant modality's branch by `k_m = 1 − tanh(α · ρ_m)`, where `ρ_m > 1` is the ratio of its auxiliary
            head's mean true-class probability to the other modalities' (on-the-fly gradient modulation, Peng et
            al. 2022); `"ogm_ge"` also adds Gaussian noise of the gradient's own scale to every branch. See
            `balance_mmfnet.py` for the math. `"none"` trains every branch with its plain gradient.
        modality_balance_alpha (`float`, defaults to 0.5): OGM's `α`: how strongly the dominant branch is slowed.
        initializer_range (`float`, defaults to 0.02): std of normal initialisations.
    """

    model_type = "mmfnet"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="wav2vec2", optional=True),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    audio_config: PreTrainedConfig | dict | None = None
    fusion_type: str = "concat"
    fusion_dim: int = 256
    fusion_hidden_dim: int = 512
    fusion_layers: int = 2
    fusion_heads: int = 4
    tensor_fusion_dim: int = 16
    low_rank_rank: int = 4
    dropout: float = 0.1
    vision_pooling: str = "mean"
    text_pooling: str = "mean"
    audio_pooling: str = "mean"
    modality_dropout: float = 0.0
    freeze_vision: bool = False
    freeze_text: bool = False
    freeze_audio: bool = False
    contrastive_weight: float = 0.0
    logit_scale_init_value: float = 2.6592
    aux_unimodal_weight: float = 0.0
    modality_balance: str = "none"
    modality_balance_alpha: float = 0.5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        for modality in MODALITIES:
            key = f"{modality}_config"
            sub_config = getattr(self, key)
            # The seed CNN's model_type is unknown to AutoConfig in a process that loads MMFNet as remote code.
            if isinstance(sub_config, dict) and sub_config.get("model_type") == MMFNetConvConfig.model_type:
                setattr(self, key, MMFNetConvConfig(**{k: v for k, v in sub_config.items() if k != "model_type"}))
            elif sub_config is not None and not isinstance(sub_config, (dict, PreTrainedConfig)):
                raise TypeError(
                    f"`{key}` must be a PreTrainedConfig, a dict or None, got {type(sub_config).__name__}."
                )
        if all(getattr(self, f"{m}_config") is None for m in MODALITIES):
            raise ValueError("MMFNetConfig needs at least one of `vision_config`, `text_config`, `audio_config`.")
        if self.fusion_type not in FUSION_TYPES:
            raise ValueError(f"`fusion_type` must be one of {FUSION_TYPES}, got {self.fusion_type!r}.")
        for modality in MODALITIES:
            pooling = getattr(self, f"{modality}_pooling")
            if pooling not in POOLING_TYPES:
                raise ValueError(f"`{modality}_pooling` must be one of {POOLING_TYPES}, got {pooling!r}.")
        for name in (
            "fusion_dim",
            "fusion_hidden_dim",
            "fusion_layers",
            "fusion_heads",
            "tensor_fusion_dim",
            "low_rank_rank",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
        if self.fusion_type == "transformer" and self.fusion_dim % self.fusion_heads:
            raise ValueError(
                f"`fusion_dim` ({self.fusion_dim}) must be divisible by `fusion_heads` ({self.fusion_heads})."
            )
        for name, low, high in (
            ("dropout", 0.0, 1.0),
            ("modality_dropout", 0.0, 1.0),
            ("contrastive_weight", 0.0, float("inf")),
            ("aux_unimodal_weight", 0.0, float("inf")),
            ("modality_balance_alpha", 0.0, float("inf")),
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value < high:
                raise ValueError(f"`{name}` must be a number in [{low}, {high}), got {value!r}.")
        if self.modality_balance not in MODALITY_BALANCES:
            raise ValueError(f"`modality_balance` must be one of {MODALITY_BALANCES}, got {self.modality_balance!r}.")
        if self.modality_balance != "none" and (self.aux_unimodal_weight <= 0 or len(self.modalities) < 2):
            raise ValueError(
                f"`modality_balance={self.modality_balance!r}` compares the modalities through the auxiliary "
                f"unimodal heads: it needs `aux_unimodal_weight` > 0 (got {self.aux_unimodal_weight}) and at least "
                f"two modalities (got {list(self.modalities)})."
            )
        super().__post_init__(**kwargs)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The configured modalities, in the canonical order (vision, text, audio)."""
        return tuple(m for m in MODALITIES if getattr(self, f"{m}_config") is not None)


__all__ = [
    "CONV_GLOBAL_POOLINGS",
    "CONV_NORMALIZATIONS",
    "FUSION_TYPES",
    "MODALITIES",
    "MODALITY_BALANCES",
    "POOLING_TYPES",
    "MMFNetConfig",
    "MMFNetConvConfig",
]
