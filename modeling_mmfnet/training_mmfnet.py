"""Fine-tune MMFNet on any `datasets` data with the Trainer — on one process, or under `torchrun` (DDP).

The logic behind `examples/train.py` (a thin wrapper over `main`); package-only, not shipped to the Hub.

    python examples/train.py --dataset data/avdigits-agree --output_dir outputs/agree \
        --vision_encoder conv --text_encoder sentence-transformers/all-MiniLM-L6-v2 --audio_encoder conv \
        --fusion_type transformer --freeze_text true --num_train_epochs 5

    torchrun --nproc_per_node 2 examples/train.py ...same arguments...   # DDP (gloo on CPU, nccl on GPU)

It trains by default (the `train` split), evaluates on the validation split every epoch and keeps the epoch with
the best validation accuracy; `--do_train false --do_eval true --model_name_or_path DIR` only evaluates. What the
data says is read before anything is built: the image size and channels for the seed CNN, the audio sampling rate
(one rate over every split, or `--resample_audio_to`). Encoders: a Hub id or local folder per modality, `conv` for
the seed CNN trained from scratch, or `none`. Evaluation reports accuracy and macro-F1 on the fused model, and again
with each modality removed at test time (`<split>_without_<modality>_*`). `--unimodal_first true` first trains each
branch alone (`train_unimodal_first`, in `{output_dir}/_unimodal-{modality}`), then fuses those encoders. FSDP /
DeepSpeed: the standard `--fsdp` / `--deepspeed` TrainingArguments apply unchanged.
"""

import dataclasses
import io
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Image, Value, load_dataset, load_from_disk
from huggingface_hub.errors import StrictDataclassError
from PIL import Image as PILImage
from transformers import (
    AutoProcessor,
    EvalPrediction,
    HfArgumentParser,
    IntervalStrategy,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from .caching_mmfnet import MMFNetEmbeddingCollator, cache_modality_embeddings, cacheable_modalities
from .card_mmfnet import RESULTS_FILES
from .checkpoints_mmfnet import check_images, check_splits_not_empty, resolve_resume_checkpoint
from .configuration_mmfnet import (
    CONV_GLOBAL_POOLINGS,
    CONV_NORMALIZATIONS,
    MODALITIES,
    MODALITY_BALANCES,
    MMFNetConvConfig,
)
from .modeling_mmfnet import MMFNetForClassification
from .processing_mmfnet import MMFNetDataCollator, MMFNetProcessor, conv_image_processor, conv_spectrogram_extractor
from .saving_mmfnet import atomic_write_text

logger = logging.getLogger(__name__)

ENCODER_PARAMETER = re.compile(r"(?:^|\.)mmfnet\.(?:vision|text|audio)_model\.")
"""Names of the encoders' parameters (also inside a PEFT or DDP wrapper): the `encoder_learning_rate` group."""

GREY_MODES = frozenset({"1", "L", "I", "I;16", "F"})
"""PIL modes read as one channel; any other mode (RGB, RGBA, P, CMYK, …) is converted to three (RGB)."""


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A trained MMFNet (folder or Hub id, with its processor) to start from instead of building one "
            "from the encoder flags; with --do_train false --do_eval true it is only evaluated."
        },
    )
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
    modality_balance: str = field(
        default="none",
        metadata={
            "help": "Training-time modality balance (OGM / OGM-GE gradient modulation); needs --aux_unimodal_weight "
            "> 0 and two or more modalities.",
            "choices": MODALITY_BALANCES,
        },
    )
    modality_balance_alpha: float = field(
        default=0.5, metadata={"help": "OGM's alpha: how strongly the dominant modality's gradient is scaled down."}
    )
    conv_image_size: int | None = field(
        default=None,
        metadata={"help": "Image side the seed CNN sees (vision_encoder=conv); default: the images' own size."},
    )
    conv_hidden_sizes: str = field(default="32,64,128", metadata={"help": "Channels per seed-CNN block."})
    conv_normalization: str = field(
        default="group",
        metadata={"help": "Norm after each seed-CNN convolution.", "choices": CONV_NORMALIZATIONS},
    )
    conv_convs_per_block: int = field(
        default=1, metadata={"help": "Convolutions (each with its norm and GELU) per seed-CNN block."}
    )
    conv_global_pooling: str = field(
        default="none",
        metadata={
            "help": "Seed CNN output: its last feature map as tokens ('none') or one pooled token.",
            "choices": CONV_GLOBAL_POOLINGS,
        },
    )
    num_mel_bins: int = field(default=40, metadata={"help": "Log-mel bins for audio_encoder=conv."})
    max_audio_seconds: int = 1
    augment_image_shift: float = field(
        default=0.0, metadata={"help": "Training only: shift images by up to this fraction of their side."}
    )
    augment_image_flip: float = field(default=0.0, metadata={"help": "Training only: horizontal-flip probability."})
    augment_time_mask: float = field(
        default=0.0, metadata={"help": "Training only: SpecAugment time masks of up to this fraction of the frames."}
    )
    augment_frequency_mask: float = field(
        default=0.0, metadata={"help": "Training only: SpecAugment frequency masks of up to this fraction of bins."}
    )
    cache_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Encode the frozen modalities once (their encoders never run again); the other encoders train "
            "on the raw inputs as usual."
        },
    )
    lora_modalities: str | None = field(
        default=None, metadata={"help": "Comma-separated modalities whose encoder gets LoRA adapters (needs peft)."}
    )
    lora_rank: int = 8
    unimodal_first: bool = field(
        default=False,
        metadata={
            "help": "Train each seed CNN and each encoder that trains alone first (a single-modality classifier saved "
            "in OUTPUT_DIR/_unimodal-MODALITY), then the fused model from those encoders; needs two or more encoders."
        },
    )

    @property
    def encoder_modalities(self) -> tuple[str, ...]:
        """The modalities whose encoder flag (`--vision_encoder`, ...) is not `none`."""
        return tuple(m for m in MODALITIES if getattr(self, f"{m}_encoder").lower() != "none")

    def __post_init__(self) -> None:
        # argparse checks the choices of a command line; a JSON file or a direct construction is checked here
        for flag, value, choices in (
            ("--modality_balance", self.modality_balance, MODALITY_BALANCES),
            ("--conv_normalization", self.conv_normalization, CONV_NORMALIZATIONS),
            ("--conv_global_pooling", self.conv_global_pooling, CONV_GLOBAL_POOLINGS),
        ):
            if value not in choices:
                raise ValueError(f"{flag} must be one of {', '.join(choices)}; got {value!r}.")
        if isinstance(self.conv_convs_per_block, bool) or self.conv_convs_per_block < 1:
            raise ValueError(f"--conv_convs_per_block must be an integer >= 1, got {self.conv_convs_per_block!r}.")
        if self.modality_balance_alpha < 0:
            raise ValueError(f"--modality_balance_alpha must be >= 0, got {self.modality_balance_alpha}.")
        if self.modality_balance != "none" and self.model_name_or_path is None:
            encoders = list(self.encoder_modalities)
            if self.aux_unimodal_weight <= 0 or len(encoders) < 2:
                raise ValueError(
                    f"--modality_balance {self.modality_balance} compares the modalities through their auxiliary "
                    f"unimodal heads: it needs --aux_unimodal_weight > 0 (got {self.aux_unimodal_weight}) and at "
                    f"least two of --vision_encoder, --text_encoder, --audio_encoder (got {encoders or 'none'})."
                )
        if self.unimodal_first:
            self._check_unimodal_first()

    def _check_unimodal_first(self) -> None:
        if self.model_name_or_path is not None:
            raise ValueError(
                "--unimodal_first trains the encoders given by --vision_encoder / --text_encoder / --audio_encoder "
                f"alone before fusing them; it cannot start from --model_name_or_path {self.model_name_or_path!r}."
            )
        encoders = list(self.encoder_modalities)
        if len(encoders) < 2:
            raise ValueError(
                "--unimodal_first trains each branch alone before fusing them: it needs at least two of "
                f"--vision_encoder, --text_encoder, --audio_encoder (got {encoders or 'none'})."
            )
        if self.lora_modalities:
            raise ValueError("--unimodal_first does not combine with --lora_modalities: use one or the other.")
        if not unimodal_first_modalities(self):
            raise ValueError(
                "--unimodal_first has no encoder to train alone: every encoder is pretrained and frozen "
                f"({', '.join(f'--freeze_{m} true' for m in encoders)}). Let one train, or drop --unimodal_first."
            )


def unimodal_first_modalities(model_args: ModelArguments) -> list[str]:
    """The modalities `--unimodal_first` trains alone: every seed CNN (`conv`, also when `--freeze_*` keeps it fixed
    in the fused run) and every pretrained encoder that is not frozen; a frozen pretrained encoder never changes."""
    chosen = []
    for modality in MODALITIES:
        source = getattr(model_args, f"{modality}_encoder").lower()
        if source == "conv" or (source != "none" and not getattr(model_args, f"freeze_{modality}")):
            chosen.append(modality)
    return chosen


# the model flags that still apply to a model loaded with --model_name_or_path
MODEL_ARGUMENTS_USED_WITH_A_TRAINED_MODEL = frozenset(
    {"model_name_or_path", "cache_embeddings", "lora_modalities", "lora_rank", "unimodal_first"}
)


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
    eval_split: str = field(default="validation", metadata={"help": "The split evaluated during training."})
    validation_split_percentage: int | None = field(
        default=None,
        metadata={"help": "Without an --eval_split in the data: carve this percentage of the train split out for it."},
    )
    test_splits: str = field(default="test", metadata={"help": "Comma-separated splits to report at the end."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    resample_audio_to: int | None = field(
        default=None,
        metadata={
            "help": "Resample every clip to this rate (Hz). Without it, all clips must share one rate: the seed "
            "CNN's spectrogram front end uses it, a pretrained audio encoder must expect it."
        },
    )
    report_missing_modalities: bool = field(
        default=True, metadata={"help": "Also evaluate with each modality removed at test time."}
    )
    allow_remote_images: bool = field(
        default=False, metadata={"help": "Let image columns hold URLs, fetched over the network (off: refused)."}
    )


def strategy_name(strategy: Any) -> str:
    """'no', 'steps', 'epoch' or 'best', from a strategy enum or string (`str()` of the enum is its class path)."""
    return getattr(strategy, "value", strategy)


@dataclass
class MMFNetTrainingArguments(TrainingArguments):
    r"""`TrainingArguments` with the defaults of a fine-tuning run and two MMFNet options.

    Defaults that differ: `do_train=True`; `eval_strategy="epoch"` and `save_strategy="epoch"`;
    `load_best_model_at_end` on whenever the two strategies allow it, by `metric_for_best_model="accuracy"`;
    `save_total_limit=2` (the best checkpoint and the latest).

    Args:
        encoder_learning_rate (`float`, *optional*): learning rate of the encoders' parameters (pretrained
            backbones usually want a smaller one than the fresh fusion and head, which use `learning_rate`); the
            schedule scales both alike.
        checkpoint_trainable_only (`bool`, defaults to `False`): intermediate checkpoints hold only the trainable
            weights (not the frozen encoders'); resuming and `load_best_model_at_end` still work, and the final
            `save_model()` stays complete.
    """

    do_train: bool = field(
        default=True,
        metadata={
            "help": "Train (the default). `--do_train false --do_eval true` only evaluates --model_name_or_path."
        },
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: 'no', 'steps', 'epoch'."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save: 'no', 'steps', 'epoch', 'best'."})
    load_best_model_at_end: bool | None = field(
        default=None,
        metadata={"help": "Keep the best checkpoint (default: whenever eval and save strategies match)."},
    )
    metric_for_best_model: str | None = field(
        default="accuracy", metadata={"help": "Validation metric that picks the best checkpoint."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best one always)."})
    encoder_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the encoders (default: --learning_rate, like the rest)."}
    )
    checkpoint_trainable_only: bool = field(
        default=False,
        metadata={
            "help": "Intermediate checkpoints without the frozen encoders' weights; the final model is complete."
        },
    )

    def __post_init__(self) -> None:
        if self.load_best_model_at_end is None:
            evaluates, saves = strategy_name(self.eval_strategy), strategy_name(self.save_strategy)
            self.load_best_model_at_end = evaluates != "no" and saves in (evaluates, "best")
            if not self.load_best_model_at_end and evaluates != "no":
                logger.warning(
                    "load_best_model_at_end is off: --save_strategy %s does not match --eval_strategy %s, so the "
                    "final model is the last step's, not the best validation one.",
                    saves,
                    evaluates,
                )
        if self.encoder_learning_rate is not None and self.encoder_learning_rate < 0:
            raise ValueError(f"--encoder_learning_rate must be >= 0, got {self.encoder_learning_rate}.")
        super().__post_init__()


class MMFNetTrainer(Trainer):
    r"""The `Trainer` with [`MMFNetTrainingArguments`]' options, through its own hooks (no custom loop):

    - `encoder_learning_rate`: `create_optimizer` builds the Trainer's optimizer (its class, weight-decay groups,
      kwargs) and splits each parameter group into encoder and non-encoder parts; the encoder parts get that rate.
    - `checkpoint_trainable_only`: `_save` of an intermediate checkpoint writes the trainable weights only; loading
      such a checkpoint (resume, best model) leaves the frozen weights as they are.
    """

    _saving_checkpoint = False

    def __init__(self, *args: Any, processing_class: Any = None, **kwargs: Any) -> None:
        # transformers 5.24's `align_special_tokens` reads `processor.tokenizer` of any processor and fails on None
        # (a vision + audio MMFNet): such a processor is saved by `_save` itself, not handed to the Trainer
        self._own_processor = None
        if isinstance(processing_class, MMFNetProcessor) and processing_class.tokenizer is None:
            self._own_processor, processing_class = processing_class, None
        super().__init__(*args, processing_class=processing_class, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        building = self.optimizer is None
        optimizer = super().create_optimizer(model)
        encoder_lr = getattr(self.args, "encoder_learning_rate", None)
        if not building or encoder_lr is None:
            return optimizer
        opt_model = self.model if model is None else model
        encoder_ids = {id(p) for name, p in opt_model.named_parameters() if ENCODER_PARAMETER.search(name)}
        groups = list(optimizer.param_groups)
        optimizer.param_groups.clear()
        for group in groups:
            options = {k: v for k, v in group.items() if k != "params"}
            encoder = [p for p in group["params"] if id(p) in encoder_ids]
            rest = [p for p in group["params"] if id(p) not in encoder_ids]
            if rest:
                optimizer.add_param_group({**options, "params": rest})
            if encoder:
                optimizer.add_param_group({**options, "params": encoder, "lr": encoder_lr})
        trained = [p for group in groups for p in group["params"]]
        in_encoders = sum(id(p) in encoder_ids for p in trained)
        logger.info(
            "optimizer: %d encoder tensors at lr %g, %d others at lr %g",
            in_encoders,
            encoder_lr,
            len(trained) - in_encoders,
            self.args.learning_rate,
        )
        return optimizer

    def _frozen_parameter_names(self) -> set[str]:
        return {name for name, p in self.model.named_parameters() if not p.requires_grad}

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if (
            self._saving_checkpoint
            and getattr(self.args, "checkpoint_trainable_only", False)
            and state_dict is None
            and isinstance(self.model, MMFNetForClassification)  # PEFT already saves only its adapters
        ):
            frozen = self._frozen_parameter_names()
            state_dict = {k: v for k, v in self.model.state_dict().items() if k not in frozen}
        super()._save(output_dir, state_dict=state_dict)
        if self._own_processor is not None and self.args.should_save:
            self._own_processor.save_pretrained(output_dir if output_dir is not None else self.args.output_dir)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        if getattr(self.args, "checkpoint_trainable_only", False):  # the frozen weights are left out on purpose
            frozen = self._frozen_parameter_names()
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if k not in frozen]
        super()._issue_warnings_after_load(load_result)


def load_data(args: DataArguments, seed: int = 42, carve_validation: bool = False) -> DatasetDict:
    """The dataset's splits; with `carve_validation` and no `eval_split`, one carved out of the train split."""
    if os.path.isdir(args.dataset):
        data = load_from_disk(args.dataset)
    else:
        data = load_dataset(args.dataset, args.dataset_config)
    if not isinstance(data, DatasetDict):
        raise ValueError(f"{args.dataset!r} must hold named splits (a DatasetDict), got a {type(data).__name__}.")
    if args.validation_split_percentage is not None and not 0 < args.validation_split_percentage < 100:
        raise ValueError(f"--validation_split_percentage must be in 1..99, got {args.validation_split_percentage}.")
    if carve_validation and args.eval_split not in data:
        if args.validation_split_percentage is None:
            raise ValueError(
                f"the dataset has no {args.eval_split!r} split to evaluate on during training (it has {list(data)}). "
                f"Name one with --eval_split, carve one out of {args.train_split!r} with "
                "--validation_split_percentage 10, or train without evaluation: --eval_strategy no."
            )
        if args.train_split not in data:
            raise ValueError(f"no {args.train_split!r} split to carve a validation split from (it has {list(data)}).")
        # a seeded permutation: the same split on every rank and every run, no cache files written next to the data
        train_rows = data[args.train_split]
        order = np.random.default_rng(seed).permutation(len(train_rows))
        size = max(1, round(len(train_rows) * args.validation_split_percentage / 100))
        data[args.eval_split] = train_rows.select(np.sort(order[:size]), keep_in_memory=True)
        data[args.train_split] = train_rows.select(np.sort(order[size:]), keep_in_memory=True)
        logger.info(
            "validation: %d rows carved out of %r (%d%%, seed %d), %d left to train on",
            size,
            args.train_split,
            args.validation_split_percentage,
            seed,
            len(train_rows) - size,
        )
    for name, limit in ((args.train_split, args.max_train_samples), (args.eval_split, args.max_eval_samples)):
        if limit is not None and name in data:
            data[name] = data[name].select(range(min(limit, len(data[name]))))
    return data


def image_properties(dataset: Dataset, column: str) -> tuple[set[str], Counter]:
    """The PIL modes and a count of the `(height, width)` sizes of every image in `column`, read from the file
    headers without decoding the pixels."""
    modes, sizes = set(), Counter()
    for batch in dataset.cast_column(column, Image(decode=False)).select_columns([column]).iter(batch_size=256):
        for value in batch[column]:
            if value is not None:
                with PILImage.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as image:
                    modes.add(image.mode)
                    sizes[(image.height, image.width)] += 1
    return modes, sizes


def image_modes(dataset: Dataset, column: str) -> set[str]:
    """The PIL modes of every image in `column`, read from the file headers without decoding the pixels."""
    return image_properties(dataset, column)[0]


def audio_sampling_rates(dataset: Dataset, audio_column: str, rate_column: str | None) -> Counter:
    """How many clips (non-null audio rows) come at each sampling rate, read from Arrow without decoding the audio.

    The rate is the `rate_column` value of the row, or the `sampling_rate` field of an `{"array", "sampling_rate"}`
    struct; clips with neither count under `None`.
    """
    rates: Counter = Counter()
    columns = [audio_column, *([rate_column] if rate_column and rate_column in dataset.column_names else [])]
    for table in dataset.with_format("arrow").select_columns(columns).iter(batch_size=4096):
        audio = table[audio_column]
        present = pc.is_valid(audio)
        if pa.types.is_struct(audio.type) and audio.type.get_field_index("sampling_rate") >= 0:
            values = pc.struct_field(audio, "sampling_rate")
        elif len(columns) == 2:
            values = table[rate_column]
        else:
            values = pa.nulls(len(audio))
        rates.update(value for value, keep in zip(values.to_pylist(), present.to_pylist(), strict=True) if keep)
    return rates


def choose_sampling_rate(rates: Counter, resample_to: int | None, column: str) -> int | None:
    """The one rate the audio front end gets: `resample_to`, or the data's single rate (else a ValueError)."""
    if resample_to is not None:
        if resample_to < 1:
            raise ValueError(f"--resample_audio_to must be a positive rate in Hz, got {resample_to}.")
        if None in rates:
            raise ValueError(
                f"{rates[None]} clips of column {column!r} have no sampling rate to resample from: add a "
                "--sampling_rate_column or store {'array', 'sampling_rate'} dicts."
            )
        logger.info("audio: %s → resampled to %d Hz", _describe_rates(rates), resample_to)
        return resample_to
    if not rates:
        return None
    if None in rates:
        raise ValueError(
            f"{rates[None]} clips of column {column!r} have no sampling rate: add a --sampling_rate_column (the "
            "rate of each row) or store {'array', 'sampling_rate'} dicts."
        )
    if len(rates) > 1:
        raise ValueError(
            f"column {column!r} mixes sampling rates ({_describe_rates(rates)}); pass --resample_audio_to "
            f"{max(rates, key=rates.get)} (or another rate) to resample every clip."
        )
    rate = next(iter(rates))
    logger.info("audio: %s", _describe_rates(rates))
    return rate


def _describe_rates(rates: Counter) -> str:
    return ", ".join(f"{count} clips at {rate} Hz" for rate, count in rates.most_common())


def check_data(data: DatasetDict, args: DataArguments, modalities: tuple[str, ...], splits: list[str]) -> list[str]:
    """Fail before training on a missing, empty split or column, labels outside the label set, or an image that
    cannot be decoded (or is a URL, without --allow_remote_images); the label names."""
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
    check_splits_not_empty(data, splits)
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
    image_feature = data[splits[0]].features[args.image_column] if "vision" in modalities else None
    if isinstance(image_feature, Image) or getattr(image_feature, "dtype", None) in ("string", "large_string"):
        for split in splits:
            check_images(data[split], args.image_column, split, allow_remote=args.allow_remote_images)
    return names


def data_shapes(
    data: DatasetDict, data_args: DataArguments, modalities: tuple[str, ...], splits: list[str]
) -> dict[str, Any]:
    """What the data says about the seed CNN's inputs, read from every row of `splits` before anything is built:
    `image_channels` (1 for grey modes, else 3), `image_size` (the most common `(height, width)`), and
    `sampling_rate` (one over all clips, or `--resample_audio_to`)."""
    shapes: dict[str, Any] = {"image_channels": None, "image_size": None, "sampling_rate": None}
    column = data_args.image_column
    if "vision" in modalities and isinstance(data[splits[0]].features[column], Image):
        modes, sizes = set(), Counter()
        for split in splits:
            split_modes, split_sizes = image_properties(data[split], column)
            if len(split_modes) > 1:
                raise ValueError(f"split {split!r}: column {column!r} mixes image modes {sorted(split_modes)}.")
            modes |= split_modes
            sizes += split_sizes
        if len(modes) > 1:
            raise ValueError(f"column {column!r} has images of modes {sorted(modes)} across splits; use one mode.")
        if sizes:
            (height, width), count = sizes.most_common(1)[0]
            shapes["image_channels"] = 1 if modes <= GREY_MODES else 3
            shapes["image_size"] = (height, width)
            share = "all" if len(sizes) == 1 else f"{count} of {sum(sizes.values())}; {len(sizes)} sizes in all"
            logger.info(
                "images: %s, %d×%d (%s) → %d channel(s)",
                "/".join(sorted(modes)),
                height,
                width,
                share,
                shapes["image_channels"],
            )
    if "audio" in modalities:
        rates: Counter = Counter()
        for split in splits:
            rates += audio_sampling_rates(data[split], data_args.audio_column, data_args.sampling_rate_column)
        shapes["sampling_rate"] = choose_sampling_rate(rates, data_args.resample_audio_to, data_args.audio_column)
    return shapes


def build_processor(
    model_args: ModelArguments,
    image_channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    sampling_rate: int | None = None,
) -> MMFNetProcessor:
    """The processor for the encoder flags: each pretrained encoder's own, or the seed CNN's sized by the data."""
    sources = {"vision": model_args.vision_encoder, "text": model_args.text_encoder, "audio": model_args.audio_encoder}
    parts: dict[str, Any] = {}
    for modality, source in sources.items():
        if source.lower() == "none":
            continue
        if source.lower() != "conv":
            parts[modality] = source
        elif modality == "vision":
            if model_args.conv_image_size is not None:
                size: int | tuple[int, int] = model_args.conv_image_size
            elif image_size is not None:
                size = image_size
            else:
                size = 8
                logger.warning("vision: image sizes unknown (not an `Image` column): --conv_image_size %d", size)
            parts[modality] = conv_image_processor(size, image_channels or 1)
            logger.info("seed CNN vision input: %d channel(s), %s pixels", image_channels or 1, size)
        elif modality == "audio":
            parts[modality] = conv_spectrogram_extractor(
                sampling_rate=sampling_rate or 8000,
                num_mel_bins=model_args.num_mel_bins,
                max_seconds=model_args.max_audio_seconds,
            )
            logger.info(
                "seed CNN audio input: %d log-mel bins over 0–%g Hz of %d Hz clips",
                model_args.num_mel_bins,
                (sampling_rate or 8000) / 2,
                sampling_rate or 8000,
            )
        else:
            raise ValueError("--text_encoder conv is not supported: the seed CNN reads images and spectrograms.")
    if not parts:
        raise ValueError("Give at least one of --vision_encoder, --text_encoder, --audio_encoder (not all 'none').")
    return MMFNetProcessor.from_encoders_pretrained(**parts)


def check_sampling_rate(processor: MMFNetProcessor, sampling_rate: int | None) -> None:
    """A pretrained audio encoder's feature extractor must get clips at its own rate (before any model is built)."""
    extractor = processor.feature_extractor
    if extractor is None or sampling_rate is None or extractor.sampling_rate == sampling_rate:
        return
    raise ValueError(
        f"the audio is at {sampling_rate} Hz but the audio encoder's feature extractor expects "
        f"{extractor.sampling_rate} Hz: pass --resample_audio_to {extractor.sampling_rate}."
    )


def build_model(
    model_args: ModelArguments,
    labels: list[str],
    image_channels: int | None = None,
    trained_encoders: dict[str, PreTrainedModel] | None = None,
    encoder_names: dict[str, str] | None = None,
) -> MMFNetForClassification:
    """A fresh MMFNet from the encoder flags: pretrained encoders loaded, seed CNNs sized for the data.

    `trained_encoders[modality]`, an already-trained encoder module (`--unimodal_first`), is used as it is in place
    of that flag's source; `encoder_names[modality]` is recorded as `config.{modality}_encoder_name`.
    """
    sources = {"vision": model_args.vision_encoder, "text": model_args.text_encoder, "audio": model_args.audio_encoder}
    trained_encoders = trained_encoders or {}
    unknown = [m for m in trained_encoders if sources.get(m, "none").lower() == "none"]
    if unknown:
        raise ValueError(f"trained_encoders has {unknown}, which the encoder flags leave out ('none' or unknown).")
    hidden_sizes = [int(v) for v in model_args.conv_hidden_sizes.split(",")]
    encoders: dict[str, Any] = {}
    for modality, source in sources.items():
        if source.lower() == "none":
            continue
        if modality in trained_encoders:
            encoders[modality] = trained_encoders[modality]
        elif source.lower() == "conv":
            if modality == "text":
                raise ValueError("--text_encoder conv is not supported: the seed CNN reads images and spectrograms.")
            channels = (image_channels or 1) if modality == "vision" else 1
            encoders[modality] = MMFNetConvConfig(
                num_channels=channels,
                hidden_sizes=hidden_sizes,
                normalization=model_args.conv_normalization,
                convs_per_block=model_args.conv_convs_per_block,
                global_pooling=model_args.conv_global_pooling,
            )
        else:
            encoders[modality] = source
    if not encoders:
        raise ValueError("Give at least one of --vision_encoder, --text_encoder, --audio_encoder (not all 'none').")
    names = {f"{modality}_encoder_name": name for modality, name in (encoder_names or {}).items()}
    return MMFNetForClassification.from_encoders_pretrained(
        **encoders,
        **names,
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
        modality_balance=model_args.modality_balance,
        modality_balance_alpha=model_args.modality_balance_alpha,
        augment_image_shift=model_args.augment_image_shift,
        augment_image_flip=model_args.augment_image_flip,
        augment_time_mask=model_args.augment_time_mask,
        augment_frequency_mask=model_args.augment_frequency_mask,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def build_model_and_processor(
    model_args: ModelArguments,
    labels: list[str],
    image_channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    sampling_rate: int | None = None,
) -> tuple[MMFNetForClassification, MMFNetProcessor]:
    """[`build_processor`] then [`build_model`] (the processor first: its checks need no model)."""
    processor = build_processor(model_args, image_channels, image_size, sampling_rate)
    return build_model(model_args, labels, image_channels), processor


def load_trained(model_args: ModelArguments, labels: list[str]) -> tuple[MMFNetForClassification, MMFNetProcessor]:
    """A trained MMFNet and its processor from `--model_name_or_path`; its labels must be the data's.

    The flags that build a model (encoders, fusion, conv options, …) describe the saved one instead: any given with a
    non-default value is named in a warning, so it is not ignored silently.
    """
    ignored = [
        f"--{f.name}"
        for f in dataclasses.fields(ModelArguments)
        if f.name not in MODEL_ARGUMENTS_USED_WITH_A_TRAINED_MODEL and getattr(model_args, f.name) != f.default
    ]
    if ignored:
        logger.warning(
            "--model_name_or_path %s: the model is loaded as saved, so %s (which build a new model) are ignored.",
            model_args.model_name_or_path,
            ", ".join(ignored),
        )
    model = MMFNetForClassification.from_pretrained(model_args.model_name_or_path)
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    if model.config.num_labels != len(labels):
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path!r} predicts {model.config.num_labels} classes, "
            f"the data has {len(labels)}."
        )
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


def build_collator(
    processor: MMFNetProcessor, data_args: DataArguments, modalities: tuple[str, ...]
) -> MMFNetDataCollator:
    """The collator reading the data's columns of `modalities` (the others are left out)."""
    return MMFNetDataCollator(
        processor,
        image_column=data_args.image_column if "vision" in modalities else None,
        text_column=data_args.text_column if "text" in modalities else None,
        audio_column=data_args.audio_column if "audio" in modalities else None,
        label_column=data_args.label_column,
        sampling_rate_column=data_args.sampling_rate_column,
        resample_to=data_args.resample_audio_to,
    )


def train_and_save(trainer: Trainer, resume: str | None = None) -> dict[str, float]:
    """`trainer.train()` (refused if it trained 0 steps), the best checkpoint logged, the model saved to the
    trainer's `output_dir`; the training metrics, `train_`-prefixed, and `best_checkpoint_step`."""
    result = trainer.train(resume_from_checkpoint=resume)
    if result.global_step == 0:
        raise RuntimeError(
            "the run trained 0 steps: check --num_train_epochs / --max_steps (and that a resumed checkpoint is "
            "not already at the end)."
        )
    metrics = {f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()}
    if trainer.state.best_model_checkpoint is not None:
        metrics["best_checkpoint_step"] = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1])
        logger.info(
            "kept the best checkpoint by eval_%s: %s (%s = %s)",
            trainer.args.metric_for_best_model,
            trainer.state.best_model_checkpoint,
            trainer.args.metric_for_best_model,
            trainer.state.best_metric,
        )
    trainer.save_model()
    return metrics


def save_results(folder: str | os.PathLike, metrics: dict[str, float]) -> None:
    """Write a run's metrics to `folder/mmfnet_results.json` (atomically), which the model card reads."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / RESULTS_FILES[0], json.dumps(metrics, indent=2))


def rows_with(dataset: Dataset, column: str) -> Dataset:
    """The rows of `dataset` whose `column` is not null (read from Arrow, nothing decoded)."""
    present = pc.is_valid(dataset.select_columns([column]).with_format("arrow")[:][column])
    return dataset.select(np.flatnonzero(present.to_numpy()), keep_in_memory=True)


def train_unimodal_first(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MMFNetTrainingArguments,
    data: DatasetDict,
    labels: list[str],
    shapes: dict[str, Any],
    evaluate: bool,
) -> tuple[dict[str, PreTrainedModel], dict[str, str]]:
    """`--unimodal_first`: each modality of [`unimodal_first_modalities`] trained alone, then its encoder returned.

    Each branch is a single-modality MMFNet built by [`build_model`] from the same flags (that encoder only, not
    frozen; no modality dropout, auxiliary heads, contrastive loss or balance, which need two modalities), trained
    by the [`MMFNetTrainer`] with the same training arguments on the train rows that have the modality, evaluated
    on such rows of the eval split (with `evaluate`), and saved with its processor and `mmfnet_results.json` in
    `{output_dir}/_unimodal-{modality}`, which is kept. Returns the trained encoder modules (the best checkpoint's,
    with `load_best_model_at_end`) and, for the seed CNNs, that folder as their `encoder_names`; a pretrained
    encoder keeps its Hub id or folder as its name.
    """
    columns = {"vision": data_args.image_column, "text": data_args.text_column, "audio": data_args.audio_column}
    chosen = unimodal_first_modalities(model_args)
    split_names = [data_args.train_split, *([data_args.eval_split] if evaluate else [])]
    stage_data: dict[str, dict[str, Dataset]] = {}
    for modality in chosen:  # every branch's rows checked before any training
        stage_data[modality] = {name: rows_with(data[name], columns[modality]) for name in split_names}
        for name, rows in stage_data[modality].items():
            if len(rows) == 0:
                raise ValueError(
                    f"--unimodal_first: no row of split {name!r} has {modality} (column {columns[modality]!r}), "
                    f"so the {modality} encoder cannot be trained or evaluated alone."
                )
    encoders: dict[str, PreTrainedModel] = {}
    names: dict[str, str] = {}
    for index, modality in enumerate(chosen, start=1):
        folder = Path(training_args.output_dir) / f"_unimodal-{modality}"
        train_rows = stage_data[modality][data_args.train_split]
        logger.info(
            "unimodal-first: training the %s encoder alone (%d/%d) on the %d of %d %r rows that have it → %s",
            modality,
            index,
            len(chosen),
            len(train_rows),
            len(data[data_args.train_split]),
            data_args.train_split,
            folder,
        )
        alone = {f"{m}_encoder": "none" for m in MODALITIES if m != modality}
        single_args = dataclasses.replace(
            model_args, **alone, **{f"freeze_{modality}": False}, modality_dropout=0.0, aux_unimodal_weight=0.0,
            contrastive_weight=0.0, modality_balance="none", cache_embeddings=False, unimodal_first=False,
        )  # fmt: skip
        stage_args = dataclasses.replace(
            training_args, output_dir=str(folder), push_to_hub=False, resume_from_checkpoint=None
        )
        set_seed(training_args.seed)
        processor = build_processor(
            single_args, shapes["image_channels"], shapes["image_size"], shapes["sampling_rate"]
        )
        model = build_model(single_args, labels, shapes["image_channels"])
        eval_rows = stage_data[modality].get(data_args.eval_split)
        trainer = MMFNetTrainer(
            model=model,
            args=stage_args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            data_collator=build_collator(processor, data_args, (modality,)),
            processing_class=processor,
            compute_metrics=compute_metrics,
        )
        metrics = train_and_save(trainer)
        if eval_rows is not None:
            metrics.update(trainer.evaluate(eval_rows))
            logger.info(
                "unimodal-first: the %s encoder alone scores eval_accuracy %.4f (eval_macro_f1 %.4f) on the %d %r "
                "rows that have it",
                modality,
                metrics["eval_accuracy"],
                metrics["eval_macro_f1"],
                len(eval_rows),
                data_args.eval_split,
            )
        else:
            logger.info("unimodal-first: no eval split (--eval_strategy no): the %s encoder alone is not scored.",
                        modality)  # fmt: skip
        if trainer.is_world_process_zero():
            save_results(folder, metrics)
        encoders[modality] = trainer.model.mmfnet.get_submodule(f"{modality}_model")
        if getattr(model_args, f"{modality}_encoder").lower() == "conv":
            names[modality] = str(folder)
    return encoders, names


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, MMFNetTrainingArguments]:
    """The three argument dataclasses from a command line (default: `sys.argv[1:]`) or a single `.json` file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, MMFNetTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> int:
    """`examples/train.py`'s entry point: parse `argv`, run, return the process exit status (0: done).

    Arguments or data that do not fit (a `ValueError` / `OSError` from the checks, which say what to change, or a
    `StrictDataclassError` from the config's own validation) end with that message and status 2, as argparse does,
    not with a traceback; `--log_level debug` logs the traceback too. Under `torchrun` the process group is
    destroyed before returning (left to interpreter exit, gloo's threads could abort a rank after a finished run).
    """
    try:
        run(*parse_args(argv))
    except (ValueError, OSError, StrictDataclassError) as error:
        logger.debug("traceback of the error below", exc_info=True)
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def run(
    model_args: ModelArguments, data_args: DataArguments, training_args: MMFNetTrainingArguments
) -> dict[str, float]:
    """Check the data, build (or load) the model, train, evaluate; the metrics, also in `mmfnet_results.json`.

    Raises a ValueError, before anything is built, on a run with nothing to do or data that does not fit.
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if training_args.get_process_log_level() < logging.INFO:  # `--log_level debug`
        logger.setLevel(training_args.get_process_log_level())
    training_args.remove_unused_columns = False  # the collator reads the raw image / text / audio columns
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    logger.info("process %d of %d", training_args.process_index, training_args.world_size)
    set_seed(training_args.seed)
    do_train, do_eval = training_args.do_train, training_args.do_eval
    if not do_train and not do_eval:
        raise ValueError(
            "nothing to do: --do_train false trains nothing; pass --do_eval true (with --model_name_or_path) to "
            "only evaluate a trained model, or leave --do_train at its default (true) to train."
        )
    if not do_train and model_args.model_name_or_path is None:
        raise ValueError("--do_train false evaluates a trained model: give it with --model_name_or_path.")

    evaluates_during_training = do_train and strategy_name(training_args.eval_strategy) != "no"
    data = load_data(data_args, seed=training_args.seed, carve_validation=evaluates_during_training)
    test_splits = [s for s in data_args.test_splits.split(",") if s]
    if do_train:
        if data_args.train_split not in data:
            raise ValueError(
                f"split {data_args.train_split!r} not in the dataset (it has {list(data)}): choose the training "
                "split with --train_split, or only evaluate a trained model with --do_train false --do_eval true "
                "--model_name_or_path DIR."
            )
        if len(data[data_args.train_split]) == 0:
            raise ValueError(f"split {data_args.train_split!r} is empty: nothing to train on.")
    splits = [data_args.train_split] if do_train else []
    splits += [data_args.eval_split] if evaluates_during_training else []
    splits = list(dict.fromkeys([*splits, *test_splits]))

    if model_args.model_name_or_path is not None:
        config = MMFNetForClassification.config_class.from_pretrained(model_args.model_name_or_path)
        modalities = config.modalities
    else:
        modalities = model_args.encoder_modalities
    labels = check_data(data, data_args, modalities, splits)
    shapes = data_shapes(data, data_args, modalities, splits)

    if not do_train:  # evaluation alone: no evaluation loop during training, no best checkpoint to pick
        training_args.eval_strategy, training_args.load_best_model_at_end = IntervalStrategy.NO, False
    if model_args.model_name_or_path is not None:
        model, processor = load_trained(model_args, labels)
        check_sampling_rate(processor, shapes["sampling_rate"])
    else:
        processor = build_processor(
            model_args, shapes["image_channels"], shapes["image_size"], shapes["sampling_rate"]
        )
        check_sampling_rate(processor, shapes["sampling_rate"])
        trained: dict[str, PreTrainedModel] = {}
        names: dict[str, str] = {}
        if model_args.unimodal_first:
            trained, names = train_unimodal_first(
                model_args, data_args, training_args, data, labels, shapes, evaluates_during_training
            )
            set_seed(training_args.seed)  # the fused model's fresh parts as without the unimodal stage
            logger.info(
                "unimodal-first: fused model built from the trained %s encoder(s), fusion and head fresh; training "
                "it end to end → %s",
                ", ".join(trained),
                training_args.output_dir,
            )
        model = build_model(model_args, labels, shapes["image_channels"], trained, names)
    if model_args.lora_modalities:
        model = add_lora(model, model_args.lora_modalities.split(","), model_args.lora_rank)
    collator = build_collator(processor, data_args, modalities)
    datasets_by_split = {name: data[name] for name in splits}
    train_collator: Any = collator
    if model_args.cache_embeddings:
        cached = cacheable_modalities(model)
        settings = model.config
        augmented = {
            "vision": settings.augment_image_shift > 0 or settings.augment_image_flip > 0,
            "audio": settings.augment_time_mask > 0 or settings.augment_frequency_mask > 0,
        }
        clash = [m for m in cached if augmented.get(m)]
        if clash:
            raise ValueError(
                f"--cache_embeddings would cache {clash}, whose inputs are augmented in training: cached features "
                "cannot be augmented. Turn the augmentation off, or let that encoder train."
            )
        logger.info("caching the embeddings of %s; training encoders: %s", cached,
                    [m for m in modalities if m not in cached])  # fmt: skip
        datasets_by_split = {
            name: cache_modality_embeddings(model, ds, collator, keep_columns=(data_args.label_column,))
            for name, ds in datasets_by_split.items()
        }
        left = len(cached) < len(modalities)
        train_collator = MMFNetEmbeddingCollator(
            label_column=data_args.label_column, collator=collator if left else None
        )

    trainer = MMFNetTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets_by_split.get(data_args.train_split) if do_train else None,
        eval_dataset=datasets_by_split.get(data_args.eval_split) if evaluates_during_training else None,
        data_collator=train_collator,
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    metrics: dict[str, float] = {}
    if do_train:
        resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        metrics.update(train_and_save(trainer, resume))
    drop = data_args.report_missing_modalities and not model_args.cache_embeddings
    metrics.update(
        evaluate_all(trainer, {s: datasets_by_split[s] for s in test_splits}, train_collator, modalities, drop)
    )
    if trainer.is_world_process_zero():
        save_results(training_args.output_dir, metrics)
    if training_args.push_to_hub:
        # Trainer.push_to_hub saves the model and the processor (`processing_class`) to output_dir, writes MMFNet's
        # card (the package wraps `Trainer.create_model_card`: this run's metrics, the repo's card updated), and
        # uploads the folder in one commit.
        trainer.push_to_hub(commit_message="MMFNet fine-tuned with examples/train.py", dataset=[data_args.dataset])
    return metrics


__all__ = [
    "DataArguments",
    "MMFNetTrainer",
    "MMFNetTrainingArguments",
    "ModelArguments",
    "main",
    "parse_args",
    "run",
    "train_unimodal_first",
]
