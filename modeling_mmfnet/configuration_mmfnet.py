"""Configurations of MMFNet and of its small from-scratch convolutional backbone."""

import dataclasses
import difflib
from typing import Any, ClassVar, Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODALITIES: tuple[str, ...] = ("vision", "text", "audio")
FusionType = Literal["concat", "gated", "attention", "tensor", "low_rank", "transformer"]
PoolingType = Literal["mean", "cls", "max", "pooler", "attention"]
FUSION_TYPES: tuple[str, ...] = get_args(FusionType)
POOLING_TYPES: tuple[str, ...] = get_args(PoolingType)
ModalityBalance = Literal["none", "ogm", "ogm_ge"]
MODALITY_BALANCES: tuple[str, ...] = get_args(ModalityBalance)
CONV_NORMALIZATIONS: tuple[str, ...] = ("group", "batch", "none")
CONV_GLOBAL_POOLINGS: tuple[str, ...] = ("none", "average", "max")
PROBLEM_TYPES: tuple[str, ...] = ("regression", "single_label_classification", "multi_label_classification")
MAX_FUSION_PARAMETERS: int = 1_000_000_000
"""The most parameters the fusion and heads may have (4 GB in float32); larger configs are refused when built."""

# Keys `PreTrainedConfig.__init__` receives that are not fields: set by transformers itself (`from_pretrained`,
# `to_dict`, `save_pretrained`, remote code), or legacy attributes of configs saved by transformers 4.x.
TRANSFORMERS_CONFIG_KEYS: frozenset[str] = frozenset(
    {
        "model_type", "num_labels", "name_or_path", "_name_or_path", "_commit_hash", "torch_dtype", "auto_map",
        "attn_implementation", "experts_implementation", "output_attentions", "per_layer_config",
        "_attn_implementation_internal", "_experts_implementation_internal", "_attn_implementation_autoset",
        "rope_scaling", "rope_theta", "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads",
        "tie_word_embeddings", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
        "tie_encoder_decoder", "finetuning_task", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id",
        "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params", "use_return_dict",
        "custom_pipelines",
    }
)  # fmt: skip


# --------------------------------------------------------------------------------------- reliability checks (#14)
def check_unknown_kwargs(config: PreTrainedConfig, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments that are no field of `config` (a typo would silently keep the default).

    A config read from a saved `config.json` (it carries `transformers_version`) is exempt: transformers lets any
    attribute be set on a config and saved with it (`config.foo = 1`), and such a checkpoint must keep loading.
    """
    from transformers import GenerationConfig

    if getattr(config, "transformers_version", None) is not None:
        return

    exempt = TRANSFORMERS_CONFIG_KEYS | set(GenerationConfig._get_default_generation_params())
    unknown = [key for key in kwargs if key not in exempt]
    if not unknown:
        return
    valid = sorted(f.name for f in dataclasses.fields(config) if not f.name.startswith("_"))
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
        hints.append(f"`{key}`" + (f" (did you mean {', '.join(f'`{c}`' for c in close)}?)" if close else ""))
    raise TypeError(
        f"{type(config).__name__} got unknown argument(s) {', '.join(hints)}. Valid arguments: {', '.join(valid)}."
    )


def check_flags(config: PreTrainedConfig, names: tuple[str, ...]) -> None:
    """Boolean fields must be real booleans: `freeze_text="no"` is truthy and would freeze the encoder."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be a bool (True or False), got {value!r} ({type(value).__name__}).")


def check_labels_config(config: PreTrainedConfig, kwargs: dict[str, Any]) -> None:
    """`num_labels` ≥ 1, an `id2label` of that length, and one of transformers' three `problem_type`s."""
    num_labels = kwargs.get("num_labels")
    if num_labels is not None and (not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1):
        raise ValueError(f"`num_labels` must be an int >= 1, got {num_labels!r}.")
    if config.id2label is not None:
        if not isinstance(config.id2label, dict):
            raise TypeError(f"`id2label` must be a dict {{class id: name}}, got {type(config.id2label).__name__}.")
        # a config read from a file (it carries `transformers_version`) may be re-headed with `num_labels=`, as in
        # transformers; a config built by hand with disagreeing `id2label` and `num_labels` is a mistake
        if num_labels is not None and len(config.id2label) != num_labels and config.transformers_version is None:
            raise ValueError(
                f"`id2label` has {len(config.id2label)} entries but `num_labels` is {num_labels}; give one name per "
                "class, or leave one of them out."
            )
        if len(config.id2label) < 1:
            raise ValueError("`id2label` is empty; a classifier needs at least one class.")
    if config.label2id is not None and config.id2label is not None and len(config.label2id) != len(config.id2label):
        raise ValueError(
            f"`label2id` has {len(config.label2id)} entries but `id2label` has {len(config.id2label)}; they must "
            "name the same classes."
        )
    if config.problem_type is not None and config.problem_type not in PROBLEM_TYPES:
        raise ValueError(f"`problem_type` must be one of {PROBLEM_TYPES} or None, got {config.problem_type!r}.")


def check_sub_config_dicts(config: PreTrainedConfig, keys: tuple[str, ...]) -> None:
    """A sub-config given as a dict must say which model it is: without `model_type` a default would be built."""
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, dict) and not value.get("model_type"):
            raise ValueError(
                f"`{key}` is a dict without `model_type`, so it is unclear which encoder it describes (it would "
                f"silently become a default config). Add e.g. `model_type='bert'`, or pass a config object."
            )


def estimate_fusion_parameters(config: "MMFNetConfig") -> int:
    r"""Parameters of the fusion module, the missing embeddings and the heads (encoders and projections aside).

    `tensor` fusion has `(t + 1)^M · h` weights in its first layer; the others grow with `d²` and `M`.
    """
    num_modalities = len(config.modalities)
    dim, hidden, num_labels = config.fusion_dim, config.fusion_hidden_dim, max(config.num_labels or 1, 1)
    mlp = hidden + hidden * dim + dim
    sizes = {
        "concat": num_modalities * dim * hidden + mlp,
        "gated": num_modalities * dim * (dim + 1) + (num_modalities * dim) * (num_modalities * dim + 1),
        "attention": dim * dim + 2 * dim,
        "tensor": num_modalities * (dim + 1) * config.tensor_fusion_dim
        + (config.tensor_fusion_dim + 1) ** num_modalities * hidden
        + mlp
        + 2 * dim,
        "low_rank": num_modalities * config.low_rank_rank * (dim + 1) * dim + config.low_rank_rank + 3 * dim,
        "transformer": config.fusion_layers * (4 * dim * dim + 2 * dim * hidden + hidden + 9 * dim)
        + (num_modalities + 3) * dim,
    }
    heads = (dim + 1) * num_labels * (1 + num_modalities) + num_modalities * dim
    return sizes.get(config.fusion_type, 0) + heads


def check_size(config: "MMFNetConfig") -> None:
    """Refuse a fusion whose parameter count would exhaust memory, before anything is allocated."""
    count = estimate_fusion_parameters(config)
    if count > MAX_FUSION_PARAMETERS:
        raise ValueError(
            f"This config's {config.fusion_type!r} fusion and heads would have about {count:,} parameters "
            f"({count * 4 / 2**30:,.1f} GiB in float32), over the limit of {MAX_FUSION_PARAMETERS:,}. Lower "
            "`tensor_fusion_dim` (tensor fusion grows as (tensor_fusion_dim + 1)^modalities), `fusion_dim` or "
            "`fusion_hidden_dim`."
        )


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
    dropout: float | int = 0.0
    spectrogram_normalization: str = "utterance"
    normalization: str = "group"
    convs_per_block: int = 1
    global_pooling: str = "none"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        check_unknown_kwargs(self, kwargs)
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
        modality_balance (`str`, defaults to `"none"`): training-time modality balance (single-label
            classification, two or more modalities, `aux_unimodal_weight > 0`): `"ogm"` scales the gradient of the
            dominant modality's branch by `k_m = 1 − tanh(α · ρ_m)`, where `ρ_m > 1` is the ratio of its auxiliary
            head's mean true-class probability to the other modalities' (on-the-fly gradient modulation, Peng et
            al. 2022); `"ogm_ge"` also adds Gaussian noise of the gradient's own scale to every branch. See
            `balance_mmfnet.py` for the math. `"none"` trains every branch with its plain gradient.
        modality_balance_alpha (`float`, defaults to 0.5): OGM's `α`: how strongly the dominant branch is slowed.
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
        check_input_values (`bool`, defaults to `True`): `forward` checks the values of its inputs and labels (no
            NaN / inf, token ids within the vocabulary, 0/1 masks, no padding-only row of a present sample) and
            names the argument at fault; one reduction per tensor and one host sync per call. `False` skips these
            (dtype and shape checks always run).
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
    modality_balance: ModalityBalance = "none"
    modality_balance_alpha: float | int = 0.5
    initializer_range: float = 0.02
    check_input_values: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        check_unknown_kwargs(self, kwargs)
        check_flags(self, ("freeze_vision", "freeze_text", "freeze_audio", "check_input_values"))
        check_labels_config(self, kwargs)
        check_sub_config_dicts(self, tuple(f"{m}_config" for m in MODALITIES))
        for modality in MODALITIES:
            key = f"{modality}_config"
            sub_config = getattr(self, key)
            # The seed CNN's model_type is unknown to AutoConfig in a process that loads MMFNet as remote code.
            if isinstance(sub_config, dict) and sub_config.get("model_type") == MMFNetConvConfig.model_type:
                setattr(self, key, MMFNetConvConfig(**{k: v for k, v in sub_config.items() if k != "model_type"}))
        super().__post_init__(**kwargs)
        check_size(self)

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
            ("modality_balance_alpha", 0.0, float("inf")),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not low <= value < high:
                raise ValueError(f"`{name}` must be a number in [{low}, {high}), got {value!r}.")
        if isinstance(self.augment_num_masks, bool) or self.augment_num_masks < 1:
            raise ValueError(f"`augment_num_masks` must be an int >= 1, got {self.augment_num_masks!r}.")

    def validate_modality_balance(self) -> None:
        """OGM compares the modalities through the auxiliary unimodal heads: two or more modalities, aux heads on."""
        if self.modality_balance != "none" and (self.aux_unimodal_weight <= 0 or len(self.modalities) < 2):
            raise ValueError(
                f"`modality_balance={self.modality_balance!r}` compares the modalities through the auxiliary "
                f"unimodal heads: it needs `aux_unimodal_weight` > 0 (got {self.aux_unimodal_weight}) and at least "
                f"two modalities (got {list(self.modalities)})."
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        """The configured modalities, in the canonical order (vision, text, audio)."""
        return tuple(m for m in MODALITIES if getattr(self, f"{m}_config") is not None)


__all__ = [
    "CONV_GLOBAL_POOLINGS",
    "CONV_NORMALIZATIONS",
    "FUSION_TYPES",
    "MAX_FUSION_PARAMETERS",
    "MODALITIES",
    "MODALITY_BALANCES",
    "POOLING_TYPES",
    "PROBLEM_TYPES",
    "MMFNetConfig",
    "MMFNetConvConfig",
]
