"""Model cards for MMFNet checkpoints, rendered from the `model_card.md` template shipped with the package.

`generate_model_card(folder_or_model, metrics)` returns the card (YAML metadata + Markdown); `write_model_card`
writes it as `README.md`. Metrics come from the run (`mmfnet_results.json`, or the Trainer's `all_results.json`)
or from the caller, and only those are reported: the card never shows a number the run did not produce.

Not part of the code shipped with checkpoints (no `*_mmfnet.py` model file imports this module).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import string
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData
from transformers import PreTrainedConfig, PreTrainedModel

from .configuration_mmfnet import MODALITIES, MMFNetConfig, MMFNetConvConfig
from .saving_mmfnet import atomic_write_text

TEMPLATE_NAME = "model_card.md"
MMFNET_TAGS: tuple[str, ...] = ("mmfnet", "multimodal", "multimodal-fusion")
RESULTS_FILES: tuple[str, ...] = ("mmfnet_results.json", "all_results.json")
"""Where a run's metrics are read from, first found wins: `examples/train.py`'s, then the Trainer's."""

EVAL_METRICS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    # key in the results → (model-index metric type, display name, metric args)
    "accuracy": ("accuracy", "accuracy", None),
    "macro_f1": ("f1", "macro F1", {"average": "macro"}),
    "micro_f1": ("f1", "micro F1", {"average": "micro"}),
    "weighted_f1": ("f1", "weighted F1", {"average": "weighted"}),
    "f1": ("f1", "F1", None),
    "precision": ("precision", "precision", None),
    "recall": ("recall", "recall", None),
    "roc_auc": ("roc_auc", "ROC AUC", None),
    "mse": ("mse", "MSE", None),
    "rmse": ("rmse", "RMSE", None),
    "mae": ("mae", "MAE", None),
    "r2": ("r_squared", "R²", None),
    "loss": ("loss", "loss", None),
}
_EVAL_KEY = re.compile(
    rf"^(?:(?P<split>.+?)_)??(?:without_(?P<missing>{'|'.join(MODALITIES)})_)?"
    rf"(?P<metric>{'|'.join(sorted(EVAL_METRICS, key=len, reverse=True))})$"
)
TRAINING_METRICS: dict[str, str] = {
    "train_loss": "training loss (mean over the run)",
    "train_epoch": "epochs",
    "epoch": "epochs",
    "train_runtime": "training time (s)",
    "train_samples_per_second": "training samples / s",
    "inference_samples_per_second": "inference samples / s (processor + model, batch 64)",
    "inference_latency_ms": "inference latency of one sample at batch 1 (ms, processor + model)",
}
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")

FUSIONS: dict[str, tuple[str, str]] = {
    # fusion_type → (what it computes, how it treats an absent modality)
    "concat": (
        "an MLP over the concatenated modality embeddings (the seed design's fusion network)",
        "the MLP reads that embedding in the absent modality's slot",
    ),
    "gated": (
        "a gated multimodal unit, per-feature softmax gates over the modalities",
        "the gates are computed over the present modalities only, so an absent one gets zero weight",
    ),
    "attention": (
        "an attention-weighted sum of the modality embeddings",
        "the attention weights cover the present modalities only",
    ),
    "tensor": (
        "tensor fusion, an MLP over the outer product of the (reduced) modality embeddings",
        "an absent modality enters the outer product as `[1; 0]`, keeping exactly the interactions among the "
        "present ones",
    ),
    "low_rank": (
        "low-rank multimodal fusion, a rank-r factorisation of tensor fusion",
        "an absent modality enters each factor as `[1; 0]`, keeping the interactions among the present ones",
    ),
    "transformer": (
        "a small transformer over one token per modality plus a learned CLS token",
        "absent modalities are masked out of the attention, so they cannot influence the fused embedding",
    ),
}
_INPUTS: dict[str, tuple[str, str | None]] = {
    # modality → (processor argument, what the user supplies)
    "vision": ("images=[image]", "image: a PIL image"),
    "text": ('text=["some text"]', None),
    "audio": ("audio=[waveform], sampling_rate=processor.feature_extractor.sampling_rate", "waveform: 1-D floats"),
}


def default_template() -> str:
    """The packaged card template (identical to `model_card.md` at the top of the repository)."""
    return resources.files(__package__).joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def read_results(folder: str | os.PathLike) -> dict[str, float]:
    """The numeric metrics saved by the run in `folder` (`mmfnet_results.json` or `all_results.json`), or `{}`."""
    for name in RESULTS_FILES:
        path = Path(folder) / name
        if path.is_file():
            return _numeric(json.loads(path.read_text()))
    return {}


def generate_model_card(
    model_or_folder: PreTrainedModel | PreTrainedConfig | str | os.PathLike,
    metrics: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    base_models: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
    license: str | None = "apache-2.0",
    tags: Iterable[str] = (),
    template: str | os.PathLike | None = None,
) -> str:
    r"""Render the model card (README.md text) of an MMFNet checkpoint.

    Args:
        model_or_folder: a saved checkpoint folder, an MMFNet model (a PEFT wrapper is unwrapped) or its config.
        metrics: the run's metrics (`{"test_accuracy": 0.91, "test_without_audio_accuracy": 0.74, ...}`, the keys
            `examples/train.py` / the Trainer write). Default: read from the folder's results file; none for a
            model or config. Only metrics present are reported, in the YAML `model-index` and in a table.
        repo_id: the Hub repo, used in the usage snippets and as the model name.
        base_models: Hub ids of the pretrained encoders; default: each sub-config's `_name_or_path` that is a
            Hub id (local paths are left out).
        datasets: dataset Hub ids or local paths; Hub ids go to the YAML `datasets`, the first names the
            evaluation data.
        license: the YAML `license` (None leaves it out).
        tags: extra YAML tags.
        template: a template file (Python `string.Template`, `$name` placeholders); default: the packaged one.
    """
    folder = Path(model_or_folder) if isinstance(model_or_folder, (str, os.PathLike)) else None
    config, num_parameters, has_processor = _describe(model_or_folder, folder)
    if metrics is None:
        metrics = read_results(folder) if folder is not None else {}
    metrics = _numeric(metrics)
    modalities = config.modalities
    model_name = (repo_id or (folder.resolve().name if folder else "mmfnet")).split("/")[-1]
    task, head_description, auto_class, prediction = _head(config)
    base_models = _hub_ids(
        base_models
        if base_models is not None
        else (getattr(getattr(config, f"{m}_config"), "_name_or_path", "") for m in modalities)
    )
    datasets = [str(d) for d in datasets or ()]
    eval_results, rows = _eval_results(metrics, task, modalities, datasets[0] if datasets else None)

    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=list(dict.fromkeys([*MMFNET_TAGS, f"fusion-{config.fusion_type}", *modalities, "custom_code", *tags])),
        base_model=base_models or None,
        datasets=_hub_ids(datasets) or None,
        metrics=list(dict.fromkeys(r.metric_type for r in eval_results)) or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    fusion_description, missing_fusion = FUSIONS[config.fusion_type]
    supplied = [_INPUTS[m][1] for m in modalities if _INPUTS[m][1]]
    values = {
        "card_data": card_data.to_yaml(),
        "model_name": model_name,
        "repo_id": repo_id or (str(folder) if folder else "path/to/checkpoint"),
        "task": task,
        "modalities_text": _join([f"**{m}**" for m in modalities]),
        "modality_columns": ", ".join(f"`{m}`" for m in modalities),
        "num_modalities": str(len(modalities)),
        "fusion_type": config.fusion_type,
        "fusion_description": fusion_description,
        "missing_fusion": missing_fusion,
        "fusion_dim": str(config.fusion_dim),
        "encoder_table": "\n".join(_encoder_row(config, m) for m in modalities),
        "head_description": head_description,
        "num_parameters": f"{num_parameters:,}" if num_parameters else "not recorded",
        "datasets_text": ", ".join(f"`{_dataset_name(d)}`" for d in datasets) or "not recorded",
        "modality_dropout_text": (
            f"In training each present modality was hidden with probability {config.modality_dropout:g} "
            "(`modality_dropout`), so it practised working without it."
            if config.modality_dropout > 0
            else "Its config sets `modality_dropout=0`: it did not practise without a modality in training."
        ),
        "results": _results_table(rows),
        "training": _training(metrics),
        "auto_class": auto_class,
        "inputs_comment": "# " + "; ".join([*supplied, "None in a list marks that sample's modality missing"]),
        "processor_call": ", ".join(_INPUTS[m][0] for m in modalities),
        "prediction": prediction,
        "limitations": _limitations(config, rows, has_processor),
    }
    text = Path(template).read_text(encoding="utf-8") if template is not None else default_template()
    try:
        return string.Template(text).substitute(values)
    except KeyError as error:
        raise ValueError(
            f"The card template uses an unknown placeholder ${error.args[0]}; available: {sorted(values)}."
        ) from error


def write_model_card(
    folder: str | os.PathLike, model: PreTrainedModel | PreTrainedConfig | None = None, **kwargs: Any
) -> Path:
    """Write `generate_model_card(model or folder, **kwargs)` to `folder/README.md` (metrics from the folder's
    results file unless given) and return its path."""
    if model is not None and kwargs.get("metrics") is None:
        kwargs["metrics"] = read_results(folder)
    path = Path(folder) / "README.md"
    atomic_write_text(path, generate_model_card(model if model is not None else folder, **kwargs))
    return path


# ------------------------------------------------------------------------------------------------------ helpers
def _describe(
    source: PreTrainedModel | PreTrainedConfig | str | os.PathLike, folder: Path | None
) -> tuple[MMFNetConfig, int | None, bool | None]:
    """The config, the parameter count (None when unknown) and whether a processor was saved (None: unknown)."""
    if folder is not None:
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{str(folder)!r} has no config.json: not a saved MMFNet checkpoint folder.")
        config = MMFNetConfig.from_pretrained(folder)
        return config, _count_saved_parameters(folder), (folder / "processor_config.json").is_file()
    if hasattr(source, "get_base_model"):  # a PEFT wrapper
        source = source.get_base_model()
    if isinstance(source, PreTrainedModel):
        return _check_config(source.config), sum(p.numel() for p in source.parameters()), None
    return _check_config(source), None, None


def _check_config(config: Any) -> MMFNetConfig:
    if getattr(config, "model_type", None) != MMFNetConfig.model_type:
        raise TypeError(f"Expected an MMFNet model, config or folder, got {type(config).__name__}.")
    return config


def _count_saved_parameters(folder: Path) -> int | None:
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    total = 0
    for name in files:
        with safe_open(folder / name, framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    return total


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers only (bools, strings, NaN and nested values are not metrics)."""
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    }


def _hub_ids(names: Iterable[str]) -> list[str]:
    """The names that are Hub repo ids (`org/name` or `name`), not local paths; first occurrence order."""
    ids = []
    for name in names:
        name = str(name or "")
        if _HUB_ID.match(name) and not os.path.exists(name) and name not in ids:
            ids.append(name)
    return ids


def _dataset_name(dataset: str) -> str:
    return dataset if _hub_ids([dataset]) else Path(dataset).name


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _head(config: MMFNetConfig) -> tuple[str, str, str, str]:
    """(task phrase, head description, Auto class, prediction snippet)."""
    architectures = config.architectures or ["MMFNetForClassification"]
    if not any("ForClassification" in name for name in architectures):
        fused = "fused = model(**inputs).fused_embeds  # (batch, fusion_dim)"
        return "multimodal embeddings", "none (the fused embedding)", "AutoModel", fused
    num_labels = config.num_labels
    problem = config.problem_type or ("regression" if num_labels == 1 else None)
    labels = [str(config.id2label[i]) for i in sorted(config.id2label)]
    named = labels and not all(re.fullmatch(r"LABEL_\d+", label) for label in labels)
    shown = ", ".join(f"`{label}`" for label in labels[:20]) + (", …" if len(labels) > 20 else "")
    label_text = f" ({shown})" if named else ""
    if problem == "regression":
        return "regression", f"linear, {num_labels} output(s), MSE loss", *_predict("regression")
    if problem == "multi_label_classification":
        description = f"linear, {num_labels} independent labels{label_text}, binary cross-entropy"
        return "multi-label classification", description, *_predict("multi")
    return "classification", f"linear, {num_labels} classes{label_text}, cross-entropy", *_predict("single")


def _predict(kind: str) -> tuple[str, str]:
    if kind == "regression":
        return "AutoModelForSequenceClassification", "predictions = model(**inputs).logits"
    if kind == "multi":
        return "AutoModelForSequenceClassification", "probabilities = model(**inputs).logits.sigmoid()"
    return (
        "AutoModelForSequenceClassification",
        "predicted = model(**inputs).logits.argmax(-1)\nprint([model.config.id2label[int(i)] for i in predicted])",
    )


def _encoder_row(config: MMFNetConfig, modality: str) -> str:
    sub_config = getattr(config, f"{modality}_config")
    if sub_config.model_type == MMFNetConvConfig.model_type:
        sizes = "-".join(str(s) for s in sub_config.hidden_sizes)
        encoder = f"seed CNN (`mmfnet_conv`, channels {sizes}), trained from scratch"
    else:
        source = _hub_ids([getattr(sub_config, "_name_or_path", "")])
        encoder = f"`{source[0]}` (`{sub_config.model_type}`)" if source else f"`{sub_config.model_type}`"
    frozen = "yes" if getattr(config, f"freeze_{modality}") else "no"
    return f"| {modality} | {encoder} | {getattr(config, f'{modality}_pooling')} | {frozen} |"


def _eval_results(
    metrics: dict[str, float], task: str, modalities: tuple[str, ...], dataset: str | None
) -> tuple[list[EvalResult], list[tuple[str, str, str, float]]]:
    """Model-index entries and table rows `(split, condition, metric, value)` for the evaluation metrics."""
    single = {"vision": "image-classification", "text": "text-classification", "audio": "audio-classification"}
    task_type = single[modalities[0]] if len(modalities) == 1 and "classification" in task else "other"
    dataset_name = _dataset_name(dataset) if dataset else "evaluation data"
    dataset_type = (_hub_ids([dataset]) or [dataset_name])[0] if dataset else "custom"
    results, rows = [], []
    for key, value in metrics.items():
        match = _EVAL_KEY.match(key)
        split = match["split"] if match else None
        if match is None or (split is not None and (split == "train" or split.startswith("train_"))):
            continue
        metric_type, metric_name, metric_args = EVAL_METRICS[match["metric"]]
        condition = f"without {match['missing']}" if match["missing"] else "all modalities"
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=f"Multimodal {task} ({', '.join(modalities)})",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split=split,
                metric_type=metric_type,
                metric_value=value,
                metric_name=f"{split + ' ' if split else ''}{metric_name} ({condition})",
                metric_args=metric_args,
            )
        )
        rows.append((split or "-", condition, metric_name, value))
    return results, rows


def _results_table(rows: list[tuple[str, str, str, float]]) -> str:
    if not rows:
        return "No evaluation results were recorded with this checkpoint, so none are reported here."
    lines = ["| Split | Modalities | Metric | Value |", "| --- | --- | --- | --- |"]
    lines += [f"| {split} | {condition} | {name} | {value:.4g} |" for split, condition, name, value in rows]
    without = any(condition != "all modalities" for _, condition, _, _ in rows)
    note = (
        '\n\n"without *m*" rows: the same model evaluated with modality *m* removed from the test samples.'
        if without
        else ""
    )
    return "\n".join(lines) + note


def _training(metrics: dict[str, float]) -> str:
    shown: dict[str, float] = {}
    for key, label in TRAINING_METRICS.items():  # `train_epoch` comes before the evaluation's `epoch`
        if key in metrics:
            shown.setdefault(label, metrics[key])
    lines = [f"- {label}: {value:.4g}" for label, value in shown.items()]
    return "\n".join(lines) or "No training or cost metrics were recorded with this checkpoint."


def _limitations(config: MMFNetConfig, rows: list[tuple[str, str, str, float]], has_processor: bool | None) -> str:
    items = []
    if rows:
        items.append(
            "Evaluated only on the data and splits listed under Evaluation; behaviour on other data is unknown."
        )
    else:
        items.append("No evaluation is recorded for this checkpoint: measure it on your own data before use.")
    conv = [m for m in config.modalities if getattr(config, f"{m}_config").model_type == MMFNetConvConfig.model_type]
    if conv:
        items.append(
            f"The {_join(conv)} encoder{'s are' if len(conv) > 1 else ' is'} the small seed CNN trained from "
            "scratch: it only knows inputs like its training data (size, channels, spectrogram settings), which "
            "the saved processor reproduces."
        )
    if len(config.modalities) > 1 and not any(condition != "all modalities" for _, condition, _, _ in rows):
        items.append("Accuracy with a modality missing was not measured for this checkpoint.")
    if any(getattr(config, f"{m}_config").model_type != MMFNetConvConfig.model_type for m in config.modalities):
        items.append("The pretrained encoders' own limitations and biases carry over.")
    if has_processor is False:
        items.append("No processor was saved with this checkpoint: build the model inputs yourself.")
    items.append("No bias or fairness evaluation is reported here.")
    items.append(
        "Loading without the package runs this repo's Python files (`trust_remote_code=True`): review them and "
        "pin a revision."
    )
    return "\n".join(f"- {item}" for item in items)


__all__ = ["default_template", "generate_model_card", "read_results", "write_model_card"]
