"""MMFNet: fuse pretrained vision, text and audio encoders (any `AutoModel` backbone each) into one model.

Data flow, per configured modality `m` (vision, text, audio):

    inputs ─► encoder ─► pool(last_hidden_state, token mask) ─► h_m ─► LN(W_m h_m + b_m) ─► x_m ∈ R^d
    x_m ← missing_m where modality_mask[:, m] is False        (learned missing-modality embedding)
    fused = fusion(x, modality_mask) ∈ R^d ─► head

A modality absent from the whole batch never runs its encoder; rows absent from a batch are not encoded either.
Precomputed pooled features (`vision_embeds=`, …) skip the encoder, which is how frozen-encoder caching works.
"""

import contextlib
import copy
import functools
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple

from .augmentation_mmfnet import augment_inputs
from .balance_mmfnet import modulate_modality_gradients, ogm_coefficients
from .configuration_mmfnet import MODALITIES, MMFNetConfig
from .fusion_mmfnet import (
    MMFNetAttentionFusion,
    MMFNetLowRankFusion,
    MMFNetModalityLinear,
    MMFNetTransformerFusion,
    build_fusion,
    masked_softmax,
)
from .modeling_mmfnet_conv import MMFNetConvModel
from .pipeline_mmfnet import SAVED_TASK, MMFNetClassificationPipeline
from .saving_mmfnet import MMFNetCardHubMixin, atomic_save, check_save_directory
from .validation_mmfnet import validate_labels, validate_labels_type, validate_model_inputs

logger = logging.get_logger(__name__)

ENCODER_INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "vision": ("pixel_values",),
    "text": ("input_ids", "attention_mask", "token_type_ids"),
    "audio": ("input_values", "input_features", "audio_attention_mask"),
}
"""The `forward` arguments that feed each modality's encoder (the first of each group marks it present)."""

EMBEDS_INPUT_NAMES: dict[str, str] = {modality: f"{modality}_embeds" for modality in MODALITIES}
"""The `forward` argument that carries each modality's precomputed pooled encoder features."""

MMFNET_INPUT_NAMES: tuple[str, ...] = (
    *(name for modality in MODALITIES for name in ENCODER_INPUT_NAMES[modality]),
    *EMBEDS_INPUT_NAMES.values(),
    "modality_mask",
)
"""Every input argument of MMFNet's `forward`s and `get_modality_embeddings`, in signature order (all optional)."""

ENCODER_KWARGS: tuple[str, ...] = ("output_attentions", "output_hidden_states")
"""The `TransformersKwargs` that MMFNet passes through to every encoder it runs."""


def mmfnet_inputs(function: Callable[..., Any]) -> Callable[..., Any]:
    """Give `function(self, inputs, ...)` MMFNet's input arguments as explicit, optional parameters.

    The inputs are written once, in `MMFNET_INPUT_NAMES`; the decorated method's public signature is
    `(self, <MMFNET_INPUT_NAMES>=None, <its own parameters after inputs>, **kwargs)`, so `inspect.signature`, the
    Trainer's column filter, `main_input_name` and positional calls all see the same ordered list. The method
    receives them gathered in one dict `inputs` (name → tensor or None).
    """
    parameters = list(inspect.signature(function).parameters.values())
    if len(parameters) < 2 or parameters[1].name != "inputs":
        raise TypeError(f"{function.__qualname__} must take `(self, inputs, ...)` to receive MMFNet's inputs.")
    input_parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=torch.Tensor | None)
        for name in MMFNET_INPUT_NAMES
    ]
    signature = inspect.signature(function).replace(parameters=[parameters[0], *input_parameters, *parameters[2:]])
    positional = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    positional = positional[1:]  # without self

    @functools.wraps(function)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(positional):
            raise TypeError(
                f"{function.__qualname__}() takes at most {len(positional)} positional arguments "
                f"({', '.join(positional)}), got {len(args)}."
            )
        for name, value in zip(positional, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{function.__qualname__}() got multiple values for argument `{name}`.")
            kwargs[name] = value
        inputs = {name: kwargs.pop(name, None) for name in MMFNET_INPUT_NAMES}
        return function(self, inputs, **kwargs)

    wrapper.__signature__ = signature
    return wrapper


def split_encoder_kwargs(kwargs: dict[str, Any], caller: str) -> dict[str, Any]:
    """The `output_attentions` / `output_hidden_states` kwargs to pass to the encoders; refuse any other kwarg."""
    unknown = sorted(set(kwargs) - set(ENCODER_KWARGS))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword arguments {unknown}; it takes the inputs {list(MMFNET_INPUT_NAMES)}"
            f" and {list(ENCODER_KWARGS)} (plus `return_dict`)."
        )
    return {name: value for name, value in kwargs.items() if value is not None}


@dataclass
class MMFNetModelOutput(ModelOutput):
    r"""
    fused_embeds (`torch.FloatTensor` of shape `(batch_size, fusion_dim)`):
        The fused multimodal embedding.
    modality_embeds (`torch.FloatTensor` of shape `(batch_size, num_modalities, fusion_dim)`):
        Each modality's projected embedding (the learned missing embedding where the modality is absent).
    modality_mask (`torch.BoolTensor` of shape `(batch_size, num_modalities)`):
        Which modalities were present (and not dropped by modality dropout) for each sample.
    vision_model_output / text_model_output / audio_model_output (`BaseModelOutput`, *optional*):
        The encoders' outputs for the rows they encoded (None when the encoder did not run).
    """

    fused_embeds: torch.FloatTensor | None = None
    modality_embeds: torch.FloatTensor | None = None
    modality_mask: torch.BoolTensor | None = None
    vision_model_output: BaseModelOutput | None = None
    text_model_output: BaseModelOutput | None = None
    audio_model_output: BaseModelOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields in order, each encoder output as a tuple too (as `CLIPOutput` does)."""
        return tuple(value.to_tuple() if key.endswith("_model_output") else value for key, value in self.items())


@dataclass
class MMFNetClassifierOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
        Task loss, plus the weighted auxiliary unimodal and contrastive losses when enabled.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Classification (or regression) scores before softmax / sigmoid.
    fused_embeds, modality_embeds, modality_mask: see [`MMFNetModelOutput`].
    unimodal_logits (`torch.FloatTensor` of shape `(batch_size, num_modalities, num_labels)`, *optional*):
        The auxiliary per-modality heads' scores (when `aux_unimodal_weight > 0`).
    vision_model_output / text_model_output / audio_model_output (`BaseModelOutput`, *optional*):
        The encoders' outputs, with their attentions / hidden states when asked for; see [`MMFNetModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None
    modality_embeds: torch.FloatTensor | None = None
    modality_mask: torch.BoolTensor | None = None
    unimodal_logits: torch.FloatTensor | None = None
    vision_model_output: BaseModelOutput | None = None
    text_model_output: BaseModelOutput | None = None
    audio_model_output: BaseModelOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields in order, each encoder output as a tuple too (as `CLIPOutput` does)."""
        return tuple(value.to_tuple() if key.endswith("_model_output") else value for key, value in self.items())


def encoder_hidden_size(config: PreTrainedConfig) -> int:
    """Width of an encoder's `last_hidden_state` (hidden_size, d_model, or the last of hidden_sizes)."""
    for name in ("hidden_size", "d_model", "embed_dim", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:
        return hidden_sizes[-1]
    raise ValueError(f"Cannot tell the output width of a {type(config).__name__}; set `hidden_size` on it.")


def has_pooling_flag(encoder_class: type) -> bool:
    """Whether the encoder class builds its pooler optionally (`add_pooling_layer`, as BERT and ViT do)."""
    return "add_pooling_layer" in inspect.signature(encoder_class.__init__).parameters


def build_encoder(config: PreTrainedConfig, with_pooler: bool = True) -> PreTrainedModel:
    """A randomly initialised encoder for `config` (the encoder half of encoder-decoder models).

    `with_pooler=False` builds it without its pooler where the class allows it (`add_pooling_layer=False`).
    """
    if config.model_type == MMFNetConvModel.config_class.model_type:  # unknown to AutoModel in remote-code processes
        return MMFNetConvModel(config)
    kwargs = {}
    if not with_pooler:
        encoder_class = AutoModel._model_mapping.get(type(config), None)
        if isinstance(encoder_class, type) and has_pooling_flag(encoder_class):
            kwargs["add_pooling_layer"] = False
    encoder = AutoModel.from_config(config, **kwargs)
    encoder = encoder.get_encoder() if getattr(config, "is_encoder_decoder", False) else encoder
    return drop_pooler(encoder) if not with_pooler else encoder


def drop_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    """Remove an encoder's own pooler that MMFNet does not use (its weights would never get a gradient).

    Classes with `add_pooling_layer` accept `pooler = None`; another class's pooler is kept but frozen, so that
    DDP with `find_unused_parameters=False` and gradient checkpointing see no trainable parameter without a grad.
    """
    pooler = getattr(encoder, "pooler", None)
    if not isinstance(pooler, nn.Module):
        return encoder
    if has_pooling_flag(type(encoder)):
        encoder.pooler = None
    else:
        pooler.requires_grad_(False)
    return encoder


class MMFNetPooler(nn.Module):
    r"""Pools encoder tokens `(B, T, H)` (or feature maps `(B, H, h, w)`) into one vector `(B, H)`.

    `mean`: `Σ_t m_t x_t / Σ_t m_t`; `max`: `max_{t: m_t} x_t`; `cls`: `x_0`; `pooler`: the backbone's
    `pooler_output`; `attention`: `Σ_t softmax_t(qᵀ x_t / √H) x_t` over valid tokens, with a learned query `q`.
    """

    def __init__(self, mode: str, hidden_size: int, modality: str) -> None:
        super().__init__()
        self.mode = mode
        self.modality = modality
        self.query = nn.Parameter(torch.empty(hidden_size)) if mode == "attention" else None

    def forward(
        self, hidden_states: torch.Tensor, token_mask: torch.Tensor | None, pooler_output: torch.Tensor | None
    ) -> torch.Tensor:
        if self.mode == "pooler":
            if pooler_output is None:
                raise ValueError(
                    f"`{self.modality}_pooling='pooler'` but the {self.modality} encoder returns no `pooler_output`; "
                    "use 'mean', 'cls', 'max' or 'attention'."
                )
            return pooler_output
        if hidden_states.dim() == 4:  # convolutional feature map (B, H, h, w)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if self.mode == "cls":
            return hidden_states[:, 0]
        if token_mask is None:  # every token is valid: no mask to build, no masked copy of the tokens
            if self.mode == "mean":
                return hidden_states.mean(1)
            if self.mode == "max":
                return hidden_states.amax(1)
            token_mask = hidden_states.new_ones(hidden_states.shape[:2], dtype=torch.bool)
        if self.mode == "mean":  # (B, 1, T) @ (B, T, H): no (B, T, H) weighted copy
            weights = token_mask.to(hidden_states.dtype)
            pooled = torch.bmm(weights.unsqueeze(1), hidden_states).squeeze(1)
            return pooled / weights.sum(1, keepdim=True).clamp(min=1.0)
        if self.mode == "max":
            return hidden_states.masked_fill(~token_mask.unsqueeze(-1), torch.finfo(hidden_states.dtype).min).amax(1)
        scores = hidden_states @ self.query.to(hidden_states.dtype) * hidden_states.shape[-1] ** -0.5
        return torch.einsum("bt,bth->bh", masked_softmax(scores, token_mask, dim=1), hidden_states)


class MMFNetProjection(nn.Module):
    r"""`x = Dropout(LN(W h + b))`: maps a pooled encoder feature to the shared fusion width."""

    def __init__(self, in_features: int, config: MMFNetConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.fusion_dim)
        self.layer_norm = nn.LayerNorm(config.fusion_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer_norm(self.dense(pooled)))


class MMFNetMissingEmbedding(nn.Embedding):
    """Row `m` is the learned embedding that stands in for modality `m` wherever it is absent."""


class MMFNetPreTrainedModel(MMFNetCardHubMixin, PreTrainedModel):
    config: MMFNetConfig
    base_model_prefix = "mmfnet"
    main_input_name = MMFNET_INPUT_NAMES[0]  # `pixel_values`: the first argument of every forward
    input_modalities = ("image", "text", "audio")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MMFNetFusionTransformerLayer"]  # the encoders' own are gathered from the children
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    accepts_loss_kwargs = False
    # an encoder's own pooler is not built when the config pools otherwise: its weights in a pretrained encoder or
    # in an older checkpoint are expected leftovers
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)(vision|text|audio)_model\.pooler\."]

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """`PreTrainedModel.initialize_weights`, except that each encoder is initialised with its own custom-code flag.

        transformers passes the outermost model's flag down to every sub-model; MMFNet's (custom code) makes it skip
        an encoder's modules that own no parameter directly, e.g. Wav2Vec2's feature projection, which then differ
        between `__init__` and `from_pretrained`. MMFNet's own `_init_weights` uses only the guarded
        `transformers.initialization` functions, so the shortcut stays only for other custom-code encoders.
        """

        def apply(module: nn.Module, function: Callable[[nn.Module, bool], None], is_custom_code: bool) -> None:
            for child in module.children():
                if isinstance(child, PreTrainedModel):
                    own = isinstance(child, (MMFNetPreTrainedModel, MMFNetConvModel))
                    apply(child, child._initialize_weights, child.is_custom_code() and not own)
                else:
                    apply(child, function, is_custom_code)
            function(module, is_custom_code)

        apply(self, self._initialize_weights, False)

    def _init_weights(self, module: nn.Module) -> None:
        """Xavier for fusion layers (the default N(0, 0.02) can stall a fusion head), explicit init for raw params."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):  # its own `_reset_parameters` would overwrite loaded weights
            for weight in (module.in_proj_weight, module.q_proj_weight, module.k_proj_weight, module.v_proj_weight):
                if weight is not None:
                    init.xavier_uniform_(weight)
            for bias in (module.in_proj_bias, module.bias_k, module.bias_v):
                if bias is not None:
                    init.zeros_(bias)
        elif isinstance(module, MMFNetModalityLinear):
            bound = math.sqrt(6.0 / sum(module.weight.shape[1:]))
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, MMFNetPooler):
            if module.query is not None:
                init.normal_(module.query, std=module.query.shape[0] ** -0.5)
        elif isinstance(module, MMFNetAttentionFusion):
            init.normal_(module.query, std=module.query.shape[0] ** -0.5)
        elif isinstance(module, MMFNetLowRankFusion):
            fan_in, fan_out = module.factors.shape[-2:]
            init.normal_(module.factors, std=math.sqrt(2.0 / (fan_in + fan_out)))
            init.constant_(module.rank_weights, 1.0 / module.rank_weights.shape[0])
            init.zeros_(module.bias)
        elif isinstance(module, MMFNetTransformerFusion):
            init.normal_(module.cls_token, std=std)
            init.normal_(module.modality_type_embeds, std=std)
        elif isinstance(module, MMFNetMissingEmbedding):
            # projected embeddings are layer-normed (unit scale): the missing embedding lives on that scale
            init.normal_(module.weight, std=1.0)
        elif isinstance(module, MMFNetForSequenceClassification):
            if module.logit_scale is not None:
                init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        else:
            super()._init_weights(module)

    @classmethod
    def from_encoders_pretrained(
        cls,
        vision: str | os.PathLike | PreTrainedModel | PreTrainedConfig | None = None,
        text: str | os.PathLike | PreTrainedModel | PreTrainedConfig | None = None,
        audio: str | os.PathLike | PreTrainedModel | PreTrainedConfig | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        encoder_kwargs: dict[str, dict[str, Any]] | None = None,
        **config_kwargs: Any,
    ) -> "MMFNetPreTrainedModel":
        r"""Build an MMFNet whose encoders start from pretrained checkpoints; fusion and head start fresh.

        Each of `vision`, `text`, `audio` is a Hub id or local folder (loaded with `AutoModel.from_pretrained`, in
        `dtype` — float32 by default, since half-precision backbones break mixed-precision training), an
        already-built `PreTrainedModel`, a config (that encoder is built from scratch, e.g. an
        [`MMFNetConvConfig`]), or `None` for no such modality. `encoder_kwargs[modality]` goes to that encoder's
        `from_pretrained`; the other keyword arguments go to [`MMFNetConfig`] (`fusion_type`, `num_labels`, …).
        Each loaded source is recorded as `config.{modality}_encoder_name` unless given there.
        """
        if vision is None and text is None and audio is None:
            raise ValueError("`from_encoders_pretrained` needs at least one of `vision`, `text`, `audio`.")
        encoder_kwargs = encoder_kwargs or {}
        unknown = set(encoder_kwargs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"`encoder_kwargs` keys must be modalities {MODALITIES}, got {sorted(unknown)}.")
        encoders: dict[str, PreTrainedModel | None] = {}
        sub_configs: dict[str, PreTrainedConfig | None] = {}
        for modality, source in zip(MODALITIES, (vision, text, audio), strict=True):
            encoder = None
            if isinstance(source, PreTrainedModel):
                encoder = source
                if getattr(source.config, "_name_or_path", ""):
                    config_kwargs.setdefault(f"{modality}_encoder_name", str(source.config._name_or_path))
            elif isinstance(source, (str, os.PathLike)):
                encoder = AutoModel.from_pretrained(source, dtype=dtype, **encoder_kwargs.get(modality, {}))
                config_kwargs.setdefault(f"{modality}_encoder_name", str(source))  # the card's `base_model`
                if getattr(encoder.config, "is_encoder_decoder", False):
                    encoder = encoder.get_encoder()
            elif source is not None and not isinstance(source, PreTrainedConfig):
                raise TypeError(
                    f"`{modality}` must be a Hub id or path, a PreTrainedModel, a PreTrainedConfig or None, "
                    f"got {type(source).__name__}."
                )
            encoders[f"{modality}_model"] = encoder
            # a copy: building MMFNetConfig resets its sub-configs' attention implementation
            sub_configs[f"{modality}_config"] = copy.deepcopy(encoder.config) if encoder is not None else source
        config = MMFNetConfig(**sub_configs, **config_kwargs)
        model = cls(config, **encoders)
        return model.eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        r"""`PreTrainedModel.from_pretrained`, with clear errors instead of silently wrong weights.

        Refused: a folder without `config.json`; tensors whose shapes differ from the config's (unless
        `ignore_mismatched_sizes=True`, which re-initialises them); tensors missing from a checkpoint saved by this
        class (e.g. the head), which would otherwise be random (unless `output_loading_info=True`: the caller then
        reads `missing_keys` itself); NaN / inf weights.
        """
        path = pretrained_model_name_or_path
        subfolder = kwargs.get("subfolder", "")
        if path is None:  # transformers' `from_pretrained(None, config=..., state_dict=...)`
            return super().from_pretrained(path, *args, **kwargs)
        if os.path.isfile(path):
            raise OSError(
                f"{str(path)!r} is a file; `from_pretrained` takes the checkpoint folder (with config.json)."
            )
        looks_local = isinstance(path, os.PathLike) or str(path).startswith(("/", "./", "../", "~"))
        if looks_local and not os.path.isdir(os.path.expanduser(path)):
            raise OSError(f"{str(path)!r}: no such checkpoint folder.")
        if os.path.isdir(path) and kwargs.get("config") is None:
            config_file = os.path.join(path, subfolder, "config.json")
            if not os.path.isfile(config_file):
                raise OSError(
                    f"{str(path)!r} has no config.json (looked for {config_file!r}); a checkpoint folder needs the "
                    "config.json that `save_pretrained` writes next to the weights."
                )
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(
                path, *args, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:
            raise OSError(
                f"Cannot read the weights of {str(path)!r}: a safetensors file is corrupt or "
                f"truncated ({error}). Download it again (`force_download=True`) or save the model again."
            ) from error
        check_loaded_weights(
            model, loading_info, str(path), ignore_mismatched_sizes, report_missing=output_loading_info
        )
        # loading re-creates the parameters (requires_grad=True): freeze the encoders the config freezes again
        base = getattr(model, model.base_model_prefix, model)
        for modality in base.config.modalities:
            if getattr(base.config, f"freeze_{modality}"):
                getattr(base, f"{modality}_model").requires_grad_(False)
        return (model, loading_info) if output_loading_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, atomic (see `saving_mmfnet.py`); a path to a file is refused."""
        check_save_directory(save_directory)
        # A saved head must also load as the base model through `AutoModel` with `trust_remote_code=True`.
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", f"{MMFNetModel.__module__.split('.')[-1]}.MMFNetModel")
            self.config.auto_map = auto_map
            if hasattr(self, "classifier"):  # `pipeline(model=folder_or_repo, trust_remote_code=True)`
                pipeline_class = MMFNetClassificationPipeline
                self.config.custom_pipelines = {
                    SAVED_TASK: {
                        "impl": f"{pipeline_class.__module__.split('.')[-1]}.{pipeline_class.__name__}",
                        "pt": ["AutoModelForSequenceClassification"],
                        "type": "multimodal",
                    }
                }
            elif SAVED_TASK in (getattr(self.config, "custom_pipelines", None) or {}):
                # a head checkpoint saved as the base model: its classification pipeline would load a random head
                custom = {k: v for k, v in self.config.custom_pipelines.items() if k != SAVED_TASK}
                self.config.custom_pipelines = custom
        save = super().save_pretrained
        if kwargs.get("push_to_hub"):  # the upload reads the folder it names: save in place, then upload
            result = save(save_directory, *args, **kwargs)
        else:  # staged in a sibling folder, then moved into place: a killed save leaves the previous checkpoint
            result = atomic_save(lambda staging: save(staging, *args, **kwargs), save_directory)
        if self.model_card_hook is not None and kwargs.get("is_main_process", True):
            self.model_card_hook.after_save(self, save_directory)
        return result


HEAD_PARAMETERS = ("classifier.", "unimodal_classifier.", "logit_scale")
"""State-dict prefixes of the head: the only tensors a base-model checkpoint may lack when loaded as a head."""
OPTIONAL_HEAD_PARAMETERS = ("unimodal_classifier.", "logit_scale")
"""Head parts a config option adds (auxiliary heads, the contrastive scale): any checkpoint may lack them."""


def check_loaded_weights(
    model: PreTrainedModel,
    loading_info: dict[str, Any],
    source: str,
    ignore_mismatched_sizes: bool,
    report_missing: bool = False,
) -> None:
    """Raise on what `from_pretrained` would otherwise only log: shape mismatches, missing tensors, NaN / inf.

    With `report_missing` (the caller asked for `output_loading_info=True` and reads `missing_keys` itself), missing
    tensors are logged as a warning instead.
    """
    mismatched = sorted(loading_info.get("mismatched_keys") or ())
    if mismatched and not ignore_mismatched_sizes:
        shapes = "; ".join(f"{key}: checkpoint {tuple(a)} vs model {tuple(b)}" for key, a, b in mismatched[:8])
        more = f" (and {len(mismatched) - 8} more)" if len(mismatched) > 8 else ""
        raise ValueError(
            f"{len(mismatched)} tensor(s) of {source!r} do not fit this config's shapes: {shapes}{more}. A changed "
            "config value (e.g. `num_labels`, `fusion_dim`) causes this; pass `ignore_mismatched_sizes=True` to "
            "re-initialise these tensors (then train them), or load without the changed value."
        )
    missing = sorted(loading_info.get("missing_keys") or ())
    saved_by_this_class = type(model).__name__ in (getattr(model.config, "architectures", None) or [])
    extras = [key for key in missing if key.startswith(OPTIONAL_HEAD_PARAMETERS)]
    if extras:  # e.g. `aux_unimodal_weight` / `contrastive_weight` turned on for further fine-tuning
        logger.warning("%s: new %s initialised (the checkpoint has none; train them).", source, extras)
    absent = [
        key for key in missing if key not in extras and (saved_by_this_class or not key.startswith(HEAD_PARAMETERS))
    ]
    if absent and report_missing:
        logger.warning("%s lacks %d tensor(s), randomly initialised: %s", source, len(absent), absent[:8])
    elif absent:
        raise OSError(
            f"{source!r} lacks {len(absent)} tensor(s) this model needs: {absent[:8]}; they would be randomly "
            "initialised. The checkpoint is incomplete: save it again, or load it with the class that saved it "
            f"({getattr(model.config, 'architectures', None)})."
        )
    not_loaded = set(missing)  # only the checkpoint's own values are checked here
    tensors = [
        (name, t)
        for name, t in model.state_dict().items()
        if t.is_floating_point() and t.device.type != "meta" and name not in not_loaded
    ]
    if tensors:
        finite = torch.stack([torch.isfinite(t).all().to(tensors[0][1].device) for _, t in tensors]).tolist()
        bad = [name for (name, _), ok in zip(tensors, finite, strict=True) if not ok]
        if bad:
            raise ValueError(
                f"{source!r} holds NaN or inf values in {len(bad)} tensor(s): {bad[:8]}. The checkpoint was saved "
                "from a diverged training run or is damaged; use an earlier checkpoint."
            )


class MMFNetModel(MMFNetPreTrainedModel):
    r"""The fusion model without a head: encoders, pooling, projections, missing embeddings and fusion.

    Args:
        config ([`MMFNetConfig`]): which encoders and which fusion.
        vision_model / text_model / audio_model (`PreTrainedModel`, *optional*): already-built encoders to use
            instead of randomly initialised ones (see `from_encoders_pretrained`).
    """

    # a head checkpoint loads as the base model: its head weights are expected leftovers; so are an encoder's own
    # pooler weights (in a pretrained encoder or an older checkpoint) when the config pools otherwise
    _keys_to_ignore_on_load_unexpected = [
        r"^classifier\.",
        r"^unimodal_classifier\.",
        r"^logit_scale$",
        *MMFNetPreTrainedModel._keys_to_ignore_on_load_unexpected,
    ]

    def __init__(
        self,
        config: MMFNetConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
        audio_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        given = {"vision": vision_model, "text": text_model, "audio": audio_model}
        self._encoder_arguments: dict[str, frozenset[str]] = {}
        for modality in MODALITIES:
            sub_config = getattr(config, f"{modality}_config")
            encoder = given[modality]
            if sub_config is None:
                if encoder is not None:
                    raise ValueError(f"`{modality}_model` was given but `config.{modality}_config` is None.")
                setattr(self, f"{modality}_model", None)
                continue
            uses_pooler = getattr(config, f"{modality}_pooling") == "pooler"
            if encoder is None:
                encoder = build_encoder(sub_config, with_pooler=uses_pooler)
            else:  # share one config object with the composite config, keeping the encoder's attention kernel
                sub_config._attn_implementation = encoder.config._attn_implementation
                encoder.config = sub_config
                if not uses_pooler:
                    drop_pooler(encoder)
            setattr(self, f"{modality}_model", encoder)
            setattr(
                self,
                f"{modality}_pooler",
                MMFNetPooler(getattr(config, f"{modality}_pooling"), encoder_hidden_size(sub_config), modality),
            )
            setattr(self, f"{modality}_projection", MMFNetProjection(encoder_hidden_size(sub_config), config))
            parameters = inspect.signature(encoder.forward).parameters.values()
            self._encoder_arguments[modality] = frozenset(
                "**" if p.kind is inspect.Parameter.VAR_KEYWORD else p.name for p in parameters
            )
        self.missing_embeddings = MMFNetMissingEmbedding(len(config.modalities), config.fusion_dim)
        self.fusion = build_fusion(config)
        self.post_init()
        for modality in config.modalities:
            if getattr(config, f"freeze_{modality}"):
                getattr(self, f"{modality}_model").requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module | None:
        """The text encoder's token embeddings (None without a text modality)."""
        return self.text_model.get_input_embeddings() if self.text_model is not None else None

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the text encoder's token embeddings and keep `config.text_config.vocab_size` in step."""
        if self.text_model is None:
            raise ValueError(
                f"This MMFNet has no text encoder (config.text_config is None; modalities: {self.config.modalities}),"
                " so it has no input embeddings to set."
            )
        self.text_model.set_input_embeddings(value)
        if isinstance(value, nn.Embedding):
            self.config.text_config.vocab_size = value.num_embeddings

    def train(self, mode: bool = True) -> "MMFNetModel":
        """Like `nn.Module.train`, but encoders frozen by the config stay in eval mode (no dropout noise)."""
        super().train(mode)
        for modality in self.config.modalities:
            if getattr(self.config, f"freeze_{modality}"):
                getattr(self, f"{modality}_model").eval()
        return self

    # ----------------------------------------------------------------------------------------------- input checks
    def _gather_inputs(self, inputs: dict[str, torch.Tensor | None]) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
        """Group the input arguments (`MMFNET_INPUT_NAMES`) by modality, check them, return them and the batch size."""
        raw = {name: inputs.get(name) for name in MMFNET_INPUT_NAMES}
        embeds = {modality: raw[name] for modality, name in EMBEDS_INPUT_NAMES.items()}
        if raw["input_values"] is not None and raw["input_features"] is not None:
            raise ValueError("Pass the audio as `input_values` or as `input_features`, not both.")
        if raw["input_ids"] is None and raw["attention_mask"] is not None:
            raise ValueError("`attention_mask` is the text mask and needs `input_ids`.")
        audio_key = "input_features" if raw["input_features"] is not None else "input_values"
        primary = {"vision": "pixel_values", "text": "input_ids", "audio": audio_key}
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        batch_sizes: dict[str, int] = {}
        for modality in MODALITIES:
            name, embed_name = primary[modality], f"{modality}_embeds"
            if raw[name] is None and embeds[modality] is None:
                continue
            if getattr(self.config, f"{modality}_config") is None:
                given = name if raw[name] is not None else embed_name
                raise ValueError(
                    f"`{given}` was given but this MMFNet has no {modality} encoder "
                    f"(config.{modality}_config is None; configured modalities: {self.config.modalities})."
                )
            if raw[name] is not None and embeds[modality] is not None:
                raise ValueError(f"Pass either `{name}` or `{embed_name}` for the {modality} modality, not both.")
            if embeds[modality] is not None:
                tensor = embeds[modality]
                width = getattr(self, f"{modality}_projection").dense.in_features
                if tensor.dim() != 2 or tensor.shape[1] != width:
                    raise ValueError(f"`{embed_name}` must have shape (batch, {width}), got {tuple(tensor.shape)}.")
                grouped[modality] = {embed_name: tensor}
                batch_sizes[embed_name] = tensor.shape[0]
                continue
            tensors = {key: raw[key] for key in ENCODER_INPUT_NAMES[modality] if raw.get(key) is not None}
            self._check_ranks(modality, tensors)
            grouped[modality] = tensors
            batch_sizes.update({key: value.shape[0] for key, value in tensors.items()})
        if not grouped:
            raise ValueError(
                "No modality was given: pass at least one of `pixel_values`, `input_ids`, `input_values` / "
                "`input_features`, or precomputed `vision_embeds` / `text_embeds` / `audio_embeds` "
                f"(configured modalities: {self.config.modalities})."
            )
        batch_size, *other_sizes = batch_sizes.values()
        if any(size != batch_size for size in other_sizes):  # no set(): sizes are symbolic under torch.export
            raise ValueError(f"All inputs must share the batch size; got {batch_sizes}.")
        return grouped, batch_size

    @staticmethod
    def _check_ranks(modality: str, tensors: dict[str, torch.Tensor]) -> None:
        expected = {
            "pixel_values": ((4,), "(batch, channels, height, width)"),
            "input_ids": ((2,), "(batch, sequence_length)"),
            "attention_mask": ((2,), "(batch, sequence_length)"),
            "token_type_ids": ((2,), "(batch, sequence_length)"),
            "input_values": ((2, 3), "(batch, samples) or (batch, frames, features)"),
            "input_features": ((3,), "(batch, features, frames)"),
            "audio_attention_mask": ((2,), "(batch, samples_or_frames)"),
        }
        for name, tensor in tensors.items():
            ranks, shape = expected[name]
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}.")
            if tensor.dim() not in ranks:
                raise ValueError(f"`{name}` must have shape {shape}, got {tuple(tensor.shape)}.")
        if "attention_mask" in tensors and tensors["attention_mask"].shape != tensors["input_ids"].shape:
            raise ValueError(
                f"`attention_mask` {tuple(tensors['attention_mask'].shape)} must match `input_ids` "
                f"{tuple(tensors['input_ids'].shape)}."
            )

    def _presence_mask(
        self,
        grouped: dict[str, dict[str, torch.Tensor]],
        modality_mask: torch.Tensor | None,
        batch_size: int,
        device: torch.device,
    ) -> torch.Tensor:
        """`(B, M)` bool: which modality is present for which sample."""
        given = torch.tensor([m in grouped for m in self.config.modalities], device=device)
        if modality_mask is None:
            return given.expand(batch_size, -1)
        num_modalities = len(self.config.modalities)
        if not isinstance(modality_mask, torch.Tensor) or modality_mask.shape != (batch_size, num_modalities):
            shape = tuple(modality_mask.shape) if isinstance(modality_mask, torch.Tensor) else type(modality_mask)
            raise ValueError(
                f"`modality_mask` must be a tensor of shape (batch, {num_modalities}) = ({batch_size}, "
                f"{num_modalities}) with columns {self.config.modalities}; got {shape}."
            )
        mask = modality_mask.to(device=device, dtype=torch.bool)
        stray = mask & ~given
        if stray.any():
            names = [m for m, bad in zip(self.config.modalities, stray.any(0).tolist(), strict=True) if bad]
            raise ValueError(f"`modality_mask` marks {names} present, but no input was given for it.")
        empty = ~mask.any(1)
        if empty.any():
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"`modality_mask` rows {rows[:10]} have no modality present; every sample needs one.")
        return mask

    def _drop_modalities(self, mask: torch.Tensor) -> torch.Tensor:
        """Modality dropout: hide each present modality with prob p, but always keep one (chosen at random)."""
        kept = mask & (torch.rand(mask.shape, device=mask.device) >= self.config.modality_dropout)
        survivor = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0).argmax(1, keepdim=True)
        rescue = torch.zeros_like(mask).scatter_(1, survivor, True)
        return torch.where(kept.any(1, keepdim=True), kept, rescue)

    # -------------------------------------------------------------------------------------------------- encoding
    def _encode(
        self, modality: str, tensors: dict[str, torch.Tensor], encoder_kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, BaseModelOutput]:
        """Run one encoder and pool its tokens: `(B, H)` plus the raw encoder output.

        `encoder_kwargs` (`output_attentions`, `output_hidden_states`) go to encoders whose forward takes them.
        """
        encoder = getattr(self, f"{modality}_model")
        accepted = self._encoder_arguments[modality]
        kwargs: dict[str, Any] = {}
        mask = None
        if modality == "audio":
            mask = tensors.get("audio_attention_mask")
            audio_key = "input_features" if "input_features" in tensors else "input_values"
            kwargs[audio_key] = tensors[audio_key]
        else:
            kwargs.update({k: v for k, v in tensors.items() if k != "attention_mask"})
            mask = tensors.get("attention_mask")
        if mask is not None and "attention_mask" in accepted:
            kwargs["attention_mask"] = mask
        if "token_type_ids" in kwargs and "token_type_ids" not in accepted:
            kwargs.pop("token_type_ids")
        kwargs.update({k: v for k, v in encoder_kwargs.items() if k in accepted or "**" in accepted})
        dtype = encoder.dtype  # a float16 clip into a float32 encoder would fail inside its first layer
        kwargs = {
            k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype else v
            for k, v in kwargs.items()
        }
        trainable = torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters())
        with contextlib.nullcontext() if trainable else torch.no_grad():
            outputs = encoder(**kwargs, return_dict=True)
        hidden_states = outputs.last_hidden_state
        token_mask = self._token_mask(encoder, outputs, hidden_states, mask)
        pooled = getattr(self, f"{modality}_pooler")(
            hidden_states, token_mask, getattr(outputs, "pooler_output", None)
        )
        return pooled, outputs

    @staticmethod
    def _token_mask(
        encoder: nn.Module, outputs: ModelOutput, hidden_states: torch.Tensor, input_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Which output tokens are real (not padding), for backbones that shorten or keep the input length."""
        if getattr(outputs, "token_mask", None) is not None:
            return outputs.token_mask
        if input_mask is None or hidden_states.dim() != 3:
            return None
        length = hidden_states.shape[1]
        if input_mask.shape[1] == length:
            return input_mask.bool()
        if hasattr(encoder, "_get_feature_vector_attention_mask"):  # wav2vec2-style conv feature encoders
            return encoder._get_feature_vector_attention_mask(length, input_mask).bool()
        lengths = torch.ceil(input_mask.sum(-1) * (length / input_mask.shape[1]))
        return torch.arange(length, device=hidden_states.device) < lengths.unsqueeze(-1)

    @mmfnet_inputs
    def get_modality_embeddings(self, inputs: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        r"""Pooled encoder features per given modality, keyed `vision_embeds` / `text_embeds` / `audio_embeds`.

        Takes the inputs of `forward`. Feed the result back as `forward(vision_embeds=…)` to skip the encoders: with
        frozen encoders, compute them once (e.g. in `datasets.map`) and train only the fusion. Rows absent in
        `modality_mask` are zeros; precomputed features given here come back unchanged.
        """
        grouped, batch_size = self._gather_inputs(inputs)
        validate_model_inputs(self, grouped, inputs["modality_mask"], batch_size)
        device = next(iter(next(iter(grouped.values())).values())).device
        mask = self._presence_mask(grouped, inputs["modality_mask"], batch_size, device)
        embeds = {}
        for index, modality in enumerate(self.config.modalities):
            if modality not in grouped:
                continue
            name = EMBEDS_INPUT_NAMES[modality]
            tensors = grouped[modality]
            embeds[name] = (
                tensors[name] if name in tensors else self._encode_rows(modality, tensors, mask[:, index], {})[0]
            )
        return embeds

    def _encode_rows(
        self,
        modality: str,
        tensors: dict[str, torch.Tensor],
        present: torch.Tensor,
        encoder_kwargs: dict[str, Any],
        all_present: bool = False,
    ) -> tuple[torch.Tensor | None, BaseModelOutput | None]:
        """Encode only the rows where the modality is present; other rows of the `(B, H)` result are zeros."""
        if all_present:
            return self._encode(modality, tensors, encoder_kwargs)
        rows = present.nonzero().flatten()
        if rows.numel() == 0:
            return None, None
        if rows.numel() == present.shape[0]:
            return self._encode(modality, tensors, encoder_kwargs)
        pooled_rows, outputs = self._encode(
            modality, {k: v.index_select(0, rows) for k, v in tensors.items()}, encoder_kwargs
        )
        pooled = pooled_rows.new_zeros(present.shape[0], pooled_rows.shape[1]).index_copy(0, rows, pooled_rows)
        return pooled, outputs

    @can_return_tuple
    @mmfnet_inputs
    def forward(
        self, inputs: dict[str, torch.Tensor | None], **kwargs: Unpack[TransformersKwargs]
    ) -> MMFNetModelOutput:
        r"""
        pixel_values (`(B, C, H, W)`): images for the vision encoder.
        input_ids, attention_mask, token_type_ids (`(B, L)`): tokens for the text encoder.
        input_values (`(B, S)` or `(B, T, F)`) or input_features (`(B, F, T)`): audio for the audio encoder,
            with its own `audio_attention_mask`.
        vision_embeds / text_embeds / audio_embeds (`(B, H_m)`): precomputed pooled encoder features (see
            `get_modality_embeddings`); they replace the encoder's inputs.
        modality_mask (`(B, M)` bool): which modality each sample has (columns: `config.modalities`); default:
            every given modality is present for every sample. Absent rows are not encoded.
        output_attentions / output_hidden_states (`bool` or, for hidden states, a list of layer indices): passed to
            each encoder; its attentions / hidden states come back in `{modality}_model_output`.
        return_dict (`bool`, defaults to `config.return_dict`): `False` returns `to_tuple()` of the output.

        In training mode, `config.augment_*` transforms `pixel_values` and `input_features` (`augmentation_mmfnet`).
        """
        encoder_kwargs = split_encoder_kwargs(kwargs, f"{type(self).__name__}.forward")
        if self.training:
            inputs = dict(inputs)
            inputs["pixel_values"], inputs["input_features"] = augment_inputs(
                self.config, inputs["pixel_values"], inputs["input_features"], inputs["audio_attention_mask"]
            )
        grouped, batch_size = self._gather_inputs(inputs)
        modality_mask = inputs["modality_mask"]
        validate_model_inputs(self, grouped, modality_mask, batch_size)
        missing = self.missing_embeddings.weight  # (M, d): row m stands in for modality m where it is absent
        device = missing.device
        mask = self._presence_mask(grouped, modality_mask, batch_size, device)
        drop = self.training and self.config.modality_dropout > 0
        if drop:
            mask = self._drop_modalities(mask)
        # without a user mask or dropout, every given modality is present for every row: no row selection (no sync)
        all_present = modality_mask is None and not drop

        projected, encoder_outputs = [], {}
        for index, modality in enumerate(self.config.modalities):  # one distinct encoder per modality (M ≤ 3)
            pooled = None
            if modality in grouped:
                tensors = grouped[modality]
                if EMBEDS_INPUT_NAMES[modality] in tensors:
                    pooled = tensors[EMBEDS_INPUT_NAMES[modality]].to(missing.dtype)
                else:
                    pooled, encoder_outputs[modality] = self._encode_rows(
                        modality, tensors, mask[:, index], encoder_kwargs, all_present
                    )
            if pooled is None:
                projected.append(missing[index].expand(batch_size, -1))
                continue
            embedding = getattr(self, f"{modality}_projection")(pooled)
            projected.append(torch.where(mask[:, index, None], embedding, missing[index]))
        modality_embeds = torch.stack(projected, dim=1)
        return MMFNetModelOutput(
            fused_embeds=self.fusion(modality_embeds, mask),
            modality_embeds=modality_embeds,
            modality_mask=mask,
            vision_model_output=encoder_outputs.get("vision"),
            text_model_output=encoder_outputs.get("text"),
            audio_model_output=encoder_outputs.get("audio"),
        )


class MMFNetForSequenceClassification(MMFNetPreTrainedModel):
    r"""MMFNet with a linear head on the fused embedding: single-label or multi-label classification, or
    regression, chosen by `config.problem_type` (inferred from `num_labels` and the labels' dtype when unset, as
    in `*ForSequenceClassification`, for each call: a forward never changes the config).

    `loss = task + aux_unimodal_weight · mean_{present m} task(head_m(x_m)) + contrastive_weight · L_clip`, where
    `task` is `self.loss_function` (transformers' `ForSequenceClassificationLoss`: cross-entropy ignoring `-100`,
    BCE-with-logits or MSE), and `L_clip` is the symmetric InfoNCE between each pair of modalities over the samples
    that have both, with scale `min(exp(logit_scale), 100)`. With `config.modality_balance`, training
    steps modulate each modality branch's gradient (OGM / OGM-GE, see `balance_mmfnet.py`).
    """

    def __init__(
        self,
        config: MMFNetConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
        audio_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mmfnet = MMFNetModel(config, vision_model, text_model, audio_model)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fusion_dim, config.num_labels)
        num_modalities = len(config.modalities)
        self.unimodal_classifier = (
            MMFNetModalityLinear(num_modalities, config.fusion_dim, config.num_labels)
            if config.aux_unimodal_weight > 0
            else None
        )
        self.logit_scale = nn.Parameter(torch.empty(())) if config.contrastive_weight > 0 else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module | None:
        return self.mmfnet.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.mmfnet.set_input_embeddings(value)

    @mmfnet_inputs
    def get_modality_embeddings(self, inputs: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """See [`MMFNetModel.get_modality_embeddings`]."""
        return self.mmfnet.get_modality_embeddings(**inputs)

    @can_return_tuple
    @mmfnet_inputs
    def forward(
        self,
        inputs: dict[str, torch.Tensor | None],
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MMFNetClassifierOutput:
        r"""
        Inputs, `output_attentions`, `output_hidden_states` and `return_dict` as in [`MMFNetModel.forward`].
        labels (`(B,)` int in `[0, num_labels)` for single-label, `(B, num_labels)` float for multi-label, `(B,)`
            or `(B, num_labels)` float for regression): the targets; `-100` marks single-label rows to ignore.
        """
        split_encoder_kwargs(kwargs, f"{type(self).__name__}.forward")
        outputs = self.mmfnet(**inputs, **kwargs, return_dict=True)
        logits = self.classifier(self.dropout(outputs.fused_embeds))
        unimodal_logits = self.unimodal_classifier(outputs.modality_embeds) if self.unimodal_classifier else None

        loss = None
        if labels is not None:
            problem_type = self._problem_type(labels)
            labels = self._check_labels(labels, problem_type, logits.shape[0])
            # a per-call view of the config: transformers' loss would otherwise store the inferred problem type
            task = SimpleNamespace(num_labels=self.num_labels, problem_type=problem_type)
            loss = self.loss_function(labels, logits.float(), task)
            if unimodal_logits is not None:
                num_modalities = unimodal_logits.shape[1]
                per_modality = self._per_sample_loss(
                    unimodal_logits.flatten(0, 1), labels.repeat_interleave(num_modalities, 0), problem_type
                ).view(-1, num_modalities)
                weights = outputs.modality_mask.to(per_modality.dtype)
                aux = (per_modality * weights).sum() / weights.sum().clamp(min=1.0)
                loss = loss + self.config.aux_unimodal_weight * aux
                if self.training and self.config.modality_balance != "none" and outputs.modality_embeds.requires_grad:
                    if problem_type != "single_label_classification":
                        raise ValueError(f"`modality_balance` needs single-label classification, got {problem_type}.")
                    coefficients = ogm_coefficients(
                        unimodal_logits, labels, outputs.modality_mask, self.config.modality_balance_alpha
                    )
                    noise = self.config.modality_balance == "ogm_ge"
                    modulate_modality_gradients(outputs.modality_embeds, outputs.modality_mask, coefficients, noise)
            if self.logit_scale is not None:
                contrastive = self._contrastive_loss(outputs.modality_embeds, outputs.modality_mask)
                loss = loss + self.config.contrastive_weight * contrastive

        return MMFNetClassifierOutput(
            loss=loss,
            logits=logits,
            fused_embeds=outputs.fused_embeds,
            modality_embeds=outputs.modality_embeds,
            modality_mask=outputs.modality_mask,
            unimodal_logits=unimodal_logits,
            vision_model_output=outputs.vision_model_output,
            text_model_output=outputs.text_model_output,
            audio_model_output=outputs.audio_model_output,
        )

    def _problem_type(self, labels: torch.Tensor) -> str:
        """`config.problem_type`, or (when unset) the one these labels imply; the config is never changed."""
        validate_labels_type(labels)
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
            return "single_label_classification"
        return "multi_label_classification"

    def _check_labels(self, labels: torch.Tensor, problem_type: str, batch_size: int) -> torch.Tensor:
        """Checked labels in the loss's dtype; the config is never changed (an inferred problem type is per call)."""
        inferred = self.config.problem_type is None
        try:
            labels = self._checked_labels(labels, problem_type, batch_size)
        except ValueError as error:
            if inferred and problem_type == "multi_label_classification" and labels.dim() == 1:
                raise ValueError(
                    f"{error} Float `labels` of shape (batch,) are read as multi-label targets (the problem type "
                    "follows the labels' dtype): pass class ids as integers (`labels.long()`), or set "
                    "`config.problem_type`."
                ) from error
            raise
        return labels

    def _checked_labels(self, labels: torch.Tensor, problem_type: str, batch_size: int) -> torch.Tensor:
        validate_labels(labels, problem_type, self.num_labels, self.config.check_input_values)
        if labels.shape[0] != batch_size:
            raise ValueError(f"`labels` has batch size {labels.shape[0]} but the inputs have {batch_size}.")
        if problem_type == "single_label_classification":
            if labels.dim() != 1 or labels.is_floating_point():
                raise ValueError(
                    f"single-label classification expects integer `labels` of shape (batch,), got "
                    f"{labels.dtype} {tuple(labels.shape)}."
                )
            bad = ((labels < 0) | (labels >= self.num_labels)) & (labels != -100)
            if bad.any():
                raise ValueError(
                    f"`labels` must be in [0, {self.num_labels}) (num_labels) or -100; got {labels[bad][:5].tolist()}."
                )
            return labels.long()
        if problem_type == "multi_label_classification":
            if labels.shape != (batch_size, self.num_labels):
                raise ValueError(
                    f"multi-label classification expects `labels` of shape (batch, num_labels) = "
                    f"({batch_size}, {self.num_labels}), got {tuple(labels.shape)}."
                )
            return labels.float()
        if labels.shape not in ((batch_size,), (batch_size, self.num_labels)):
            raise ValueError(
                f"regression expects `labels` of shape (batch,) or (batch, num_labels) = ({batch_size}, "
                f"{self.num_labels}), got {tuple(labels.shape)}."
            )
        return labels.float().view(batch_size, self.num_labels)

    def _per_sample_loss(self, logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
        """Loss per sample `(B,)`; ignored single-label rows (-100) count 0 and are excluded from the mean scale."""
        if problem_type == "single_label_classification":
            losses = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")
            valid = (labels != -100).to(losses.dtype)
            return losses * (valid.numel() / valid.sum().clamp(min=1.0))
        if problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(-1)
        return F.mse_loss(logits.float(), labels, reduction="none").mean(-1)

    def _contrastive_loss(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over each modality pair, restricted to samples that have both (no host sync)."""
        scale = self.logit_scale.exp().clamp(max=100.0)
        normed = F.normalize(embeds.float(), dim=-1)
        targets = torch.arange(embeds.shape[0], device=embeds.device)
        losses = []
        num_modalities = embeds.shape[1]
        for i in range(num_modalities):
            for j in range(i + 1, num_modalities):
                both = mask[:, i] & mask[:, j]
                similarity = scale * normed[:, i] @ normed[:, j].T
                per_row = F.cross_entropy(
                    similarity.masked_fill(~both.unsqueeze(0), -1e4), targets, reduction="none"
                ) + F.cross_entropy(similarity.T.masked_fill(~both.unsqueeze(0), -1e4), targets, reduction="none")
                weights = both.to(per_row.dtype)
                losses.append((per_row * weights).sum() / (2 * weights.sum().clamp(min=1.0)))
        return torch.stack(losses).mean() if losses else embeds.new_zeros(())


MMFNetForClassification = MMFNetForSequenceClassification
"""The head's former name, kept as an alias."""

__all__ = [
    "ENCODER_INPUT_NAMES",
    "EMBEDS_INPUT_NAMES",
    "MMFNET_INPUT_NAMES",
    "MMFNetClassifierOutput",
    "MMFNetForClassification",
    "MMFNetForSequenceClassification",
    "MMFNetModel",
    "MMFNetModelOutput",
    "MMFNetPreTrainedModel",
]
