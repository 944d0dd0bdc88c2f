"""Training-time augmentation of MMFNet's raw inputs, applied inside the model's `forward` only in training mode.

Like Wav2Vec2's SpecAugment (`mask_time_prob`), it is configured by `MMFNetConfig` fields (`augment_*`), so it
travels with the checkpoint, runs identically under `torchrun`, and is off in `model.eval()` (evaluation,
prediction, export) without anything to switch. Every draw uses torch's global RNG (the Trainer seeds it; a resumed
run restores it).
"""

import torch
from torch.nn import functional as F

from .configuration_mmfnet import MMFNetConfig


def shift_and_flip_images(pixel_values: torch.Tensor, max_shift: float = 0.0, flip_prob: float = 0.0) -> torch.Tensor:
    r"""Random translation and horizontal flip of a batch of images `(B, C, H, W)`, drawn per sample.

    Shift: `dy ~ U{-s_h, …, s_h}`, `dx ~ U{-s_w, …, s_w}` pixels with `s_h = round(max_shift · H)` (same for `W`),
    i.e. a random `H × W` crop of the image edge-padded by `s_h, s_w` (border pixels repeat, no black bands).
    Flip: `x[…, ::-1]` with probability `flip_prob` (leave it 0 where left and right matter, e.g. digits, text).
    """
    batch, _, height, width = pixel_values.shape
    out = pixel_values
    pad_h, pad_w = round(max_shift * height), round(max_shift * width)
    if pad_h or pad_w:
        padded = F.pad(out, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
        device = out.device
        top = torch.randint(0, 2 * pad_h + 1, (batch, 1), device=device)
        left = torch.randint(0, 2 * pad_w + 1, (batch, 1), device=device)
        rows = (top + torch.arange(height, device=device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (left + torch.arange(width, device=device))[:, None, None, :]  # (B, 1, 1, W)
        batch_index = torch.arange(batch, device=device)[:, None, None, None]
        channel_index = torch.arange(out.shape[1], device=device)[None, :, None, None]
        out = padded[batch_index, channel_index, rows, cols]
    if flip_prob > 0:
        flip = torch.rand(batch, device=out.device) < flip_prob
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def mask_spectrograms(
    input_features: torch.Tensor,
    time_mask: float = 0.0,
    frequency_mask: float = 0.0,
    num_masks: int = 2,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""SpecAugment-style masking of log-mel spectrograms `(B, F, T)` (Park et al. 2019), drawn per sample.

    `num_masks` time bands of width `w ~ U{0, …, ⌊time_mask · T_valid⌋}` frames, placed inside each clip's valid
    frames (`attention_mask`, `(B, T)`), and `num_masks` frequency bands of width `U{0, …, ⌊frequency_mask · F⌋}`
    mel bins, are set to the clip's mean over its valid frames (its "silence" after per-utterance normalisation).
    """
    batch, bins, frames = input_features.shape
    device = input_features.device
    if attention_mask is not None:
        valid = attention_mask[:, :frames].to(device=device, dtype=torch.bool)
        lengths = valid.sum(-1)
    else:
        valid = torch.ones(batch, frames, dtype=torch.bool, device=device)
        lengths = torch.full((batch,), frames, device=device)

    def bands(size: int, extent: torch.Tensor, fraction: float) -> torch.Tensor:
        """(B, size) bool: the union of `num_masks` random bands in `[0, extent_b)`."""
        widths = (torch.rand(batch, num_masks, device=device) * (fraction * extent[:, None] + 1)).floor()
        starts = (torch.rand(batch, num_masks, device=device) * (extent[:, None] - widths + 1).clamp(min=1)).floor()
        position = torch.arange(size, device=device)[None, None, :]
        inside = (position >= starts[..., None]) & (position < (starts + widths)[..., None])
        return inside.any(1)

    masked = torch.zeros(batch, bins, frames, dtype=torch.bool, device=device)
    if time_mask > 0:
        masked |= bands(frames, lengths.to(torch.float32), time_mask)[:, None, :]
    if frequency_mask > 0:
        masked |= bands(bins, torch.full((batch,), float(bins), device=device), frequency_mask)[:, :, None]
    weights = valid[:, None, :].to(input_features.dtype)  # (B, 1, T)
    cells = (weights.sum((1, 2), keepdim=True) * bins).clamp(min=1.0)
    mean = (input_features * weights).sum((1, 2), keepdim=True) / cells
    return torch.where(masked & valid[:, None, :], mean.expand_as(input_features), input_features)


def augment_inputs(
    config: MMFNetConfig,
    pixel_values: torch.Tensor | None,
    input_features: torch.Tensor | None,
    audio_attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Apply the `config.augment_*` transforms that are switched on; inputs that are None stay None, and inputs of
    another shape are left for the model's input checks to report."""
    images = isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 4
    spectrograms = isinstance(input_features, torch.Tensor) and input_features.dim() == 3
    if images and (config.augment_image_shift > 0 or config.augment_image_flip > 0):
        pixel_values = shift_and_flip_images(pixel_values, config.augment_image_shift, config.augment_image_flip)
    if spectrograms and (config.augment_time_mask > 0 or config.augment_frequency_mask > 0):
        input_features = mask_spectrograms(
            input_features,
            config.augment_time_mask,
            config.augment_frequency_mask,
            config.augment_num_masks,
            audio_attention_mask,
        )
    return pixel_values, input_features


__all__ = ["augment_inputs", "mask_spectrograms", "shift_and_flip_images"]
