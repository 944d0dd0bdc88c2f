"""MMFNet performance benchmarks (P1–P5, scaling, inference), measured as side-by-side ratios on this machine.

    python benchmarks/run_benchmarks.py [--quick] [--output-dir benchmarks/results] [--no-compile]

Writes `results.json` (numbers, sizes, machine), `results.md` (the table) and PNG plots to the output folder; a
full run (not `--quick`) also refreshes the results table in `benchmarks/README.md`. Every ratio is
`median(A) / median(B)` over rounds in which A and B run interleaved in one process (in a shuffled order each
round), so machine noise hits both. Encoders are randomly initialised from configs: nothing is downloaded.
See `benchmarks/README.md` for what each metric means.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoModel,
    BertConfig,
    PreTrainedConfig,
    PreTrainedModel,
    VisionTextDualEncoderModel,
    ViTConfig,
    Wav2Vec2Config,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import modeling_mmfnet as mm  # noqa: E402

MODALITIES = ("vision", "text", "audio")
GOALS = {
    "P1": {"concat": 1.03, "gated": 1.03, "attention": 1.03, "tensor": 1.10, "low_rank": 1.10, "transformer": 1.10},
    "P2": 1.00,
    "P3": 0.10,
    "P4": 1.05,
    "P5": 0.60,
}
README_PATH = Path(__file__).with_name("README.md")
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


# ------------------------------------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """Model and workload sizes of one run (recorded in the JSON)."""

    name: str
    hidden: int  # every encoder: hidden size, layers, heads, feed-forward width
    layers: int
    heads: int
    intermediate: int
    image_size: int  # ViT-like vision encoder
    patch_size: int
    vocab_size: int  # BERT-like text encoder
    seq_len: int
    audio_samples: int  # Wav2Vec2-like audio encoder over raw 16 kHz audio
    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    fusion_dim: int
    fusion_hidden_dim: int
    batch: int  # P1–P4
    memory_batch: int  # P5
    epoch_batches: int  # P3: batches per epoch
    inference_batches: tuple[int, ...]
    rounds: int  # interleaved repeats per measurement
    scaling_batches: tuple[int, ...]
    scaling_seq_lens: tuple[int, ...]
    scaling_image_sizes: tuple[int, ...]
    scaling_audio_samples: tuple[int, ...]
    compile_timeout_s: int


DEFAULT = Sizes(
    name="default",
    hidden=256,
    layers=4,
    heads=4,
    intermediate=1024,
    image_size=64,
    patch_size=8,
    vocab_size=30522,
    seq_len=32,
    audio_samples=16000,
    conv_dim=(64,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    fusion_dim=256,
    fusion_hidden_dim=512,
    batch=8,
    memory_batch=32,
    epoch_batches=8,
    inference_batches=(1, 32),
    rounds=21,
    scaling_batches=(1, 2, 4, 8, 16, 32),
    scaling_seq_lens=(16, 32, 64, 128),
    scaling_image_sizes=(32, 64, 96, 128),
    scaling_audio_samples=(4000, 8000, 16000, 32000),
    compile_timeout_s=300,
)
QUICK = Sizes(
    name="quick",
    hidden=128,
    layers=2,
    heads=2,
    intermediate=256,
    image_size=32,
    patch_size=4,
    vocab_size=1000,
    seq_len=32,
    audio_samples=3200,
    conv_dim=(32, 32),
    conv_kernel=(10, 8),
    conv_stride=(5, 4),
    fusion_dim=128,
    fusion_hidden_dim=256,
    batch=8,
    memory_batch=8,
    epoch_batches=3,
    inference_batches=(1, 8),
    rounds=5,
    scaling_batches=(1, 2, 4),
    scaling_seq_lens=(8, 16),
    scaling_image_sizes=(16, 32),
    scaling_audio_samples=(1600, 3200),
    compile_timeout_s=0,
)


def encoder_configs(
    sizes: Sizes, image_size: int | None = None, audio_samples: int | None = None
) -> dict[str, PreTrainedConfig]:
    """ViT-, BERT- and Wav2Vec2-like encoder configs of the given sizes (random weights, no download)."""
    common = dict(
        hidden_size=sizes.hidden,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        intermediate_size=sizes.intermediate,
    )
    return {
        "vision": ViTConfig(**common, image_size=image_size or sizes.image_size, patch_size=sizes.patch_size),
        "text": BertConfig(**common, vocab_size=sizes.vocab_size, max_position_embeddings=512),
        "audio": Wav2Vec2Config(
            **common,
            conv_dim=sizes.conv_dim,
            conv_kernel=sizes.conv_kernel,
            conv_stride=sizes.conv_stride,
            num_conv_pos_embeddings=32 if sizes.hidden >= 128 else 16,
            num_conv_pos_embedding_groups=4 if sizes.hidden >= 128 else 2,
            vocab_size=32,
            layerdrop=0.0,
            mask_time_prob=0.0,
        ),
    }


def make_inputs(
    sizes: Sizes,
    batch: int,
    modalities: Iterable[str] = MODALITIES,
    *,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_samples: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random model inputs for `modalities` (all rows present, no padding)."""
    generator = torch.Generator().manual_seed(seed)
    modalities, seq_len = set(modalities), seq_len or sizes.seq_len
    inputs: dict[str, torch.Tensor] = {}
    if "vision" in modalities:
        side = image_size or sizes.image_size
        inputs["pixel_values"] = torch.randn(batch, 3, side, side, generator=generator)
    if "text" in modalities:
        inputs["input_ids"] = torch.randint(5, sizes.vocab_size, (batch, seq_len), generator=generator)
        inputs["attention_mask"] = torch.ones(batch, seq_len, dtype=torch.long)
    if "audio" in modalities:
        inputs["input_values"] = torch.randn(batch, audio_samples or sizes.audio_samples, generator=generator)
    return inputs


def mmfnet_config(
    sizes: Sizes, configs: dict[str, PreTrainedConfig], modalities: Iterable[str], **kwargs: Any
) -> mm.MMFNetConfig:
    """An MMFNetConfig over (copies of) the given encoder configs."""
    sub_configs = {f"{m}_config": copy.deepcopy(configs[m]) for m in modalities}
    kwargs = {"fusion_dim": sizes.fusion_dim, "fusion_hidden_dim": sizes.fusion_hidden_dim, **kwargs}
    return mm.MMFNetConfig(**sub_configs, **kwargs)


def build_encoders(configs: dict[str, PreTrainedConfig], modalities: Iterable[str]) -> dict[str, PreTrainedModel]:
    """Randomly initialised encoders, keyed `vision_model` / … as `MMFNetModel` takes them."""
    return {f"{m}_model": AutoModel.from_config(copy.deepcopy(configs[m])) for m in modalities}


def encoder_call(model: mm.MMFNetModel, modality: str, inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
    """Run one of the model's encoders alone on its share of `inputs`, the way MMFNet calls it."""
    encoder = getattr(model, f"{modality}_model")
    kwargs = {key: inputs[key] for key in mm.ENCODER_INPUT_NAMES[modality] if key in inputs}
    return partial(encoder, **kwargs, return_dict=True)


def run_all(calls: Iterable[Callable[[], Any]]) -> Callable[[], None]:
    calls = tuple(calls)

    def run() -> None:
        for call in calls:
            call()

    return run


def training_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One optimizer step (zero_grad, forward, backward, AdamW) on the model's trainable parameters."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    step.optimizer = optimizer  # type: ignore[attr-defined]
    return step


# ----------------------------------------------------------------------------------------------------- measuring
@dataclass
class Samples:
    """Per-round seconds of one call: wall clock, and CPU time of the whole process (all its threads)."""

    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def interleaved(
    calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1, seed: int = 0
) -> dict[str, Samples]:
    """Time each call once per round; every round runs all calls, in a freshly shuffled order."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    names, rng = list(calls), random.Random(seed)
    samples = {name: Samples([], []) for name in names}
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(names)
            for name in names:
                wall, cpu = time.perf_counter(), time.process_time()
                calls[name]()
                samples[name].cpu.append(time.process_time() - cpu)
                samples[name].wall.append(time.perf_counter() - wall)
    finally:
        gc.enable()
    return samples


def ratio_entry(numerator: Samples, denominator: Samples, goal: float | None, labels: tuple[str, str]) -> dict:
    """`median(A) / median(B)` of wall-clock times, with the raw medians, minima, the goal verdict and, as
    noise-robust cross-checks, the median of per-round ratios and the ratio of median CPU times."""
    a, b = numerator.wall, denominator.wall
    ratio = numerator.median / denominator.median
    return {
        "ratio": ratio,
        "goal": goal,
        "meets_goal": None if goal is None else bool(ratio <= goal),
        "ratio_of_minima": min(a) / min(b),
        "median_of_round_ratios": statistics.median(x / y for x, y in zip(a, b, strict=True)),
        "cpu_time_ratio": statistics.median(numerator.cpu) / max(statistics.median(denominator.cpu), 1e-9),
        "numerator": {"what": labels[0], "median_s": numerator.median, "min_s": min(a)},
        "denominator": {"what": labels[1], "median_s": denominator.median, "min_s": min(b)},
        "rounds": len(a),
    }


def step_peak_memory(model: torch.nn.Module, step: Callable[[], None]) -> dict[str, int]:
    """Peak bytes of live tensors during one `training_step`, by kind, from torch's MemTracker (a dispatch mode +
    storage weakrefs: exact for tensor memory on CPU). Warmed up first, so the optimizer state already exists."""
    from torch.distributed._tools.mem_tracker import MemTracker

    step()
    optimizer: torch.optim.Optimizer = step.optimizer  # type: ignore[attr-defined]
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    return {getattr(kind, "value", str(kind)).lower(): int(value) for kind, value in peak.items()}


def linear_fit_r2(xs: list[float], ys: list[float]) -> float:
    """R² of the least-squares line through the points (1.0 = perfectly linear)."""
    if len(xs) < 3:
        return 1.0
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    residual = sum((y - mean_y - slope * (x - mean_x)) ** 2 for x, y in zip(xs, ys, strict=True))
    total = sum((y - mean_y) ** 2 for y in ys)
    return 1.0 - residual / total if total > 0 else 1.0


# --------------------------------------------------------------------------------------------------- benchmarks
def bench_fusion_overhead(sizes: Sizes, configs: dict[str, PreTrainedConfig]) -> dict[str, Any]:
    """P1: MMFNetModel forward / the sum of its encoders' forwards, per fusion type (3 modalities, eval)."""
    torch.manual_seed(0)
    encoders = build_encoders(configs, MODALITIES)  # shared by every fusion variant: identical encoder work
    models = {
        fusion: mm.MMFNetModel(mmfnet_config(sizes, configs, MODALITIES, fusion_type=fusion), **encoders).eval()
        for fusion in mm.FUSION_TYPES
    }
    inputs = make_inputs(sizes, sizes.batch)
    reference = next(iter(models.values()))
    encoders_alone = run_all(encoder_call(reference, m, inputs) for m in MODALITIES)
    results = {}
    with torch.inference_mode():
        embeds = reference.get_modality_embeddings(**inputs)
        head_times = interleaved({f: partial(model, **embeds) for f, model in models.items()}, 2 * sizes.rounds)
    for fusion, model in models.items():  # one A/B pair at a time: each round runs the two back to back
        with torch.inference_mode():
            times = interleaved({fusion: partial(model, **inputs), "encoders": encoders_alone}, 2 * sizes.rounds)
        entry = ratio_entry(times[fusion], times["encoders"], GOALS["P1"][fusion], ("MMFNetModel", "encoders"))
        head = head_times[fusion].median
        entry["head_only_median_s"] = head  # pooling-free part: projections + missing embeddings + fusion
        entry["ratio_from_parts"] = 1.0 + head / entry["denominator"]["median_s"]
        results[fusion] = entry
    return results


def bench_training_vs_vtde(sizes: Sizes, configs: dict[str, PreTrainedConfig]) -> dict[str, Any]:
    """P2: one training step of MMFNet (image + text, classification loss) / VisionTextDualEncoderModel
    (contrastive loss) over the same two encoders (same weights) and batch."""
    torch.manual_seed(0)
    encoders = build_encoders(configs, ("vision", "text"))
    vtde = VisionTextDualEncoderModel(
        vision_model=copy.deepcopy(encoders["vision_model"]), text_model=copy.deepcopy(encoders["text_model"])
    ).train()
    config = mmfnet_config(sizes, configs, ("vision", "text"), num_labels=10)
    mmfnet = mm.MMFNetForClassification(config, **copy.deepcopy(encoders)).train()
    mmfnet.mmfnet.vision_model.load_state_dict(encoders["vision_model"].state_dict())
    mmfnet.mmfnet.text_model.load_state_dict(encoders["text_model"].state_dict())
    inputs = make_inputs(sizes, sizes.batch, ("vision", "text"))
    labels = torch.randint(0, 10, (sizes.batch,), generator=torch.Generator().manual_seed(0))
    calls = {
        "mmfnet": training_step(mmfnet, lambda: mmfnet(**inputs, labels=labels).loss),
        "vtde": training_step(vtde, lambda: vtde(**inputs, return_loss=True).loss),
    }
    times = interleaved(calls, sizes.rounds)
    entry = ratio_entry(times["mmfnet"], times["vtde"], GOALS["P2"], ("MMFNet step", "VTDE step"))
    entry["attn_implementation"] = {
        "mmfnet": mmfnet.mmfnet.text_model.config._attn_implementation,
        "vtde": vtde.text_model.config._attn_implementation,
    }
    entry["trainable_parameters"] = {
        name: sum(p.numel() for p in model.parameters() if p.requires_grad)
        for name, model in (("mmfnet", mmfnet), ("vtde", vtde))
    }
    return entry


def bench_cached_embeddings(sizes: Sizes, configs: dict[str, PreTrainedConfig]) -> dict[str, Any]:
    """P3: a training epoch on cached frozen-encoder embeddings / an epoch recomputing the frozen encoders
    (image + text), at the training batch size `memory_batch` (the headline) and at the P1–P4 batch size."""
    torch.manual_seed(0)
    config = mmfnet_config(sizes, configs, ("vision", "text"), num_labels=10, freeze_vision=True, freeze_text=True)
    model = mm.MMFNetForClassification(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    by_batch = {
        str(batch): cached_epoch_ratio(sizes, model, optimizer, batch)
        for batch in sorted({sizes.batch, sizes.memory_batch}, reverse=True)
    }
    return {**by_batch[str(sizes.memory_batch)], "by_batch_size": by_batch}


def cached_epoch_ratio(
    sizes: Sizes, model: mm.MMFNetForClassification, optimizer: torch.optim.Optimizer, batch: int
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(batch)
    batches = [make_inputs(sizes, batch, ("vision", "text"), seed=i) for i in range(sizes.epoch_batches)]
    labels = [torch.randint(0, 10, (batch,), generator=generator) for _ in batches]
    start = time.perf_counter()
    with torch.no_grad():
        cached = [model.get_modality_embeddings(**inputs) for inputs in batches]
    precompute_s = time.perf_counter() - start

    def epoch(feeds: list[dict[str, torch.Tensor]]) -> None:
        for feed, target in zip(feeds, labels, strict=True):
            optimizer.zero_grad(set_to_none=True)
            model(**feed, labels=target).loss.backward()
            optimizer.step()

    rounds = max(2, sizes.rounds // 4)
    times = interleaved({"cached": partial(epoch, cached), "recomputed": partial(epoch, batches)}, rounds)
    entry = ratio_entry(times["cached"], times["recomputed"], GOALS["P3"], ("cached epoch", "recomputed epoch"))
    entry.update(precompute_s=precompute_s, batches_per_epoch=len(batches), batch_size=batch)
    return entry


def bench_missing_modality(sizes: Sizes, configs: dict[str, PreTrainedConfig]) -> dict[str, Any]:
    """P4: a 3-modality MMFNet on a batch where one modality is present / that encoder alone.

    `inputs_only`: only that modality's inputs are passed. `masked`: every input is passed, and `modality_mask`
    marks only that modality present (the other encoders must not run)."""
    torch.manual_seed(0)
    model = mm.MMFNetModel(mmfnet_config(sizes, configs, MODALITIES)).eval()
    inputs = make_inputs(sizes, sizes.batch)
    results = {}
    for index, modality in enumerate(MODALITIES):
        own = {key: inputs[key] for key in mm.ENCODER_INPUT_NAMES[modality] if key in inputs}
        mask = torch.zeros(sizes.batch, len(MODALITIES), dtype=torch.bool)
        mask[:, index] = True
        with torch.inference_mode():
            embeds = model.get_modality_embeddings(**own)
            calls = {
                "encoder": encoder_call(model, modality, inputs),
                "inputs_only": partial(model, **own),
                "masked": partial(model, **inputs, modality_mask=mask),
                "head": partial(model, **embeds),  # the same forward on the precomputed pooled feature
            }
            times = interleaved(calls, 2 * sizes.rounds)
        results[modality] = {}
        for variant in ("inputs_only", "masked"):
            entry = ratio_entry(times[variant], times["encoder"], GOALS["P4"], (f"MMFNet {variant}", "encoder"))
            entry["head_only_median_s"] = times["head"].median
            entry["ratio_from_parts"] = 1.0 + times["head"].median / times["encoder"].median
            results[modality][variant] = entry
    return results


def bench_checkpointing_memory(sizes: Sizes, configs: dict[str, PreTrainedConfig]) -> dict[str, Any]:
    """P5: peak memory of a training step with activation checkpointing / without (3 modalities, transformer
    fusion, batch `memory_batch`), plus the time cost of recomputation."""
    torch.manual_seed(0)
    config = mmfnet_config(sizes, configs, MODALITIES, fusion_type="transformer", num_labels=10)
    model = mm.MMFNetForClassification(config).train()
    inputs = make_inputs(sizes, sizes.memory_batch)
    labels = torch.randint(0, 10, (sizes.memory_batch,), generator=torch.Generator().manual_seed(0))
    checkpointed = copy.deepcopy(model)
    checkpointed.activation_checkpointing_enable()
    steps = {
        "plain": training_step(model, lambda: model(**inputs, labels=labels).loss),
        "checkpointed": training_step(checkpointed, lambda: checkpointed(**inputs, labels=labels).loss),
    }
    memory = {"plain": step_peak_memory(model, steps["plain"])}
    memory["checkpointed"] = step_peak_memory(checkpointed, steps["checkpointed"])
    times = interleaved(steps, max(2, sizes.rounds // 4))
    plain, ckpt = memory["plain"], memory["checkpointed"]
    static = ("parameter", "buffer", "optstate")
    ratio = ckpt["total"] / plain["total"]
    return {
        "ratio": ratio,
        "goal": GOALS["P5"],
        "meets_goal": bool(ratio <= GOALS["P5"]),
        "method": "torch.distributed._tools.mem_tracker.MemTracker: peak bytes of live tensors during one step",
        "peak_bytes": {"checkpointed": ckpt["total"], "plain": plain["total"]},
        "breakdown_at_peak_bytes": memory,
        "ratio_excluding_weights_and_optimizer_state": (ckpt["total"] - sum(ckpt[k] for k in static))
        / (plain["total"] - sum(plain[k] for k in static)),
        "time_ratio": ratio_entry(times["checkpointed"], times["plain"], None, ("checkpointed step", "plain step")),
        "batch_size": sizes.memory_batch,
    }


def scaling_series(
    sizes: Sizes,
    builder: Callable[[Any], tuple[torch.nn.Module, dict[str, torch.Tensor]]],
    points: Iterable[Any],
    with_encoders_alone: bool = False,
) -> dict[str, Any]:
    """Inference time (interleaved over the points) and activation memory (bytes saved for backward) at each
    point; optionally also the time of the model's encoders alone, in the same interleaved rounds."""
    points = list(points)
    built = {point: builder(point) for point in points}
    calls = {str(p): partial(model.eval(), **inputs) for p, (model, inputs) in built.items()}
    if with_encoders_alone:
        for point, (model, inputs) in built.items():
            calls[f"{point} encoders"] = run_all(encoder_call(model, m, inputs) for m in model.config.modalities)
    with torch.inference_mode():
        times = interleaved(calls, max(3, sizes.rounds // 3))
    memory = [saved_activation_bytes(model.train(), inputs) for model, inputs in built.values()]
    series = {"x": points, "time_s": [times[str(p)].median for p in points], "activation_bytes": memory}
    if with_encoders_alone:
        series["sum_of_encoders_s"] = [times[f"{p} encoders"].median for p in points]
    return series


def saved_activation_bytes(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct tensor storages a training forward saves for backward, weights excluded
    (`torch.autograd.graph.saved_tensors_hooks`): the activation memory a backward pass needs, deterministic."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(**inputs)  # kept alive until the sum below, so no storage address is reused
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        total = sum(size for address, size in saved.items() if address not in weights)
    del output
    return total


def bench_scaling(sizes: Sizes, configs: dict[str, PreTrainedConfig]) -> dict[str, Any]:
    """Time and memory vs batch size, text length, image size, audio length and number of modalities."""
    torch.manual_seed(0)
    full = mm.MMFNetModel(mmfnet_config(sizes, configs, MODALITIES))
    text_only = mm.MMFNetModel(mmfnet_config(sizes, configs, ("text",)))
    audio_only = mm.MMFNetModel(mmfnet_config(sizes, configs, ("audio",)))
    subsets = {1: ("vision",), 2: ("vision", "text"), 3: MODALITIES}
    encoders = build_encoders(configs, MODALITIES)
    by_count = {
        count: mm.MMFNetModel(
            mmfnet_config(sizes, configs, subset), **{f"{m}_model": encoders[f"{m}_model"] for m in subset}
        )
        for count, subset in subsets.items()
    }

    def vision_only(side: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        vision_configs = encoder_configs(sizes, image_size=side)
        model = mm.MMFNetModel(mmfnet_config(sizes, vision_configs, ("vision",)))
        return model, make_inputs(sizes, sizes.batch, ("vision",), image_size=side)

    series = {
        "batch_size": scaling_series(sizes, lambda b: (full, make_inputs(sizes, b)), sizes.scaling_batches),
        "text_length": scaling_series(
            sizes, lambda n: (text_only, make_inputs(sizes, sizes.batch, ("text",), seq_len=n)), sizes.scaling_seq_lens
        ),
        "image_size": scaling_series(sizes, vision_only, sizes.scaling_image_sizes),
        "audio_samples": scaling_series(
            sizes,
            lambda n: (audio_only, make_inputs(sizes, sizes.batch, ("audio",), audio_samples=n)),
            sizes.scaling_audio_samples,
        ),
        # fusing M modalities should cost the sum of the M encoders alone
        "modalities": scaling_series(
            sizes, lambda c: (by_count[c], make_inputs(sizes, sizes.batch, subsets[c])), sorted(subsets), True
        ),
    }
    series["image_size"]["tokens"] = [(side // sizes.patch_size) ** 2 + 1 for side in sizes.scaling_image_sizes]
    for name, x_key in (("batch_size", "x"), ("text_length", "x"), ("image_size", "tokens"), ("audio_samples", "x")):
        data = series[name]
        data["time_r2"] = linear_fit_r2(data[x_key], data["time_s"])
        data["memory_r2"] = linear_fit_r2(data[x_key], data["activation_bytes"])
    return series


def bench_inference(sizes: Sizes, configs: dict[str, PreTrainedConfig], compile_: bool) -> dict[str, Any]:
    """Samples/s of the 3-modality MMFNetModel at each inference batch size: SDPA vs eager attention, and
    eager vs `torch.compile` (in a subprocess with a time limit)."""
    torch.manual_seed(0)
    sdpa = mm.MMFNetModel(mmfnet_config(sizes, configs, MODALITIES)).eval()
    eager = copy.deepcopy(sdpa)
    eager.set_attn_implementation("eager")
    results: dict[str, Any] = {"attention": {}}
    for batch in sizes.inference_batches:
        inputs = make_inputs(sizes, batch)
        with torch.inference_mode():
            times = interleaved({"sdpa": partial(sdpa, **inputs), "eager": partial(eager, **inputs)}, sizes.rounds)
        entry = ratio_entry(times["sdpa"], times["eager"], None, ("sdpa forward", "eager-attention forward"))
        entry["samples_per_s"] = {name: batch / t.median for name, t in times.items()}
        results["attention"][str(batch)] = entry
    results["compile"] = run_compile_worker(sizes) if compile_ else {"status": "skipped", "reason": "--no-compile"}
    return results


def run_compile_worker(sizes: Sizes) -> dict[str, Any]:
    """`torch.compile` in a fresh process, killed after `compile_timeout_s` (compiling takes minutes on CPU)."""
    if sizes.compile_timeout_s <= 0:
        return {"status": "skipped", "reason": "no compile time budget in this mode (--quick)"}
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "compile.json"
        command = [sys.executable, __file__, "--compile-worker", str(output), "--sizes", sizes.name]
        command += ["--threads", str(torch.get_num_threads())]
        start = time.perf_counter()
        try:
            process = subprocess.run(command, capture_output=True, text=True, timeout=sizes.compile_timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "reason": f"compiling did not finish within {sizes.compile_timeout_s} s"}
        if process.returncode != 0 or not output.exists():
            tail = (process.stderr or process.stdout).strip().splitlines()[-5:]
            return {"status": "failed", "reason": " | ".join(tail), "wall_s": time.perf_counter() - start}
        return {"status": "ok", **json.loads(output.read_text()), "wall_s": time.perf_counter() - start}


def compile_worker(sizes: Sizes, output: Path, threads: int) -> None:
    """Body of the compile subprocess: eager vs compiled samples/s per inference batch size."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = mm.MMFNetModel(mmfnet_config(sizes, encoder_configs(sizes), MODALITIES)).eval()
    compiled = torch.compile(model)
    results: dict[str, Any] = {}
    for batch in sizes.inference_batches:
        inputs = make_inputs(sizes, batch)
        with torch.inference_mode():
            start = time.perf_counter()
            compiled(**inputs)
            compile_s = time.perf_counter() - start
            rounds = max(3, sizes.rounds // (2 if batch > 1 else 1))
            times = interleaved({"compiled": partial(compiled, **inputs), "eager": partial(model, **inputs)}, rounds)
        entry = ratio_entry(times["compiled"], times["eager"], None, ("compiled forward", "eager forward"))
        entry.update(first_call_s=compile_s, samples_per_s={n: batch / t.median for n, t in times.items()})
        results[str(batch)] = entry
        output.write_text(json.dumps(results))  # partial results survive a timeout on a later batch size


# ----------------------------------------------------------------------------------------------------- reporting
def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


@dataclass
class Row:
    """One P1–P5 line of the results table."""

    metric: str
    what: str
    entry: dict[str, Any]

    @property
    def ratio(self) -> float:
        return self.entry["ratio"]

    @property
    def goal(self) -> float:
        return self.entry["goal"]

    @property
    def raw(self) -> str:
        if "peak_bytes" in self.entry:
            mib = {k: v / 2**20 for k, v in self.entry["peak_bytes"].items()}
            return f"{mib['checkpointed']:.0f} MiB / {mib['plain']:.0f} MiB"
        a, b = self.entry["numerator"]["median_s"], self.entry["denominator"]["median_s"]
        return f"{a * 1e3:.1f} ms / {b * 1e3:.1f} ms"

    @property
    def cross_checks(self) -> str:
        """Ratios of minima, of median CPU times and (P1, P4) from parts; for memory, without the static part."""
        if "peak_bytes" in self.entry:
            dynamic = self.entry["ratio_excluding_weights_and_optimizer_state"]
            return f"without weights and optimizer state: {dynamic:.3f}"
        checks = f"minima {self.entry['ratio_of_minima']:.3f}, CPU {self.entry['cpu_time_ratio']:.3f}"
        if "ratio_from_parts" in self.entry:
            checks += f", parts {self.entry['ratio_from_parts']:.3f}"
        return checks


def headline_rows(results: dict[str, Any]) -> list[Row]:
    """Every P1–P5 entry as a table row."""
    rows = [
        Row(f"P1 fusion overhead: {fusion}", "MMFNetModel / sum of encoders", entry)
        for fusion, entry in results["P1_fusion_overhead"].items()
    ]
    anchor = results["P2_training_step_vs_vtde"]
    rows.append(Row("P2 training step vs anchor", "MMFNet / VisionTextDualEncoder", anchor))
    cached = results["P3_cached_embeddings"]
    rows.append(Row(f"P3 cached embeddings (batch {cached['batch_size']})", "cached epoch / recomputed epoch", cached))
    for batch, entry in cached["by_batch_size"].items():
        if entry["batch_size"] != cached["batch_size"]:
            rows.append(Row(f"P3 cached embeddings (batch {batch})", "cached epoch / recomputed epoch", entry))
    for modality, variants in results["P4_missing_modality"].items():
        for variant, entry in variants.items():
            what = "only its inputs" if variant == "inputs_only" else "all inputs + modality_mask"
            rows.append(Row(f"P4 only {modality} present ({what})", f"MMFNet / {modality} encoder", entry))
    rows.append(Row("P5 peak step memory", "checkpointed / plain", results["P5_checkpointing_memory"]))
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    """The results table (headline ratios, then inference and scaling) as markdown."""
    machine, sizes = results["machine"], results["sizes"]
    lines = [
        f"Measured {machine['date']} on {machine['cpu']} ({machine['logical_cores']} cores, "
        f"{machine['torch_threads']} torch threads, load average at start {fmt_load(machine)}), "
        f"Python {machine['python']}, torch {machine['torch']}, transformers {machine['transformers']}; "
        f"`{results['mode']}` sizes; whole run {results['wall_time_s']:.0f} s.",
        "",
        "| metric | ratio (A / B) | measured | goal | met | medians A / B | cross-checks |",
        "| --- | --- | ---: | ---: | :---: | --- | --- |",
    ]
    for row in headline_rows(results):
        met = "yes" if row.ratio <= row.goal else "**no**"
        cells = [row.metric, row.what, f"{row.ratio:.3f}", f"≤ {row.goal:.2f}", met, row.raw, row.cross_checks]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| inference (3 modalities) | batch | samples/s | vs baseline |", "| --- | ---: | ---: | ---: |"]
    for batch, entry in results["inference"]["attention"].items():
        per_s = entry["samples_per_s"]
        lines.append(f"| eager attention | {batch} | {per_s['eager']:.1f} | 1.00 |")
        lines.append(f"| SDPA | {batch} | {per_s['sdpa']:.1f} | {per_s['sdpa'] / per_s['eager']:.2f}× eager attn |")
    compiled = results["inference"]["compile"]
    if compiled["status"] == "ok":
        for batch, entry in compiled.items():
            if isinstance(entry, dict) and "samples_per_s" in entry:
                per_s = entry["samples_per_s"]
                lines.append(
                    f"| torch.compile (SDPA) | {batch} | {per_s['compiled']:.1f} | "
                    f"{per_s['compiled'] / per_s['eager']:.2f}× eager mode (compile {entry['first_call_s']:.0f} s) |"
                )
    else:
        lines.append(f"| torch.compile | — | — | {compiled['status']}: {compiled['reason']} |")
    lines += ["", "| scaling (inference time; activations saved for backward) | points | time R² | memory R² |"]
    lines += ["| --- | --- | ---: | ---: |"]
    for name, data in results["scaling"].items():
        if "time_r2" in data:
            x = data.get("tokens", data["x"])
            lines.append(f"| {name} | {x} | {data['time_r2']:.3f} | {data['memory_r2']:.3f} |")
    counts = results["scaling"]["modalities"]
    pairs = ", ".join(
        f"{m}: {t * 1e3:.0f} ms vs {s * 1e3:.0f} ms"
        for m, t, s in zip(counts["x"], counts["time_s"], counts["sum_of_encoders_s"], strict=True)
    )
    lines += ["", f"Modalities (MMFNet vs the sum of its encoders alone): {pairs}.", "", sizes_line(sizes)]
    return "\n".join(lines) + "\n"


def fmt_load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_at_start")
    return "n/a" if not load else f"{load[0]:.1f}"


def sizes_line(sizes: dict[str, Any]) -> str:
    return (
        f"Sizes: encoders hidden {sizes['hidden']}, {sizes['layers']} layers, {sizes['heads']} heads, FFN "
        f"{sizes['intermediate']}; ViT {sizes['image_size']}px / patch {sizes['patch_size']}; BERT vocab "
        f"{sizes['vocab_size']}, {sizes['seq_len']} tokens; Wav2Vec2 conv {list(sizes['conv_dim'])}, "
        f"{sizes['audio_samples']} samples (16 kHz); fusion_dim {sizes['fusion_dim']}, fusion_hidden_dim "
        f"{sizes['fusion_hidden_dim']}; batch {sizes['batch']} (P1, P2, P4), {sizes['memory_batch']} (P3, P5; "
        f"P3 also at {sizes['batch']}), {sizes['epoch_batches']} batches per epoch (P3); "
        f"{sizes['rounds']} interleaved rounds ({2 * sizes['rounds']} for P1 and P4)."
    )


def update_readme(table: str) -> None:
    text = README_PATH.read_text()
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        tail = rest.split(README_END, 1)[1]
        README_PATH.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


def plot_all(results: dict[str, Any], output_dir: Path) -> list[Path]:
    """ratios.png (P1–P5 vs goals), scaling.png, inference.png."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = [output_dir / "ratios.png", output_dir / "scaling.png", output_dir / "inference.png"]
    plot_ratios(results, plt).savefig(paths[0], dpi=110, bbox_inches="tight")
    plot_scaling(results["scaling"], plt).savefig(paths[1], dpi=110, bbox_inches="tight")
    plot_inference(results["inference"], plt).savefig(paths[2], dpi=110, bbox_inches="tight")
    plt.close("all")
    return paths


def plot_ratios(results: dict[str, Any], plt: Any) -> Any:
    groups: dict[str, list[Row]] = {}
    for row in headline_rows(results):
        groups.setdefault(row.metric.partition(" ")[0], []).append(row)
    figure, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 4.5))
    for axis, (key, rows) in zip(axes, groups.items(), strict=True):
        xs = range(len(rows))
        labels = [row.metric.partition(" ")[2].split(": ")[-1].replace(" present ", "\n") for row in rows]
        colors = ["tab:green" if row.ratio <= row.goal else "tab:red" for row in rows]
        axis.bar(xs, [row.ratio for row in rows], color=colors, label="measured (medians)")
        axis.scatter(xs, [row.goal for row in rows], marker="_", s=600, color="black", label="goal", zorder=3)
        parts = [row.entry.get("ratio_from_parts") for row in rows]
        if all(part is not None for part in parts):
            axis.scatter(xs, parts, marker="o", color="black", s=15, label="from parts", zorder=4)
        if min(row.goal for row in rows) >= 1.0:  # overhead ratios: zoom in around 1
            values = [row.ratio for row in rows] + [row.goal for row in rows]
            axis.set_ylim(0.9, max(values) + 0.05)
        axis.set_xticks(xs, labels, rotation=60, ha="right", fontsize=7)
        axis.set_title(key)
        axis.set_ylabel("ratio (A / B)")
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle("MMFNet benchmark ratios (green: meets goal)")
    return figure


def plot_scaling(scaling: dict[str, Any], plt: Any) -> Any:
    axes_spec = [
        ("batch_size", "x", "batch size (3 modalities)"),
        ("text_length", "x", "text tokens (text only)"),
        ("image_size", "tokens", "image tokens (vision only)"),
        ("audio_samples", "x", "audio samples (audio only)"),
        ("modalities", "x", "number of modalities"),
    ]
    figure, axes = plt.subplots(2, len(axes_spec), figsize=(4 * len(axes_spec), 7))
    for column, (name, x_key, label) in enumerate(axes_spec):
        data = scaling[name]
        xs = data[x_key]
        axes[0, column].plot(xs, [t * 1e3 for t in data["time_s"]], "o-", label="MMFNet")
        if "sum_of_encoders_s" in data:
            axes[0, column].plot(xs, [t * 1e3 for t in data["sum_of_encoders_s"]], "x--", label="sum of encoders")
            axes[0, column].legend()
        axes[1, column].plot(xs, [b / 2**20 for b in data["activation_bytes"]], "o-", color="tab:orange")
        axes[1, column].set_xlabel(label)
        if "time_r2" in data:
            axes[0, column].set_title(f"linear fit R² = {data['time_r2']:.3f}", fontsize=9)
            axes[1, column].set_title(f"linear fit R² = {data['memory_r2']:.3f}", fontsize=9)
    axes[0, 0].set_ylabel("inference time (ms)")
    axes[1, 0].set_ylabel("activations saved for backward (MiB)")
    figure.suptitle("MMFNet scaling")
    return figure


def plot_inference(inference: dict[str, Any], plt: Any) -> Any:
    batches = list(inference["attention"])
    series = {
        "eager attention": [inference["attention"][b]["samples_per_s"]["eager"] for b in batches],
        "SDPA": [inference["attention"][b]["samples_per_s"]["sdpa"] for b in batches],
    }
    compiled = inference["compile"]
    if compiled["status"] == "ok":
        series["torch.compile"] = [compiled.get(b, {}).get("samples_per_s", {}).get("compiled", 0.0) for b in batches]
    figure, axis = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        axis.bar([i + index * width for i in range(len(batches))], values, width, label=name)
    axis.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(batches))], [f"batch {b}" for b in batches])
    axis.set_ylabel("samples / s")
    axis.set_title("MMFNet inference (3 modalities)")
    axis.legend()
    return figure


# ----------------------------------------------------------------------------------------------------------- main
def run(sizes: Sizes, output_dir: Path, compile_: bool, threads: int) -> dict[str, Any]:
    start = time.perf_counter()
    configs = encoder_configs(sizes)
    results: dict[str, Any] = {"mode": sizes.name, "machine": machine_info(threads), "sizes": asdict(sizes)}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("P1_fusion_overhead", partial(bench_fusion_overhead, sizes, configs)),
        ("P2_training_step_vs_vtde", partial(bench_training_vs_vtde, sizes, configs)),
        ("P3_cached_embeddings", partial(bench_cached_embeddings, sizes, configs)),
        ("P4_missing_modality", partial(bench_missing_modality, sizes, configs)),
        ("P5_checkpointing_memory", partial(bench_checkpointing_memory, sizes, configs)),
        ("scaling", partial(bench_scaling, sizes, configs)),
        ("inference", partial(bench_inference, sizes, configs, compile_)),
    ]
    for name, bench in steps:
        began = time.perf_counter()
        results[name] = bench()
        print(f"{name}: {time.perf_counter() - began:.1f} s", flush=True)
    results["goals_met"] = {row.metric: row.ratio <= row.goal for row in headline_rows(results)}
    results["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["wall_time_s"] = time.perf_counter() - start
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    table = markdown_table(results)
    (output_dir / "results.md").write_text(table)
    plot_all(results, output_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (about a minute)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--no-readme", action="store_true", help="do not refresh the table in benchmarks/README.md")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: 2, or 1 with --quick)")
    parser.add_argument("--compile-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", choices=("default", "quick"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.logging.set_verbosity_error()
    sizes = QUICK if args.quick or args.sizes == "quick" else DEFAULT
    # tiny quick-mode ops gain nothing from a second thread, and two OpenMP threads on a busy machine stall badly
    threads = args.threads or (1 if sizes is QUICK else 2)
    if args.compile_worker is not None:
        compile_worker(sizes, args.compile_worker, threads)
        return 0
    torch.set_num_threads(threads)
    results = run(sizes, args.output_dir, not args.no_compile, threads)
    if not args.quick and not args.no_readme:
        update_readme(markdown_table(results))
    print(markdown_table(results))
    missed = [metric for metric, met in results["goals_met"].items() if not met]
    print(f"goals missed: {missed or 'none'}; results in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
