"""Checks of MMFNet's forward inputs and labels: every bad input becomes a clear error naming the argument.

Static checks (dtypes, ranks, lengths against the encoders' configs) cost nothing. The data-dependent ones (NaN /
inf, token ids in range, 0/1 masks, padding-only rows) are one reduction per tensor, stacked and read back with a
single host sync per forward; `config.check_input_values=False` skips them, and they are skipped while
`torch.compile` / `torch.export` trace the model (a traced program cannot raise on its data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .configuration_mmfnet import MODALITIES

PROCESSOR_HINT = "Pass raw inputs through `MMFNetProcessor` (or the encoder's own processor) first."


def is_tracing() -> bool:
    """True while `torch.compile`, `torch.export` or `torch.jit.trace` trace the model."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def _require_float(name: str, tensor: torch.Tensor, what: str) -> None:
    if not tensor.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor ({what}), got {tensor.dtype}. {PROCESSOR_HINT}")


def _require_integer(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor of token ids (torch.long), got {tensor.dtype}.")


def min_wav2vec2_samples(config: Any) -> int | None:
    """Fewest samples a Wav2Vec2-style conv feature encoder takes: `r ← (r − 1)·s + k` over its layers, from r = 1."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        return None
    required = 1
    for kernel, stride in zip(reversed(list(kernels)), reversed(list(strides)), strict=False):
        required = (required - 1) * stride + kernel
    return required


def check_conv_input_size(name: str, config: Any, spatial: tuple[int, ...]) -> None:
    """The seed CNN halves its map per block; a block whose GroupNorm would see one value per group fails."""
    size = list(spatial)
    for index, channels in enumerate(config.hidden_sizes):
        per_group = channels // min(8, channels)
        if per_group * size[0] * size[-1] < 2:
            raise ValueError(
                f"`{name}` of size {'×'.join(map(str, spatial))} is too small for the seed CNN "
                f"(hidden_sizes={list(config.hidden_sizes)}): after {index} max-pools of 2, block {index + 1} would "
                f"normalise a single value per group. Use inputs of at least {2**index + 1} on each side."
            )
        size = [-(-s // 2) for s in size]


class _DeferredChecks:
    r"""Data-dependent checks, read back together in one host sync.

    Each non-finite check is one fused reduction, `Σ x` in float32: NaN and ±inf propagate into the sum, so a
    finite sum proves a finite tensor (a non-finite sum of finite values, an overflow past 3.4e38, is confirmed
    element-wise before anything is raised). Other checks are 0-d bool tensors.
    """

    def __init__(self) -> None:
        self.sums: list[torch.Tensor] = []
        self.flags: list[torch.Tensor] = []
        self.messages: list[Callable[[], str | None]] = []

    def add(self, ok: torch.Tensor, message: Callable[[], str | None]) -> None:
        self.flags.append(ok)
        self.messages.append(message)

    def add_finite(self, tensor: torch.Tensor, message: Callable[[], str | None]) -> None:
        self.sums.append(tensor.sum(dtype=torch.float32))
        self.messages.insert(len(self.sums) - 1, message)

    def raise_first_failure(self) -> None:
        parts = []
        if self.sums:
            parts.append(torch.isfinite(torch.stack(self.sums)))
        if self.flags:
            parts.append(torch.stack([flag.to(parts[0].device) if parts else flag for flag in self.flags]))
        if not parts:
            return
        results = (parts[0] if len(parts) == 1 else torch.cat(parts)).tolist()  # the one host sync
        for ok, message in zip(results, self.messages, strict=True):
            if not ok and (text := message()) is not None:
                raise ValueError(text)


def _bad_rows(bad: torch.Tensor) -> list[int]:
    """Rows (first dimension) where `bad` is True anywhere, at most 10."""
    return bad.reshape(bad.shape[0], -1).any(1).nonzero().flatten()[:10].tolist()


def _check_finite(checks: _DeferredChecks, name: str, tensor: torch.Tensor) -> None:
    def message() -> str | None:
        rows = _bad_rows(~torch.isfinite(tensor))
        if not rows:  # finite values whose float32 sum overflowed
            return None
        return (
            f"`{name}` holds NaN or inf values (rows {rows}); clean the inputs (e.g. with `torch.nan_to_num`) or "
            "find where they became non-finite."
        )

    checks.add_finite(tensor, message)


def _check_binary(checks: _DeferredChecks, name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype == torch.bool:
        return
    checks.add(
        ((tensor == 0) | (tensor == 1)).all(),
        lambda: (
            f"`{name}` must hold only 0/1 (or be a bool tensor), got values "
            f"{sorted(set(tensor[(tensor != 0) & (tensor != 1)].flatten()[:5].tolist()))}."
        ),
    )


def _check_range(checks: _DeferredChecks, name: str, tensor: torch.Tensor, limit: int, limit_name: str) -> None:
    bad = (tensor < 0) | (tensor >= limit)
    checks.add(
        ~bad.any(),
        lambda: (
            f"`{name}` must be in [0, {limit}) ({limit_name} of the text encoder); got "
            f"{sorted(set(tensor[bad].tolist()))[:5]} in rows {_bad_rows(bad)}. Use the tokenizer that matches the "
            "text encoder."
        ),
    )


def _check_rows_have_tokens(
    checks: _DeferredChecks, name: str, mask: torch.Tensor, present: torch.Tensor | None
) -> None:
    empty = ~mask.bool().any(1)
    if present is not None:
        empty = empty & present
    checks.add(
        ~empty.any(),
        lambda: (
            f"`{name}` marks no valid position in rows {_bad_rows(empty)} of samples that have this modality; "
            "pooling would read only padding. Mark those samples absent in `modality_mask`, or fix the mask."
        ),
    )


def validate_model_inputs(
    model: Any,
    grouped: dict[str, dict[str, torch.Tensor]],
    modality_mask: torch.Tensor | None,
    batch_size: int,
) -> None:
    """Refuse inputs a model would silently misread: wrong dtypes, out-of-range ids, bad masks, NaN / inf.

    `grouped` maps each given modality to its forward arguments (as `MMFNetModel._gather_inputs` returns them).
    """
    config = model.config
    tracing = is_tracing()
    if not tracing and batch_size == 0:
        raise ValueError("The batch is empty (batch size 0); pass at least one sample.")
    checks = _DeferredChecks()
    check_values = getattr(config, "check_input_values", True) and not tracing
    columns = {modality: index for index, modality in enumerate(config.modalities)}
    present: dict[str, torch.Tensor | None] = dict.fromkeys(MODALITIES)
    if modality_mask is not None and isinstance(modality_mask, torch.Tensor):
        if modality_mask.is_floating_point() or modality_mask.is_complex():
            raise TypeError(
                f"`modality_mask` must be a bool (or 0/1 integer) tensor, got {modality_mask.dtype}: a float such as "
                "0.3 would be read as 'present'."
            )
        if check_values:
            _check_binary(checks, "modality_mask", modality_mask)
        if modality_mask.dim() == 2 and modality_mask.shape[1] == len(columns):
            present = {m: modality_mask[:, columns[m]].bool() for m in columns}

    for modality, tensors in grouped.items():
        sub_config = getattr(config, f"{modality}_config")
        embed_name = f"{modality}_embeds"
        if embed_name in tensors:
            _require_float(embed_name, tensors[embed_name], "pooled encoder features")
            if check_values:
                _check_finite(checks, embed_name, tensors[embed_name])
            continue
        if modality == "vision":
            pixels = tensors["pixel_values"]
            _require_float("pixel_values", pixels, "normalised images, not uint8 pixels")
            channels = getattr(sub_config, "num_channels", None)
            if isinstance(channels, int) and pixels.shape[1] != channels:
                raise ValueError(
                    f"`pixel_values` has {pixels.shape[1]} channels but the vision encoder takes {channels} "
                    f"(vision_config.num_channels); convert the images (e.g. `image.convert('L')` or "
                    "`image.convert('RGB')`) or use a processor built for this encoder."
                )
            if sub_config.model_type == "mmfnet_conv" and not tracing:
                check_conv_input_size("pixel_values", sub_config, tuple(pixels.shape[2:]))
            patch_size = getattr(sub_config, "patch_size", None)
            if isinstance(patch_size, int) and not tracing and min(pixels.shape[2:]) < patch_size:
                raise ValueError(
                    f"`pixel_values` images of {pixels.shape[2]}×{pixels.shape[3]} are smaller than one patch of the "
                    f"vision encoder (vision_config.patch_size={patch_size}); resize them with its image processor."
                )
            if check_values:
                _check_finite(checks, "pixel_values", pixels)
        elif modality == "text":
            ids = tensors["input_ids"]
            _require_integer("input_ids", ids)
            limit = getattr(sub_config, "max_position_embeddings", None)
            if isinstance(limit, int) and not tracing and ids.shape[1] > limit:
                raise ValueError(
                    f"`input_ids` has {ids.shape[1]} tokens but the text encoder has max_position_embeddings={limit}; "
                    "truncate the text (the processor does by default: `truncation=True`)."
                )
            if "token_type_ids" in tensors:
                _require_integer("token_type_ids", tensors["token_type_ids"])
                if tensors["token_type_ids"].shape != ids.shape:
                    raise ValueError(
                        f"`token_type_ids` {tuple(tensors['token_type_ids'].shape)} must match `input_ids` "
                        f"{tuple(ids.shape)}."
                    )
            if check_values:
                vocab_size = getattr(sub_config, "vocab_size", None)
                if isinstance(vocab_size, int):
                    _check_range(checks, "input_ids", ids, vocab_size, "vocab_size")
                type_vocab_size = getattr(sub_config, "type_vocab_size", None)
                if "token_type_ids" in tensors and isinstance(type_vocab_size, int):
                    _check_range(
                        checks, "token_type_ids", tensors["token_type_ids"], type_vocab_size, "type_vocab_size"
                    )
                if "attention_mask" in tensors:
                    _check_binary(checks, "attention_mask", tensors["attention_mask"])
                    _check_rows_have_tokens(checks, "attention_mask", tensors["attention_mask"], present["text"])
        else:
            name = "input_features" if "input_features" in tensors else "input_values"
            audio = tensors[name]
            accepted = getattr(model, "_encoder_arguments", {}).get("audio")
            if accepted and name not in accepted:
                other = "input_values" if name == "input_features" else "input_features"
                raise ValueError(
                    f"`{name}` was given but the audio encoder ({sub_config.model_type}) takes `{other}`; use the "
                    "feature extractor that matches the audio encoder."
                )
            _require_float(name, audio, "waveforms or spectrograms")
            # frames are the last axis of (B, F, T) features and of (B, S) waveforms, the middle one of (B, T, F)
            length = audio.shape[-1] if name == "input_features" or audio.dim() == 2 else audio.shape[1]
            mask = tensors.get("audio_attention_mask")
            if mask is not None and not tracing and mask.shape[1] != length:
                raise ValueError(
                    f"`audio_attention_mask` covers {mask.shape[1]} positions but `{name}` {tuple(audio.shape)} has "
                    f"{length}; the mask must have one entry per sample (waveforms) or frame (features)."
                )
            min_samples = min_wav2vec2_samples(sub_config) if name == "input_values" and audio.dim() == 2 else None
            if min_samples is not None and not tracing and length < min_samples:
                raise ValueError(
                    f"`input_values` clips have {length} samples but the audio encoder's conv feature encoder needs "
                    f"at least {min_samples} (audio_config.conv_kernel / conv_stride); pad or drop shorter clips."
                )
            if sub_config.model_type == "mmfnet_conv" and name == "input_features" and not tracing:
                check_conv_input_size(name, sub_config, tuple(audio.shape[1:]))
            if check_values:
                _check_finite(checks, name, audio)
                if mask is not None:
                    _check_binary(checks, "audio_attention_mask", mask)
                    _check_rows_have_tokens(checks, "audio_attention_mask", mask, present["audio"])
    checks.raise_first_failure()


def validate_labels_type(labels: Any) -> None:
    """`labels` must be a tensor of class ids or float targets (not a list, not bools)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"`labels` must be a torch.Tensor, got {type(labels).__name__}; convert it, e.g. `torch.tensor(labels)` "
            "(the data collator does this)."
        )
    if labels.dim() == 0:
        raise ValueError("`labels` must have a batch dimension, shape (batch,) or (batch, num_labels); got a scalar.")
    if labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"`labels` must be integer class ids or float targets, got {labels.dtype}.")


def validate_labels(labels: Any, problem_type: str, num_labels: int, check_values: bool) -> None:
    """Labels a loss would silently misread: not a tensor, multi-label targets outside [0, 1], NaN / inf."""
    validate_labels_type(labels)
    if not check_values or is_tracing():
        return
    checks = _DeferredChecks()
    if labels.is_floating_point():
        _check_finite(checks, "labels", labels)
    if problem_type == "multi_label_classification" and labels.dim() == 2 and labels.shape[1] == num_labels:
        outside = (labels < 0) | (labels > 1)
        checks.add(
            ~outside.any(),
            lambda: (
                f"multi-label `labels` must be targets in [0, 1] (one column per each of the {num_labels} "
                f"labels); got values {sorted(set(labels[outside].tolist()))[:5]} in rows {_bad_rows(outside)}."
            ),
        )
    checks.raise_first_failure()


__all__ = ["is_tracing", "validate_labels", "validate_labels_type", "validate_model_inputs"]
