"""Frozen-encoder feature caching: encode a dataset once with `datasets.map`, then train only the fusion.

With frozen encoders every epoch recomputes the same features. `cache_modality_embeddings` stores each sample's
pooled encoder features (`vision_embeds`, `text_embeds`, `audio_embeds`) and its `modality_mask` as dataset
columns; `MMFNetEmbeddingCollator` batches them for `forward(vision_embeds=..., ...)`, which skips the encoders.
Not shipped to the Hub (the model files do not import it).
"""

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from .modeling_mmfnet import MMFNetPreTrainedModel
from .processing_mmfnet import MMFNetDataCollator, check_rows, collate_labels

EMBED_COLUMNS = ("vision_embeds", "text_embeds", "audio_embeds")


def cache_modality_embeddings(
    model: MMFNetPreTrainedModel,
    dataset: Dataset,
    collator: MMFNetDataCollator,
    batch_size: int = 64,
    keep_columns: tuple[str, ...] = ("label",),
) -> Dataset:
    r"""Encode `dataset` once with `model`'s (frozen) encoders.

    Returns a dataset with one column per encoded modality (`(H_m,)` float32 per row, zeros where the modality is
    missing), `modality_mask` and the `keep_columns` that exist. Only valid while the encoders stay frozen and
    their pooling has no trainable parameters (`pooling != "attention"`).
    """
    base = getattr(model, model.base_model_prefix, model)
    trainable = [
        m for m in base.config.modalities if any(p.requires_grad for p in getattr(base, f"{m}_model").parameters())
    ]
    if trainable:
        raise ValueError(
            f"cannot cache features of trainable encoders {trainable}: freeze them (`freeze_{trainable[0]}`)."
        )
    learned = [m for m in base.config.modalities if getattr(base.config, f"{m}_pooling") == "attention"]
    if learned:
        raise ValueError(f"cannot cache features of {learned}: their `attention` pooling is trained; use 'mean'.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    label_columns = [c for c in keep_columns if c in dataset.column_names]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        features = collator(rows)
        features.pop("labels", None)
        inputs = {k: v.to(device) for k, v in features.items()}
        with torch.no_grad():
            embeds = base.get_modality_embeddings(**inputs)
        out = {name: tensor.float().cpu().numpy() for name, tensor in embeds.items()}
        for modality in base.config.modalities:  # absent from every row of this batch: zeros, like any absent row
            if f"{modality}_embeds" not in out:
                width = getattr(base, f"{modality}_projection").dense.in_features
                out[f"{modality}_embeds"] = np.zeros((len(rows), width), dtype=np.float32)
        out["modality_mask"] = features["modality_mask"].numpy()
        out.update({c: batch[c] for c in label_columns})
        return out

    try:
        cached = dataset.map(
            encode, batched=True, batch_size=batch_size, remove_columns=dataset.column_names, desc="caching embeddings"
        )
    finally:
        model.train(was_training)
    return cached


class MMFNetEmbeddingCollator:
    """Batch rows of a [`cache_modality_embeddings`] dataset into `forward(*_embeds=..., modality_mask=...)`."""

    def __init__(self, label_column: str | None = "label") -> None:
        self.label_column = label_column

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = check_rows(rows)
        lacking = [i for i, row in enumerate(rows) if "modality_mask" not in row]
        if lacking:
            raise ValueError(
                f"rows {lacking[:5]} have no 'modality_mask' column; MMFNetEmbeddingCollator batches the output of "
                "`cache_modality_embeddings` (use MMFNetDataCollator for raw rows)."
            )
        batch = {
            name: torch.from_numpy(np.stack([np.asarray(row[name], dtype=np.float32) for row in rows]))
            for name in EMBED_COLUMNS
            if name in rows[0]
        }
        batch["modality_mask"] = torch.from_numpy(
            np.stack([np.asarray(row["modality_mask"], dtype=bool) for row in rows])
        )
        labels = collate_labels(rows, self.label_column)
        if labels is not None:
            batch["labels"] = labels
        return batch


__all__ = ["MMFNetEmbeddingCollator", "cache_modality_embeddings"]
