"""Frozen-encoder feature caching: encode a dataset once with `datasets.map`, then train without those encoders.

With frozen encoders every epoch recomputes the same features. `cache_modality_embeddings` stores each sample's
pooled features of the frozen modalities (`vision_embeds`, `text_embeds`, `audio_embeds`) and their
`modality_mask` as dataset columns, and keeps the raw columns of the modalities whose encoders still train;
`MMFNetEmbeddingCollator` batches both for `forward(text_embeds=..., pixel_values=..., ...)`, which runs only the
encoders without cached features. Not shipped to the Hub (the model files do not import it).
"""

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from .modeling_mmfnet import MMFNetPreTrainedModel
from .processing_mmfnet import MMFNetDataCollator, check_rows, collate_labels

EMBED_COLUMNS = ("vision_embeds", "text_embeds", "audio_embeds")


def cacheable_modalities(model: MMFNetPreTrainedModel) -> tuple[str, ...]:
    """The modalities whose features can be cached: a frozen encoder and a pooling without parameters."""
    base = getattr(model, model.base_model_prefix, model)
    return tuple(
        m
        for m in base.config.modalities
        if not any(p.requires_grad for p in getattr(base, f"{m}_model").parameters())
        and getattr(base.config, f"{m}_pooling") != "attention"
    )


def cache_modality_embeddings(
    model: MMFNetPreTrainedModel,
    dataset: Dataset,
    collator: MMFNetDataCollator,
    batch_size: int = 64,
    keep_columns: tuple[str, ...] = ("label",),
    modalities: tuple[str, ...] | None = None,
) -> Dataset:
    r"""Encode `dataset` once with `model`'s frozen encoders.

    Args:
        modalities: the modalities to cache (default: every one with a frozen encoder and a pooling without
            parameters, i.e. `pooling != "attention"`). Each must qualify, or a ValueError says why.

    Returns a dataset with one column per cached modality (`(H_m,)` float32 per row, zeros where the modality is
    missing), `modality_mask` (its other columns False), the `keep_columns` that exist, and the raw columns of the
    modalities not cached (plus the collator's sampling-rate column with raw audio), for
    [`MMFNetEmbeddingCollator`]`(collator=...)` to process at each step.
    """
    base = getattr(model, model.base_model_prefix, model)
    configured = base.config.modalities
    requested = cacheable_modalities(model) if modalities is None else tuple(modalities)
    unknown = [m for m in requested if m not in configured]
    if unknown:
        raise ValueError(f"`modalities` {unknown} are not configured; this model has {configured}.")
    trainable = [m for m in requested if any(p.requires_grad for p in getattr(base, f"{m}_model").parameters())]
    if trainable:
        raise ValueError(
            f"cannot cache features of trainable encoders {trainable}: freeze them (`freeze_{trainable[0]}`)."
        )
    learned = [m for m in requested if getattr(base.config, f"{m}_pooling") == "attention"]
    if learned:
        raise ValueError(f"cannot cache features of {learned}: their `attention` pooling is trained; use 'mean'.")
    if not requested:
        raise ValueError(
            f"no modality to cache: every encoder of {configured} trains (or pools with trained attention); "
            "freeze one (`freeze_<modality>=True`) to cache its features."
        )
    cached_modalities = [m for m in configured if m in requested]
    encoding_collator = collator
    for modality in configured:
        if modality not in requested:
            encoding_collator = encoding_collator.without(modality)
    raw_columns = [
        collator.columns[m] for m in configured if m not in requested and collator.columns.get(m) is not None
    ]
    if "audio" in configured and "audio" not in requested and collator.sampling_rate_column is not None:
        raw_columns.append(collator.sampling_rate_column)
    passed_columns = [c for c in dict.fromkeys([*keep_columns, *raw_columns]) if c in dataset.column_names]

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        features = encoding_collator(rows)
        features.pop("labels", None)
        # rows with none of the cached modalities have nothing to encode (their features stay zeros)
        encoded_rows = features["modality_mask"].any(1).nonzero().flatten()
        out = {}
        if encoded_rows.numel():
            inputs = {k: v.index_select(0, encoded_rows).to(device) for k, v in features.items()}
            with torch.no_grad():
                embeds = base.get_modality_embeddings(**inputs)
            for name, tensor in embeds.items():
                full = np.zeros((len(rows), tensor.shape[1]), dtype=np.float32)
                full[encoded_rows.numpy()] = tensor.float().cpu().numpy()
                out[name] = full
        for modality in cached_modalities:  # absent from every row of this batch: zeros, like any absent row
            if f"{modality}_embeds" not in out:
                width = getattr(base, f"{modality}_projection").dense.in_features
                out[f"{modality}_embeds"] = np.zeros((len(rows), width), dtype=np.float32)
        out["modality_mask"] = features["modality_mask"].numpy()
        out.update({c: batch[c] for c in passed_columns})
        return out

    try:
        cached = dataset.map(
            encode,
            batched=True,
            batch_size=batch_size,
            remove_columns=[c for c in dataset.column_names if c not in passed_columns],
            desc=f"caching {', '.join(cached_modalities)} embeddings",
        )
    finally:
        model.train(was_training)
    return cached


class MMFNetEmbeddingCollator:
    """Batch rows of a [`cache_modality_embeddings`] dataset into `forward(*_embeds=..., modality_mask=...)`.

    Args:
        label_column: row key of the label (it becomes `labels`).
        collator: the [`MMFNetDataCollator`] for the modalities that were not cached (their raw columns are in the
            rows); it processes them at every step, and the two presence masks are merged.
    """

    def __init__(self, label_column: str | None = "label", collator: MMFNetDataCollator | None = None) -> None:
        self.label_column = label_column
        self.collator = collator

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = check_rows(rows)
        lacking = [i for i, row in enumerate(rows) if "modality_mask" not in row]
        if lacking:
            raise ValueError(
                f"rows {lacking[:5]} have no 'modality_mask' column; MMFNetEmbeddingCollator batches the output of "
                "`cache_modality_embeddings` (use MMFNetDataCollator for raw rows)."
            )
        embed_names = [name for name in EMBED_COLUMNS if name in rows[0]]
        batch = {
            name: torch.from_numpy(np.stack([np.asarray(row[name], dtype=np.float32) for row in rows]))
            for name in embed_names
        }
        mask = torch.from_numpy(np.stack([np.asarray(row["modality_mask"], dtype=bool) for row in rows]))
        if self.collator is not None:
            raw_collator = self.collator
            for name in embed_names:
                raw_collator = raw_collator.without(name.removesuffix("_embeds"))
            if any(raw_collator.columns.values()):
                raw = dict(raw_collator(rows))
                raw.pop("labels", None)
                mask = mask | raw.pop("modality_mask").bool()
                batch.update(raw)
        batch["modality_mask"] = mask
        labels = collate_labels(rows, self.label_column)
        if labels is not None:
            batch["labels"] = labels
        return batch


__all__ = ["MMFNetEmbeddingCollator", "cache_modality_embeddings", "cacheable_modalities"]
