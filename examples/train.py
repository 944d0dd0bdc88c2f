"""Fine-tune MMFNet on any `datasets` data with the Trainer — on one process, or under `torchrun` (DDP).

    python examples/train.py --dataset data/avdigits-agree --output_dir outputs/agree \
        --vision_encoder conv --text_encoder sentence-transformers/all-MiniLM-L6-v2 --audio_encoder conv \
        --fusion_type transformer --freeze_text --num_train_epochs 5

    torchrun --nproc_per_node 2 examples/train.py ...same arguments...   # DDP (gloo on CPU, nccl on GPU)

Encoders: a Hub id or local folder per modality, `conv` for the seed CNN trained from scratch, or `none`.
Evaluation reports accuracy and macro-F1 (or MSE / MAE for regression) on the fused model, and again with each
modality removed at test time (`<split>_without_<modality>_*`). FSDP / DeepSpeed: the standard `--fsdp` /
`--deepspeed` TrainingArguments apply unchanged.
"""

import io
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Image, Value, load_dataset, load_from_disk
from PIL import Image as PILImage
from transformers import EvalPrediction, HfArgumentParser, Trainer, TrainingArguments, set_seed

from modeling_mmfnet import (
    MODALITIES,
    MMFNetConvConfig,
    MMFNetDataCollator,
    MMFNetEmbeddingCollator,
    MMFNetForClassification,
    MMFNetProcessor,
    cache_modality_embeddings,
    conv_image_processor,
    conv_spectrogram_extractor,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    vision_encoder: str = field(default="none", metadata={"help": "Hub id or folder, 'conv' (seed CNN) or 'none'."})
    text_encoder: str = field(default="none", metadata={"help": "Hub id or folder, or 'none'."})
    audio_encoder: str = field(default="none", metadata={"help": "Hub id or folder, 'conv' (seed CNN) or 'none'."})
    fusion_type: str = field(default="concat", metadata={"help": "concat|gated|attention|tensor|low_rank|transformer"})
    fusion_dim: int = 256
    fusion_hidden_dim: int = 512
    fusion_layers: int = 2
    dropout: float = 0.1
    modality_dropout: float = field(default=0.0, metadata={"help": "Hide each modality with this prob in training."})
    freeze_vision: bool = False
    freeze_text: bool = False
    freeze_audio: bool = False
    aux_unimodal_weight: float = 0.0
    contrastive_weight: float = 0.0
    conv_image_size: int = field(default=8, metadata={"help": "Image side the seed CNN sees (vision_encoder=conv)."})
    conv_hidden_sizes: str = field(default="32,64,128", metadata={"help": "Channels per seed-CNN block."})
    num_mel_bins: int = field(default=40, metadata={"help": "Log-mel bins for audio_encoder=conv."})
    max_audio_seconds: int = 1
    cache_embeddings: bool = field(
        default=False, metadata={"help": "With every encoder frozen: encode the data once, then train the fusion."}
    )
    lora_modalities: str | None = field(
        default=None, metadata={"help": "Comma-separated modalities whose encoder gets LoRA adapters (needs peft)."}
    )
    lora_rank: int = 8


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "A datasets Hub name or a `save_to_disk` folder."})
    dataset_config: str | None = None
    image_column: str | None = "image"
    text_column: str | None = "text"
    audio_column: str | None = "audio"
    sampling_rate_column: str | None = "sampling_rate"
    label_column: str = "label"
    train_split: str = "train"
    eval_split: str = "validation"
    test_splits: str = field(default="test", metadata={"help": "Comma-separated splits to report at the end."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    report_missing_modalities: bool = field(
        default=True, metadata={"help": "Also evaluate with each modality removed at test time."}
    )


def load_data(args: DataArguments) -> DatasetDict:
    if os.path.isdir(args.dataset):
        data = load_from_disk(args.dataset)
    else:
        data = load_dataset(args.dataset, args.dataset_config)
    if not isinstance(data, DatasetDict):
        raise ValueError(f"{args.dataset!r} must hold named splits (a DatasetDict), got a {type(data).__name__}.")
    for name, limit in ((args.train_split, args.max_train_samples), (args.eval_split, args.max_eval_samples)):
        if limit is not None and name in data:
            data[name] = data[name].select(range(min(limit, len(data[name]))))
    return data


def image_modes(dataset: Dataset, column: str) -> set[str]:
    """The PIL modes of every image in `column`, read from the file headers without decoding the pixels."""
    modes = set()
    for batch in dataset.cast_column(column, Image(decode=False)).select_columns([column]).iter(batch_size=256):
        for value in batch[column]:
            if value is not None:
                with PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as image:
                    modes.add(image.mode)
    return modes


def check_data(data: DatasetDict, args: DataArguments, modalities: tuple[str, ...], splits: list[str]) -> list[str]:
    """Fail before training on a missing split or column, labels outside the label set, or mixed image modes."""
    columns = {"vision": args.image_column, "text": args.text_column, "audio": args.audio_column}
    for split in splits:
        if split not in data:
            raise ValueError(f"split {split!r} not in the dataset (it has {list(data)}).")
        dataset = data[split]
        needed = [args.label_column] + [columns[m] for m in modalities]
        for column in needed:
            if column is None or column not in dataset.column_names:
                raise ValueError(
                    f"split {split!r} has no column {column!r}; it has {dataset.column_names}. Choose the column "
                    "with --image_column / --text_column / --audio_column / --label_column."
                )
    label_feature = data[splits[0]].features[args.label_column]
    if isinstance(label_feature, ClassLabel):
        names = list(label_feature.names)
    elif isinstance(label_feature, Value) and label_feature.dtype in ("string", "large_string"):
        raise ValueError(
            f"column {args.label_column!r} holds strings; labels must be class ids 0..K-1 or a ClassLabel "
            f"(encode it first, e.g. `dataset.class_encode_column({args.label_column!r})`)."
        )
    else:
        names = [str(v) for v in sorted(set(data[splits[0]][args.label_column]))]
    for split in splits:
        labels = np.asarray(data[split][args.label_column])
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(
                f"split {split!r}: labels must be in [0, {len(names)}) for the {len(names)} classes, found "
                f"{labels.min()}..{labels.max()}."
            )
    if "vision" in modalities and isinstance(data[splits[0]].features[args.image_column], Image):
        for split in splits:
            modes = image_modes(data[split], args.image_column)
            if len(modes) > 1:
                raise ValueError(f"split {split!r}: column {args.image_column!r} mixes image modes {sorted(modes)}.")
    return names


def build_model_and_processor(
    model_args: ModelArguments, labels: list[str], image_channels: int = 1
) -> tuple[MMFNetForClassification, MMFNetProcessor]:
    sources = {"vision": model_args.vision_encoder, "text": model_args.text_encoder, "audio": model_args.audio_encoder}
    encoders: dict[str, Any] = {}
    processors: dict[str, Any] = {}
    hidden_sizes = [int(v) for v in model_args.conv_hidden_sizes.split(",")]
    for modality, source in sources.items():
        if source.lower() == "none":
            continue
        if source.lower() == "conv":
            if modality == "text":
                raise ValueError("--text_encoder conv is not supported: the seed CNN reads images and spectrograms.")
            channels = image_channels if modality == "vision" else 1
            encoders[modality] = MMFNetConvConfig(num_channels=channels, hidden_sizes=hidden_sizes)
            processors[modality] = (
                conv_image_processor(model_args.conv_image_size, channels)
                if modality == "vision"
                else conv_spectrogram_extractor(num_mel_bins=model_args.num_mel_bins,
                                                max_seconds=model_args.max_audio_seconds)
            )  # fmt: skip
        else:
            encoders[modality] = processors[modality] = source
    if not encoders:
        raise ValueError("Give at least one of --vision_encoder, --text_encoder, --audio_encoder (not all 'none').")
    model = MMFNetForClassification.from_encoders_pretrained(
        **encoders,
        fusion_type=model_args.fusion_type,
        fusion_dim=model_args.fusion_dim,
        fusion_hidden_dim=model_args.fusion_hidden_dim,
        fusion_layers=model_args.fusion_layers,
        dropout=model_args.dropout,
        modality_dropout=model_args.modality_dropout,
        freeze_vision=model_args.freeze_vision,
        freeze_text=model_args.freeze_text,
        freeze_audio=model_args.freeze_audio,
        aux_unimodal_weight=model_args.aux_unimodal_weight,
        contrastive_weight=model_args.contrastive_weight,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    processor = MMFNetProcessor.from_encoders_pretrained(**processors)
    return model, processor


def _has_parameters(module: torch.nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def add_lora(model: MMFNetForClassification, modalities: list[str], rank: int) -> Any:
    """LoRA adapters on the linear layers of the chosen encoders; every other module stays fully trainable."""
    try:  # an optional extra: imported only when LoRA is asked for
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("--lora_modalities needs peft: `pip install 'mmfnet[peft]'`.") from error

    lora_encoders = {f"{m}_model" for m in modalities}
    encoder_pattern = "|".join(sorted(lora_encoders))
    targets = rf".*mmfnet\.({encoder_pattern})\..*(query|key|value|dense|q_proj|k_proj|v_proj|out_proj|fc1|fc2|conv)$"
    trainable = [name for name, child in model.named_children() if name != "mmfnet" and _has_parameters(child)]
    trainable += [
        f"mmfnet.{name}"
        for name, child in model.mmfnet.named_children()
        if name not in lora_encoders and _has_parameters(child)
    ]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, modules_to_save=trainable)
    return get_peft_model(model, config)


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    labels = prediction.label_ids
    if logits.ndim == 2 and logits.shape[1] > 1:
        predicted = logits.argmax(-1)
        return {
            "accuracy": accuracy_score(labels, predicted),
            "macro_f1": f1_score(labels, predicted, average="macro"),
        }
    residual = logits.reshape(labels.shape) - labels
    return {"mse": float(np.mean(residual**2)), "mae": float(np.mean(np.abs(residual)))}


def evaluate_all(
    trainer: Trainer, splits: dict[str, Dataset], collator: Any, modalities: tuple[str, ...], drop: bool
) -> dict[str, float]:
    """Fused metrics per split, plus (with `drop`) the same model with each modality removed at test time.

    Without modality m, the samples that have only m are left out (nothing of them is left to classify).
    """
    metrics: dict[str, float] = {}
    for name, dataset in splits.items():
        metrics.update(trainer.evaluate(dataset, metric_key_prefix=name))
        if not drop or len(modalities) < 2 or not isinstance(collator, MMFNetDataCollator):
            continue
        for modality in modalities:
            others = [collator.columns[m] for m in modalities if m != modality]
            kept = dataset.filter(
                lambda *values: any(v is not None for v in values), input_columns=others, keep_in_memory=True
            )
            if len(kept) == 0:
                continue
            trainer.data_collator = collator.without(modality)
            try:
                metrics.update(trainer.evaluate(kept, metric_key_prefix=f"{name}_without_{modality}"))
            finally:
                trainer.data_collator = collator
    return metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=argv[0])
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return run(model_args, data_args, training_args)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict[str, float]:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    training_args.remove_unused_columns = False  # the collator reads the raw image / text / audio columns
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    logger.info("process %d of %d", training_args.process_index, training_args.world_size)
    set_seed(training_args.seed)

    data = load_data(data_args)
    sources = {"vision": model_args.vision_encoder, "text": model_args.text_encoder, "audio": model_args.audio_encoder}
    modalities = tuple(m for m in MODALITIES if sources[m].lower() != "none")
    test_splits = [s for s in data_args.test_splits.split(",") if s]
    splits = [data_args.train_split, data_args.eval_split, *test_splits] if training_args.do_train else test_splits
    labels = check_data(data, data_args, modalities, [s for s in dict.fromkeys(splits) if s])
    image_channels = 1
    if "vision" in modalities and isinstance(data[splits[0]].features[data_args.image_column], Image):
        image_channels = 3 if image_modes(data[splits[0]], data_args.image_column) == {"RGB"} else 1

    model, processor = build_model_and_processor(model_args, labels, image_channels)
    if model_args.lora_modalities:
        model = add_lora(model, model_args.lora_modalities.split(","), model_args.lora_rank)
    collator = MMFNetDataCollator(
        processor,
        image_column=data_args.image_column if "vision" in modalities else None,
        text_column=data_args.text_column if "text" in modalities else None,
        audio_column=data_args.audio_column if "audio" in modalities else None,
        label_column=data_args.label_column,
        sampling_rate_column=data_args.sampling_rate_column,
    )
    datasets_by_split = {name: data[name] for name in dict.fromkeys(splits) if name}
    train_collator: Any = collator
    if model_args.cache_embeddings:
        datasets_by_split = {
            name: cache_modality_embeddings(model, ds, collator, keep_columns=(data_args.label_column,))
            for name, ds in datasets_by_split.items()
        }
        train_collator = MMFNetEmbeddingCollator(label_column=data_args.label_column)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=datasets_by_split.get(data_args.train_split) if training_args.do_train else None,
        eval_dataset=datasets_by_split.get(data_args.eval_split) if training_args.do_train else None,
        data_collator=train_collator,
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        metrics.update({f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()})
        trainer.save_model()
    drop = data_args.report_missing_modalities and not model_args.cache_embeddings
    metrics.update(
        evaluate_all(trainer, {s: datasets_by_split[s] for s in test_splits}, train_collator, modalities, drop)
    )
    if trainer.is_world_process_zero():
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(training_args.output_dir) / "mmfnet_results.json").write_text(json.dumps(metrics, indent=2))
    if training_args.push_to_hub:
        # Trainer.push_to_hub saves the model and the processor (`processing_class`) to output_dir, writes MMFNet's
        # card (the package wraps `Trainer.create_model_card`: this run's metrics, the repo's card updated), and
        # uploads the folder in one commit.
        trainer.push_to_hub(commit_message="MMFNet fine-tuned with examples/train.py", dataset=[data_args.dataset])
    return metrics


if __name__ == "__main__":
    main()
