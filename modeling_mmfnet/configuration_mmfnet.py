"""Configurations of MMFNet and of its small from-scratch convolutional backbone."""

from typing import Any, ClassVar, Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODALITIES: tuple[str, ...] = ("vision", "text", "audio")
FusionType = Literal["concat", "gated", "attention", "tensor", "low_rank", "transformer"]
PoolingType = Literal["mean", "cls", "max", "pooler", "attention"]
FUSION_TYPES: tuple[str, ...] = get_args(FusionType)
POOLING_TYPES: tuple[str, ...] = get_args(PoolingType)


@strict
class MMFNetConvConfig(PreTrainedConfig):
    r"""
    Configuration of [`MMFNetConvModel`], the seed design's per-modality feature extractor: a stack of
    `conv(k×k) → GroupNorm → GELU → max-pool(2)` blocks over `num_channels` input channels. It encodes images
    `(B, C, H, W)` and spectrograms `(B, n_mels, T)` (one channel) into a token sequence `(B, H'·W', hidden_size)`.

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
    """

    model_type = "mmfnet_conv"

    num_channels: int = 1
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    dropout: float | int = 0.0
    spectrogram_normalization: str = "utterance"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.hidden_sizes = list(self.hidden_sizes)
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
        fusion_type (`Literal[...]`, defaults to `"concat"`): one of `concat`, `gated`, `attention`, `tensor`,
            `low_rank`, `transformer` (see `fusion_mmfnet.py` for the math of each).
        fusion_dim (`int`, defaults to 256): width `d` each modality is projected to, and of the fused embedding.
        fusion_hidden_dim (`int`, defaults to 512): hidden width of the fusion MLPs / feed-forward layers.
        fusion_layers (`int`, defaults to 2): layers of the `transformer` fusion.
        fusion_heads (`int`, defaults to 4): attention heads of the `transformer` fusion.
        tensor_fusion_dim (`int`, defaults to 16): per-modality width `t` before the outer product of `tensor`
            fusion; the product has `(t + 1)^M` entries.
        low_rank_rank (`int`, defaults to 4): rank `r` of the `low_rank` fusion factors.
        dropout (`float`, defaults to 0.1): dropout in projections, fusion and head.
        vision_pooling / text_pooling / audio_pooling (`Literal[...]`, defaults to `"mean"`): how an encoder's
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
        augment_image_shift (`float`, defaults to 0.0): in training only, shift each image by up to this fraction of
            its side (a random crop of the edge-padded image); see `augmentation_mmfnet.py`.
        augment_image_flip (`float`, defaults to 0.0): in training only, probability of a horizontal flip.
        augment_time_mask / augment_frequency_mask (`float`, defaults to 0.0): in training only, SpecAugment on
            spectrogram inputs (`input_features`): `augment_num_masks` bands of up to this fraction of the frames /
            mel bins are set to the clip's mean. Raw waveforms (`input_values`) use their encoder's own masking
            (e.g. Wav2Vec2's `mask_time_prob`).
        augment_num_masks (`int`, defaults to 2): time and frequency bands per spectrogram.
        vision_encoder_name / text_encoder_name / audio_encoder_name (`str`, *optional*): the Hub id or local path
            each pretrained encoder was loaded from (set by `from_encoders_pretrained`; pass a Hub id yourself when
            the encoder came from a local copy of a Hub checkpoint). Model cards list Hub ids as `base_model`.
        initializer_range (`float`, defaults to 0.02): std of normal initialisations.
    """

    model_type = "mmfnet"
    # `Trainer.evaluate` / `predict` pass only the logits to `compute_metrics` (ask for more with `ignore_keys=[]`)
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "fused_embeds",
        "modality_embeds",
        "modality_mask",
        "unimodal_logits",
        "vision_model_output",
        "text_model_output",
        "audio_model_output",
    ]
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="wav2vec2", optional=True),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    audio_config: PreTrainedConfig | dict | None = None
    fusion_type: FusionType = "concat"
    fusion_dim: int = 256
    fusion_hidden_dim: int = 512
    fusion_layers: int = 2
    fusion_heads: int = 4
    tensor_fusion_dim: int = 16
    low_rank_rank: int = 4
    dropout: float | int = 0.1
    vision_pooling: PoolingType = "mean"
    text_pooling: PoolingType = "mean"
    audio_pooling: PoolingType = "mean"
    modality_dropout: float | int = 0.0
    freeze_vision: bool = False
    freeze_text: bool = False
    freeze_audio: bool = False
    contrastive_weight: float | int = 0.0
    logit_scale_init_value: float = 2.6592
    aux_unimodal_weight: float | int = 0.0
    augment_image_shift: float | int = 0.0
    augment_image_flip: float | int = 0.0
    augment_time_mask: float | int = 0.0
    augment_frequency_mask: float | int = 0.0
    augment_num_masks: int = 2
    vision_encoder_name: str | None = None
    text_encoder_name: str | None = None
    audio_encoder_name: str | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        for modality in MODALITIES:
            key = f"{modality}_config"
            sub_config = getattr(self, key)
            # The seed CNN's model_type is unknown to AutoConfig in a process that loads MMFNet as remote code.
            if isinstance(sub_config, dict) and sub_config.get("model_type") == MMFNetConvConfig.model_type:
                setattr(self, key, MMFNetConvConfig(**{k: v for k, v in sub_config.items() if k != "model_type"}))
        super().__post_init__(**kwargs)

    # Structural checks: `@strict` runs every `validate_*` method after `__init__` and before `save_pretrained`, so
    # a config edited after construction is checked again; the field types (Literal choices included) are checked
    # on every assignment. Both raise `StrictDataclass…Error` naming the field, with the reason below as its cause.
    def validate_modalities(self) -> None:
        """At least one modality."""
        if all(getattr(self, f"{m}_config") is None for m in MODALITIES):
            raise ValueError("MMFNetConfig needs at least one of `vision_config`, `text_config`, `audio_config`.")

    def validate_fusion(self) -> None:
        """Positive widths and counts; the transformer fusion's width splits evenly into its heads."""
        for name in (
            "fusion_dim",
            "fusion_hidden_dim",
            "fusion_layers",
            "fusion_heads",
            "tensor_fusion_dim",
            "low_rank_rank",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
        if self.fusion_type == "transformer" and self.fusion_dim % self.fusion_heads:
            raise ValueError(
                f"`fusion_dim` ({self.fusion_dim}) must be divisible by `fusion_heads` ({self.fusion_heads})."
            )

    def validate_rates_and_weights(self) -> None:
        """Dropout rates in [0, 1); loss weights >= 0."""
        for name, low, high in (
            ("dropout", 0.0, 1.0),
            ("modality_dropout", 0.0, 1.0),
            ("contrastive_weight", 0.0, float("inf")),
            ("aux_unimodal_weight", 0.0, float("inf")),
            ("augment_image_shift", 0.0, 0.5),
            ("augment_image_flip", 0.0, 1.0),
            ("augment_time_mask", 0.0, 1.0),
            ("augment_frequency_mask", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not low <= value < high:
                raise ValueError(f"`{name}` must be a number in [{low}, {high}), got {value!r}.")
        if isinstance(self.augment_num_masks, bool) or self.augment_num_masks < 1:
            raise ValueError(f"`augment_num_masks` must be an int >= 1, got {self.augment_num_masks!r}.")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The configured modalities, in the canonical order (vision, text, audio)."""
        return tuple(m for m in MODALITIES if getattr(self, f"{m}_config") is not None)


__all__ = ["MMFNetConfig", "MMFNetConvConfig", "MODALITIES", "FUSION_TYPES", "POOLING_TYPES"]
