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
import sys
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
    pipeline_tag: str | None = None,
    has_processor: bool | None = None,
    template: str | os.PathLike | None = None,
    known_parameters: int | None = None,
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
        pipeline_tag: the Hub task (YAML `pipeline_tag`); default: the classification task of the first configured
            modality (`image-`, `text-` or `audio-classification`), or feature extraction for a model without head.
        has_processor: whether a processor is published with the model; default: whether the folder has one
            (unknown for a model or config).
        template: a template file (Python `string.Template`, `$name` placeholders); default: the packaged one.
        known_parameters: the parameter count to show when the source cannot tell (a config, or a folder without
            weights).
    """
    folder = Path(model_or_folder) if isinstance(model_or_folder, (str, os.PathLike)) else None
    config, num_parameters, has_processor_known = _describe(model_or_folder, folder)
    num_parameters = num_parameters or known_parameters
    if has_processor is not None:
        has_processor_known = has_processor
    if metrics is None:
        metrics = read_results(folder or _loaded_from(model_or_folder) or "")
    metrics = _numeric(metrics)
    modalities = config.modalities
    model_name = (repo_id or (folder.resolve().name if folder else "mmfnet")).split("/")[-1]
    architectures = _architectures(model_or_folder, config)
    task, head_description, auto_class, prediction = _head(config, architectures)
    base_models = _hub_ids(
        base_models if base_models is not None else (_encoder_source(config, m) for m in modalities)
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
        pipeline_tag=pipeline_tag or _pipeline_tag(config, architectures),
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
        "limitations": _limitations(config, rows, has_processor_known),
        "intended_use": _intended_use(config, task, datasets),
        "pipeline_usage": _pipeline_usage(
            config, architectures, repo_id or (str(folder) if folder else "path/to/checkpoint")
        ),
        "card_state": _encode_state(
            {"metrics": metrics, "datasets": datasets, "repo_id": repo_id, "num_parameters": num_parameters}
        ),
    }
    text = Path(template).read_text(encoding="utf-8") if template is not None else default_template()
    try:
        return string.Template(text).substitute(values)
    except KeyError as error:
        raise ValueError(
            f"The card template uses an unknown placeholder ${error.args[0]}; available: {sorted(values)}."
        ) from error


def write_model_card(
    folder: str | os.PathLike,
    model: PreTrainedModel | PreTrainedConfig | None = None,
    *,
    replace: bool = False,
    **kwargs: Any,
) -> Path:
    """Write MMFNet's card of `model` (default: the checkpoint in `folder`) to `folder/README.md` and return its
    path. Metrics come from the folder's results file unless given; an existing README.md is updated (see
    `update_model_card`) unless `replace`. `kwargs` go to `generate_model_card`."""
    if model is not None and kwargs.get("metrics") is None:
        kwargs["metrics"] = read_results(folder) or None
    path = Path(folder) / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    text = refresh_model_card(model if model is not None else folder, existing, replace=replace, **kwargs)
    atomic_write_text(path, text)
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


def _architectures(source: Any, config: MMFNetConfig) -> list[str]:
    """The model class names: the model's own class, else the saved `architectures` (default: the head)."""
    if hasattr(source, "get_base_model"):
        source = source.get_base_model()
    if isinstance(source, PreTrainedModel):
        return [type(source).__name__]
    return list(config.architectures or ["MMFNetForSequenceClassification"])


def _head(config: MMFNetConfig, architectures: list[str]) -> tuple[str, str, str, str]:
    """(task phrase, head description, Auto class, prediction snippet)."""
    if not _has_head(architectures):
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


def _encoder_source(config: MMFNetConfig, modality: str) -> str:
    """Where the encoder came from: `config.{modality}_encoder_name`, else the sub-config's `_name_or_path`."""
    recorded = getattr(config, f"{modality}_encoder_name", None)
    return str(recorded or getattr(getattr(config, f"{modality}_config"), "_name_or_path", "") or "")


def _encoder_row(config: MMFNetConfig, modality: str) -> str:
    sub_config = getattr(config, f"{modality}_config")
    if sub_config.model_type == MMFNetConvConfig.model_type:
        sizes = "-".join(str(s) for s in sub_config.hidden_sizes)
        encoder = f"seed CNN (`mmfnet_conv`, channels {sizes}), trained from scratch"
    else:
        name = _encoder_source(config, modality)
        source = _hub_ids([name])
        if source:
            encoder = f"`{source[0]}` (`{sub_config.model_type}`)"
        elif name:
            encoder = f"`{sub_config.model_type}` from a local folder `{Path(name).name}`"
        else:
            encoder = f"`{sub_config.model_type}`"
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


def _loaded_from(source: Any) -> str | None:
    """The local folder a model or config was loaded from (its results file holds its metrics), if any."""
    if hasattr(source, "get_base_model"):
        source = source.get_base_model()
    config = getattr(source, "config", source)
    name = str(getattr(config, "_name_or_path", "") or "")
    return name if name and os.path.isdir(name) else None


def _has_head(architectures: list[str]) -> bool:
    return any("ForClassification" in name or "ForSequenceClassification" in name for name in architectures)


def _pipeline_tag(config: MMFNetConfig, architectures: list[str]) -> str:
    first = config.modalities[0]
    if not _has_head(architectures):
        return "image-feature-extraction" if config.modalities == ("vision",) else "feature-extraction"
    return {"vision": "image-classification", "text": "text-classification", "audio": "audio-classification"}[first]


_ROW_EXAMPLES: dict[str, str] = {
    "vision": '"image": "photo.png"',
    "text": '"text": "some text"',
    "audio": '"audio": "clip.wav"',
}


def _pipeline_usage(config: MMFNetConfig, architectures: list[str], repo_id: str) -> str:
    if not _has_head(architectures):
        return ""
    row = "{" + ", ".join(_ROW_EXAMPLES[m] for m in config.modalities) + "}"
    return (
        "With the pipeline (each row holds any subset of the modalities: an image as a PIL image or a local path, "
        "text, audio as an array with its `sampling_rate` or a local WAV path):\n\n"
        "```python\nfrom transformers import pipeline\n\n"
        f'classifier = pipeline(model="{repo_id}", trust_remote_code=True)\n'
        f"print(classifier({row}, top_k=3))\n```\n\n"
        f'With the package installed, `pipeline("multimodal-classification", model="{repo_id}")` runs the same '
        "pipeline without remote code.\n"
    )


def _intended_use(config: MMFNetConfig, task: str, datasets: list[str]) -> str:
    modalities = _join(list(config.modalities))
    data = ", ".join(f"`{_dataset_name(d)}`" for d in datasets)
    items = [
        f"{task[0].upper() + task[1:]} of samples that carry any subset of {modalities}"
        + (f", drawn from data like its training data ({data})." if data else ".")
    ]
    items.append(
        "Inputs prepared the way the saved processor prepares them (image size and channels, audio at the feature "
        "extractor's sampling rate); the pipeline reads files and resamples audio when scipy is installed."
    )
    items.append(
        "Not intended for decisions about people, or for data its evaluation does not represent, without your "
        "own evaluation."
    )
    return "\n".join(f"- {item}" for item in items)


def _encode_state(state: dict[str, Any]) -> str:
    """The card's inputs as JSON in its start marker (an HTML comment), so a later update can reuse them."""
    return json.dumps(state, sort_keys=True).replace("--", "-\\u002d")


_STATE = re.compile(r"<!-- mmfnet-card (\{.*?\}) -->")
CARD_END = "<!-- /mmfnet-card -->"
GENERIC_CARD_MARKERS: tuple[str, ...] = (
    "This model card has been automatically generated",  # PushToHubMixin.push_to_hub on a repo without a card
    "This model card has been generated automatically according to the information the Trainer",  # Trainer
    "<!-- Provide a quick summary of what the model is/does. -->",  # huggingface_hub's empty template
)
OWNED_KEYS: tuple[str, ...] = ("library_name", "pipeline_tag", "base_model", "model-index", "model_name", "metrics")
"""YAML keys MMFNet's card sets (a new value replaces the old); `tags` and `datasets` are merged; every other key
an existing card has (license, language, ...) is kept."""
MERGED_KEYS: tuple[str, ...] = ("tags", "datasets")


def card_state(card: str | None) -> dict[str, Any]:
    """What an MMFNet card was generated from (`metrics`, `datasets`, `repo_id`, `num_parameters`), or `{}`."""
    match = _STATE.search(card or "")
    return json.loads(match.group(1)) if match else {}


def is_generic_card(card: str | None) -> bool:
    """True for no card, or the placeholder cards transformers and huggingface_hub write."""
    return not (card or "").strip() or any(marker in card for marker in GENERIC_CARD_MARKERS)


def update_model_card(existing: str | None, new: str, *, replace: bool = False) -> str:
    """Merge a freshly generated MMFNet card `new` into the `existing` card, unless `replace` (or the existing card
    is a placeholder, see `is_generic_card`).

    Text: the part of an MMFNet card between its markers is replaced, the rest of the existing text kept; a card
    without the markers (written by hand) keeps its text, with the MMFNet section appended. Metadata: see
    `OWNED_KEYS` and `MERGED_KEYS`.
    """
    if replace or is_generic_card(existing):
        return new
    from huggingface_hub import ModelCard

    old_card, new_card = ModelCard(existing), ModelCard(new)
    old_data, new_data = old_card.data.to_dict(), new_card.data.to_dict()
    merged = dict(old_data)
    for key, value in new_data.items():
        if key in OWNED_KEYS:
            merged[key] = value if value is not None else old_data.get(key)
        elif key in MERGED_KEYS:
            old_values, new_values = old_data.get(key) or [], value or []
            old_values = [old_values] if isinstance(old_values, str) else old_values
            merged[key] = list(dict.fromkeys([*old_values, *new_values])) or None
        elif old_data.get(key) is None:
            merged[key] = value
    # one key order whatever the input's (sorted, `model-index` last as huggingface_hub writes it): updates are stable
    merged = {k: merged[k] for k in sorted(merged, key=lambda k: (k == "model-index", k)) if merged[k] is not None}
    start = new_card.text.index("<!-- mmfnet-card ")
    section = new_card.text[start:]
    text = old_card.text
    match = _STATE.search(text)
    if match and CARD_END in text[match.start() :]:
        end = text.index(CARD_END, match.start()) + len(CARD_END)
        body = text[: match.start()] + section.rstrip("\n") + text[end:]
    else:
        body = text.rstrip("\n") + "\n\n" + section
    import yaml

    metadata = yaml.dump(merged, sort_keys=False, allow_unicode=True)
    return f"---\n{metadata}---\n{body if body.startswith(chr(10)) else chr(10) + body}"


def refresh_model_card(
    source: PreTrainedModel | PreTrainedConfig | str | os.PathLike,
    existing: str | None = None,
    *,
    replace: bool = False,
    metrics: Mapping[str, Any] | None = None,
    datasets: Iterable[str] | None = None,
    repo_id: str | None = None,
    **kwargs: Any,
) -> str:
    """MMFNet's card for `source`, merged into `existing` (see `update_model_card`).

    Unknown inputs come, in order, from the run (the results file of the folder `source` is or was loaded from),
    then from what the existing MMFNet card was generated with: re-publishing keeps its metrics and datasets.
    """
    state = {} if replace else card_state(existing)
    if metrics is None:
        folder = source if isinstance(source, (str, os.PathLike)) else _loaded_from(source)
        metrics = (read_results(folder) if folder else {}) or state.get("metrics") or {}
    if datasets is None:
        datasets = state.get("datasets")
    kwargs.setdefault("known_parameters", state.get("num_parameters"))
    new = generate_model_card(source, metrics, datasets=datasets, repo_id=repo_id or state.get("repo_id"), **kwargs)
    return update_model_card(existing, new, replace=replace)


def hub_card(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> str | None:
    """The README.md of a Hub repo, or None when the repo or the file does not exist."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = hf_hub_download(repo_id, "README.md", revision=revision, token=token)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return Path(path).read_text(encoding="utf-8")


class ModelCardHook:
    """Writes MMFNet's card wherever MMFNet models and processors are saved or pushed.

    The `mmfnet` package installs one on `MMFNetPreTrainedModel` and `MMFNetProcessor` (`model_card_hook`) when
    imported; the shipped model code calls it from `save_pretrained` and from the upload step of `push_to_hub`.
    """

    def after_save(self, owner: Any, folder: str | os.PathLike) -> None:
        """`save_pretrained(folder)` finished: write (or update) `folder/README.md`."""
        wrap_trainer()
        folder = Path(folder)
        path = folder / "README.md"
        existing = path.read_text(encoding="utf-8") if path.is_file() else None
        has_processor = (folder / "processor_config.json").is_file()
        if isinstance(owner, PreTrainedModel) or hasattr(owner, "get_base_model"):
            metrics = read_results(folder) or None
            text = refresh_model_card(owner, existing, metrics=metrics, has_processor=has_processor or None)
        elif _is_mmfnet_folder(folder):  # a processor saved next to its model
            text = refresh_model_card(folder, existing, has_processor=True)
        else:
            return
        path.write_text(text, encoding="utf-8")

    def before_upload(
        self,
        owner: Any,
        folder: str | os.PathLike,
        repo_id: str,
        revision: str | None = None,
        token: str | bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """`push_to_hub` saved into `folder`, where transformers put the repo's card (or its placeholder) as
        README.md: turn it into MMFNet's card before the upload. `options`: `replace_model_card` and
        `model_card_kwargs` given to `push_to_hub`."""
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

        options = dict(options or {})
        replace = bool(options.pop("replace_model_card", False))
        card_kwargs = dict(options.pop("model_card_kwargs", None) or {})
        folder = Path(folder)
        path = folder / "README.md"
        existing = path.read_text(encoding="utf-8") if path.is_file() else None
        api = HfApi(token=token)
        if isinstance(owner, PreTrainedModel) or hasattr(owner, "get_base_model"):
            source: Any = owner
            has_processor = (folder / "processor_config.json").is_file() or api.file_exists(
                repo_id, "processor_config.json", revision=revision
            )
        else:
            has_processor = True
            source = folder if _is_mmfnet_folder(folder) else None
            if source is None:
                try:
                    config_path = Path(hf_hub_download(repo_id, "config.json", revision=revision, token=token))
                except (EntryNotFoundError, RevisionNotFoundError):  # no model there yet
                    config_path = None
                source = config_path.parent if config_path and _is_mmfnet_folder(config_path.parent) else None
            if source is None:
                path.write_text(
                    update_model_card(existing, _processor_only_card(owner, repo_id), replace=replace),
                    encoding="utf-8",
                )
                return
        card_kwargs.setdefault("has_processor", has_processor)
        text = refresh_model_card(source, existing, replace=replace, repo_id=repo_id, **card_kwargs)
        path.write_text(text, encoding="utf-8")


def _is_mmfnet_folder(folder: Path) -> bool:
    path = folder / "config.json"
    return path.is_file() and json.loads(path.read_text()).get("model_type") == MMFNetConfig.model_type


def _processor_only_card(processor: Any, repo_id: str) -> str:
    """The card of a repo that holds an MMFNet processor but no model yet (replaced when the model is pushed)."""
    modalities = tuple(getattr(processor, "modalities", ()))
    data = ModelCardData(library_name="transformers", tags=[*MMFNET_TAGS, *modalities, "custom_code"])
    return (
        f"---\n{data.to_yaml()}\n---\n\n<!-- mmfnet-card {_encode_state({'repo_id': repo_id})} -->\n"
        f"# {repo_id.split('/')[-1]}\n\nThe processor of an MMFNet model for {_join(list(modalities)) or 'its'} "
        "inputs. The model is not in this repo yet: push it (`model.push_to_hub`) to complete this card.\n"
        f"{CARD_END}\n"
    )


# --------------------------------------------------------------------------------------------------- Trainer
def trainer_metrics(trainer: Any) -> dict[str, float]:
    """The latest value of every numeric metric the Trainer logged (`state.log_history`)."""
    metrics: dict[str, float] = {}
    for entry in trainer.state.log_history:
        metrics.update(_numeric({k: v for k, v in entry.items() if k not in ("step", "total_flos")}))
    return metrics


def _unwrap(model: Any) -> Any:
    model = getattr(model, "module", model)  # DDP / DataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def trainer_create_model_card(original: Any) -> Any:
    """Wrap `Trainer.create_model_card` so that an MMFNet model gets MMFNet's card (updating the one on the Hub,
    or in `output_dir`), with the run's logged and saved metrics; other models keep transformers' card."""
    import functools
    import inspect

    signature = inspect.signature(original)

    @functools.wraps(original)
    def create_model_card(self: Any, *args: Any, **kwargs: Any) -> None:
        model = _unwrap(self.model)
        if getattr(getattr(model, "config", None), "model_type", None) != MMFNetConfig.model_type:
            return original(self, *args, **kwargs)
        kwargs = {k: v for k, v in signature.bind(self, *args, **kwargs).arguments.items() if k != "self"}
        if not self.is_world_process_zero():
            return None
        output_dir = Path(self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {**trainer_metrics(self), **read_results(output_dir)}
        repo_id = getattr(self, "hub_model_id", None)
        existing = hub_card(repo_id, token=self.args.hub_token) if repo_id else None
        path = output_dir / "README.md"
        if existing is None and path.is_file():
            existing = path.read_text(encoding="utf-8")
        datasets = [*_as_list(kwargs.get("dataset")), *_as_list(kwargs.get("dataset_tags"))]
        card_kwargs: dict[str, Any] = {"tags": _as_list(kwargs.get("tags"))}
        if kwargs.get("license"):
            card_kwargs["license"] = kwargs["license"]
        if kwargs.get("finetuned_from"):
            card_kwargs["base_models"] = _as_list(kwargs["finetuned_from"])
        text = refresh_model_card(
            model,
            existing,
            metrics=metrics,
            datasets=list(dict.fromkeys(datasets)) or None,
            repo_id=repo_id,
            has_processor=(output_dir / "processor_config.json").is_file(),
            **card_kwargs,
        )
        path.write_text(text, encoding="utf-8")
        return None

    create_model_card.mmfnet_wrapped = True
    return create_model_card


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def wrap_trainer() -> bool:
    """Wrap `Trainer.create_model_card` (see `trainer_create_model_card`) once `transformers.trainer` is loaded;
    True when it is wrapped. Importing the Trainer here would load its optional dependencies (peft, ...) with
    the package, so this runs at import when the Trainer is already loaded, else at the first MMFNet save —
    `Trainer.push_to_hub` saves the model and processor before it writes the card."""
    module = sys.modules.get("transformers.trainer")
    if module is None:
        return False
    trainer = module.Trainer
    if not getattr(trainer.create_model_card, "mmfnet_wrapped", False):
        trainer.create_model_card = trainer_create_model_card(trainer.create_model_card)
    return True


def install_hooks() -> None:
    """Give MMFNet models and processors `ModelCardHook`, and the Trainer MMFNet's card (idempotent)."""
    from .modeling_mmfnet import MMFNetPreTrainedModel
    from .processing_mmfnet import MMFNetProcessor

    hook = ModelCardHook()
    MMFNetPreTrainedModel.model_card_hook = hook
    MMFNetProcessor.model_card_hook = hook
    wrap_trainer()


__all__ = [
    "ModelCardHook",
    "card_state",
    "default_template",
    "generate_model_card",
    "hub_card",
    "install_hooks",
    "is_generic_card",
    "read_results",
    "refresh_model_card",
    "update_model_card",
    "write_model_card",
]
