"""examples/train.py end to end: real Trainer runs on the toy data with tiny encoders loaded from disk.

Covers the metrics (fused and with each modality removed), exact resumption, `torchrun` DDP against one process,
training on cached frozen-encoder features against frozen encoders, LoRA through peft, and bad input that must
fail before training starts.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, DatasetDict, Value, load_from_disk
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoProcessor,
    AutoTokenizer,
    EvalPrediction,
    set_seed,
)

import modeling_mmfnet as mm
from modeling_mmfnet import training_mmfnet as train

REPO = Path(__file__).resolve().parents[1]
LABELS = ["zero", "one", "two", "three"]
DDP_ATOL = 1e-5
"""DDP vs one process: same data, same global batch; only the order of float sums differs (seen: ~4e-7)."""


def run_train(argv: list[str]) -> dict[str, float]:
    """`examples/train.py argv` in this process; the metrics it reports."""
    return train.run(*train.parse_args(argv))


def tiny_args(data: Path, output_dir: Path, text: Path | str = "none", **overrides) -> list[str]:
    """Command line for a tiny run: seed-CNN vision and audio, optional text encoder, a few steps on CPU."""
    options = {
        "dataset": data,
        "output_dir": output_dir,
        "vision_encoder": "conv",
        "text_encoder": text,
        "audio_encoder": "conv",
        "conv_hidden_sizes": "8,16,16",
        "fusion_dim": 16,
        "fusion_hidden_dim": 32,
        "num_mel_bins": 16,
        "max_steps": 4,
        "max_train_samples": 8,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "seed": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "dataloader_num_workers": 0,
        "report_to": "none",
        "disable_tqdm": "true",
        "use_cpu": "true",
        "do_train": "true",
        **overrides,
    }
    args = []
    for key, value in options.items():
        if value is not None:
            args += [f"--{key}", str(value)]
    return args


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def parse(argv: list[str]) -> tuple:
    return train.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def bert_no_dropout(encoder_dirs, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: DDP ranks and a single process draw different dropout masks."""
    folder = tmp_path_factory.mktemp("bert_no_dropout")
    model = AutoModel.from_pretrained(encoder_dirs["bert"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(encoder_dirs["bert"]).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------- one process
def ddp_comparable_args(data: Path, output_dir: Path, text: Path, per_device: int) -> list[str]:
    """8 training rows and a global batch of 8: every step sees the whole train set on any number of ranks.

    SGD, not AdamW: Adam turns float-rounding noise on a parameter whose true gradient is zero (a conv bias right
    before a per-channel GroupNorm) into a full ±lr step, which would hide real differences behind a loose bound.
    """
    return tiny_args(
        data, output_dir, text, per_device_train_batch_size=per_device, dropout=0.0, modality_dropout=0.0,
        optim="sgd", learning_rate=0.1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def single_run(tiny_dataset, bert_no_dropout, tmp_path_factory) -> tuple[Path, dict, dict]:
    """One in-process run of `main(argv)`: output folder, returned metrics, and the weights before training."""
    out = tmp_path_factory.mktemp("single") / "out"
    argv = ddp_comparable_args(tiny_dataset, out, bert_no_dropout, per_device=8)
    metrics = run_train(argv)
    # the weights the run started from: the same seed and the same construction as `run`
    set_seed(0)
    initial, _ = train.build_model_and_processor(parse(argv)[0], LABELS)
    return out, metrics, {k: v.detach().clone() for k, v in initial.state_dict().items()}


def test_compute_metrics_accuracy_and_macro_f1():
    logits = np.eye(3)[[0, 1, 1, 2]] * 5.0  # predicts 0, 1, 1, 2
    metrics = train.compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 2, 2])))
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)
    regression = train.compute_metrics(
        EvalPrediction(predictions=np.array([[1.0], [3.0]]), label_ids=np.array([1.0, 1.0]))
    )
    assert regression == {"mse": pytest.approx(2.0), "mae": pytest.approx(1.0)}


def test_training_saves_model_processor_and_metrics(single_run):
    out, metrics, initial = single_run
    trained = weights(out)
    assert set(trained) == set(initial)
    assert max_difference(trained, initial) > 1e-3, "training did not move the weights"
    assert metrics["train_loss"] > 0 and np.isfinite(metrics["train_loss"])
    assert json.loads((out / "mmfnet_results.json").read_text()) == pytest.approx(metrics)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(processor, mm.MMFNetProcessor) and processor.modalities == ("vision", "text", "audio")
    model = mm.MMFNetForClassification.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(LABELS)) and model.config.num_labels == 4


def test_evaluation_reports_fused_and_each_modality_removed(single_run, tiny_dataset):
    """The reported scores are exactly those of the saved model, fused and with one modality hidden at test time."""
    from sklearn.metrics import accuracy_score, f1_score

    out, metrics, _ = single_run
    for prefix in ("test", "test_without_vision", "test_without_text", "test_without_audio"):
        assert 0.0 <= metrics[f"{prefix}_accuracy"] <= 1.0 and 0.0 <= metrics[f"{prefix}_macro_f1"] <= 1.0
        assert np.isfinite(metrics[f"{prefix}_loss"])
    model = mm.MMFNetForClassification.from_pretrained(out).eval()
    collator = mm.MMFNetDataCollator(AutoProcessor.from_pretrained(out))
    test = list(load_from_disk(tiny_dataset)["test"])
    columns = {"vision": "image", "text": "text", "audio": "audio"}
    for modality in (None, "vision", "text", "audio"):
        use = collator if modality is None else collator.without(modality)
        # without m, samples that have nothing but m are not scored
        rows = [r for r in test if any(r[c] is not None for m, c in columns.items() if m != modality)]
        with torch.no_grad():
            out_ = model(**use(rows))
        predicted, labels = out_.logits.argmax(-1).numpy(), np.array([r["label"] for r in rows])
        prefix = "test" if modality is None else f"test_without_{modality}"
        assert metrics[f"{prefix}_accuracy"] == pytest.approx(accuracy_score(labels, predicted))
        assert metrics[f"{prefix}_macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
        assert metrics[f"{prefix}_loss"] == pytest.approx(out_.loss.item(), abs=1e-5)
    # the scores differ once a modality is hidden: the removal is real
    assert any(metrics[f"test_without_{m}_loss"] != pytest.approx(metrics["test_loss"]) for m in columns)


def test_two_modality_run_scores_samples_that_keep_another_modality(tiny_dataset, bert_no_dropout, tmp_path):
    """Vision + text: a sample with no image has nothing left without text; it is left out of that score."""
    out = tmp_path / "out"
    metrics = run_train(tiny_args(tiny_dataset, out, bert_no_dropout, audio_encoder="none", max_steps=1))
    assert {"test_without_vision_loss", "test_without_text_loss"} <= set(metrics)
    assert not any("without_audio" in key for key in metrics)
    model = mm.MMFNetForClassification.from_pretrained(out).eval()
    collator = mm.MMFNetDataCollator(AutoProcessor.from_pretrained(out), audio_column=None)
    test = list(load_from_disk(tiny_dataset)["test"])
    for removed, kept_column in (("vision", "text"), ("text", "image")):
        rows = [row for row in test if row[kept_column] is not None]
        assert 0 < len(rows) < len(test)  # the toy test split has samples with only the removed modality
        with torch.no_grad():
            loss = model(**collator.without(removed)(rows)).loss.item()
        assert metrics[f"test_without_{removed}_loss"] == pytest.approx(loss, abs=1e-5)


# ------------------------------------------------------------------------------------------------ distributed
def torchrun_train(argv: list[str]) -> str:
    """`examples/train.py` under `torchrun --nproc_per_node 2` (gloo on CPU); the run's log, asserted successful."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(REPO / "examples" / "train.py"), *argv]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def test_torchrun_ddp_matches_single_process(single_run, tiny_dataset, bert_no_dropout, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU), per-device batch 4: same weights as one process with batch 8."""
    single_out, single_metrics, _ = single_run
    out = tmp_path / "ddp"
    argv = ddp_comparable_args(tiny_dataset, out, bert_no_dropout, per_device=4)
    log = torchrun_train(argv)
    # both ranks ran the script, in one world of two
    assert re.search(r"process 0 of 2", log) and re.search(r"process 1 of 2", log), log[-3000:]

    ddp_metrics = json.loads((out / "mmfnet_results.json").read_text())
    # the logged loss is gathered over both ranks: equal to the one-process loss over the whole batch only if
    # rank 1 trained on the other half (rank 0 alone would report the mean over its own 4 rows)
    assert ddp_metrics["train_loss"] == pytest.approx(single_metrics["train_loss"], abs=DDP_ATOL)
    ddp_weights, single_weights = weights(out), weights(single_out)
    assert max_difference(ddp_weights, single_weights) <= DDP_ATOL
    # evaluation under DDP gathers both ranks' predictions: the same scores
    for key, value in single_metrics.items():
        if key.startswith("test") and key.endswith(("_accuracy", "_macro_f1", "_loss")):
            assert ddp_metrics[key] == pytest.approx(value, abs=1e-4), key


def test_torchrun_ddp_with_activation_checkpointing_and_no_unused_parameter_search(
    single_run, tiny_dataset, bert_no_dropout, tmp_path
):
    """Activation checkpointing under DDP with `find_unused_parameters=False` (the Trainer's own choice whenever
    checkpointing is on): every trainable parameter gets a gradient (no unused BERT pooler), and recomputing the
    activations in the backward pass changes nothing: the weights equal the plain one-process run's."""
    single_out, single_metrics, initial = single_run
    out = tmp_path / "ddp_checkpointing"
    argv = ddp_comparable_args(tiny_dataset, out, bert_no_dropout, per_device=4)
    argv += ["--activation_checkpointing", "true", "--ddp_find_unused_parameters", "false", "--do_eval", "false"]
    log = torchrun_train(argv)
    assert re.search(r"process 0 of 2", log) and re.search(r"process 1 of 2", log), log[-3000:]
    trained = weights(out)
    assert not any(".pooler." in key for key in trained)  # pooling is "mean": the encoder's pooler is not built
    assert max_difference(trained, weights(single_out)) <= DDP_ATOL
    # gradients flowed through the checkpointed text encoder (4 small SGD steps: tiny but nonzero changes)
    text = [key for key in trained if key.startswith("mmfnet.text_model.encoder.")]
    assert text and max((trained[key] - initial[key]).abs().max().item() for key in text) > 0


# ---------------------------------------------------------------------------------------------------- resume
def test_resume_from_checkpoint_is_exact(tiny_dataset, encoder_dirs, tmp_path):
    """Stop at step 3 of 4 (mid-epoch), resume: bit-identical final weights, with dropout and modality dropout on."""
    common = dict(
        dropout=0.1, modality_dropout=0.5, learning_rate=1e-3, save_strategy="steps", save_steps=3,
        report_missing_modalities="false",
    )  # fmt: skip
    full = tmp_path / "full"
    run_train(tiny_args(tiny_dataset, full, encoder_dirs["bert"], **common))
    checkpoint = full / "checkpoint-3"
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "rng_state.pth").is_file()
    resumed = tmp_path / "resumed"
    run_train(tiny_args(tiny_dataset, resumed, encoder_dirs["bert"], resume_from_checkpoint=checkpoint, **common))

    final, again = weights(full), weights(resumed)
    assert max_difference(final, weights(checkpoint)) > 1e-6, "step 4 changed nothing: the test would be vacuous"
    for name, tensor in final.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0, msg=name)
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------- frozen-encoder cache
def test_cached_embeddings_train_like_frozen_encoders(tiny_dataset, encoder_dirs, tmp_path):
    """Same losses, metrics and fusion weights whether the frozen encoders run every step or once up front."""
    common = dict(
        freeze_vision="true", freeze_text="true", freeze_audio="true", max_train_samples=16, learning_rate=1e-2,
        modality_dropout=0.3, dropout=0.1, save_strategy="steps", save_steps=4,
    )  # fmt: skip
    live = run_train(tiny_args(tiny_dataset, tmp_path / "live", encoder_dirs["bert"], **common))
    cached = run_train(
        tiny_args(tiny_dataset, tmp_path / "cached", encoder_dirs["bert"], cache_embeddings="true", **common)
    )

    def losses(folder: Path) -> list[float]:
        state = json.loads((folder / "checkpoint-4" / "trainer_state.json").read_text())
        return [entry["loss"] for entry in state["log_history"] if "loss" in entry]

    assert len(losses(tmp_path / "live")) == 4
    np.testing.assert_allclose(losses(tmp_path / "cached"), losses(tmp_path / "live"), rtol=0, atol=1e-5)
    assert cached["train_loss"] == pytest.approx(live["train_loss"], abs=1e-5)
    assert cached["test_loss"] == pytest.approx(live["test_loss"], abs=1e-5)
    assert cached["test_accuracy"] == live["test_accuracy"]
    assert max_difference(weights(tmp_path / "cached"), weights(tmp_path / "live")) <= 1e-5
    assert not any(key.startswith("test_without_") for key in cached)  # no raw inputs left to drop


def test_cache_modality_embeddings_api(tiny_dataset, encoder_dirs):
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=mm.MMFNetConvConfig(hidden_sizes=[8, 16, 16]), text=encoder_dirs["bert"], num_labels=4,
        fusion_dim=16, freeze_vision=True, freeze_text=True,
    )  # fmt: skip
    processor = mm.MMFNetProcessor(
        image_processor=mm.conv_image_processor(8, 1), tokenizer=AutoTokenizer.from_pretrained(encoder_dirs["bert"])
    )
    collator = mm.MMFNetDataCollator(processor, audio_column=None)
    data = load_from_disk(tiny_dataset)["validation"]
    model.train()
    # batches of one: some batches have no image at all, and still get a (zero) `vision_embeds` column
    cached = mm.cache_modality_embeddings(model, data, collator, batch_size=1)
    assert set(cached.column_names) == {"vision_embeds", "text_embeds", "modality_mask", "label"}
    assert model.training  # the train/eval mode is restored
    batch = mm.MMFNetEmbeddingCollator()(list(cached))
    assert batch["vision_embeds"].shape == (8, 16) and batch["text_embeds"].shape == (8, 32)
    missing_image = [i for i, image in enumerate(data["image"]) if image is None]
    assert missing_image and not batch["vision_embeds"][missing_image].any()
    model.eval()
    with torch.no_grad():
        live = model(**collator(list(data)))
        from_cache = model(**batch)
    torch.testing.assert_close(from_cache.logits, live.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(from_cache.loss, live.loss, rtol=0, atol=1e-6)
    model.mmfnet.text_model.requires_grad_(True)
    with pytest.raises(ValueError, match=r"cannot cache features of trainable encoders \['text'\]"):
        mm.cache_modality_embeddings(model, data, collator, modalities=("vision", "text"))
    # by default only the frozen modalities are cached; the trainable one keeps its raw column
    partial = mm.cache_modality_embeddings(model, data, collator)
    assert set(partial.column_names) == {"vision_embeds", "modality_mask", "label", "text"}


# ---------------------------------------------------------------------------------------------------------- peft
def test_lora_on_the_text_encoder_trains_saves_and_loads(tiny_dataset, encoder_dirs, tmp_path):
    peft = pytest.importorskip("peft")
    out = tmp_path / "lora"
    argv = tiny_args(tiny_dataset, out, encoder_dirs["bert"], audio_encoder="none", lora_modalities="text",
                     lora_rank=4, learning_rate=1e-2)  # fmt: skip
    metrics = run_train(argv)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert "text_model" in adapter_config["target_modules"] and adapter_config["r"] == 4
    assert "mmfnet.fusion" in adapter_config["modules_to_save"] and "classifier" in adapter_config["modules_to_save"]
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all("text_model" in k for k in adapter if "lora_" in k)
    assert any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero: training must have moved it"

    # a fresh base (another seed: the fusion and the seed CNN start elsewhere) plus the adapter = the trained model
    torch.manual_seed(123)
    base, _ = train.build_model_and_processor(parse(argv)[0], LABELS)
    model = peft.PeftModel.from_pretrained(base, out).eval()
    processor = AutoProcessor.from_pretrained(out)
    test = list(load_from_disk(tiny_dataset)["test"])
    with torch.no_grad():
        loss = model(**mm.MMFNetDataCollator(processor, audio_column=None)(test)).loss.item()
    assert loss == pytest.approx(metrics["test_loss"], abs=1e-5)
    # the base text encoder itself stayed as loaded from disk
    disk = AutoModel.from_pretrained(encoder_dirs["bert"]).state_dict()
    query = model.base_model.model.mmfnet.text_model.encoder.layer[0].attention.self.query
    torch.testing.assert_close(query.base_layer.weight, disk["encoder.layer.0.attention.self.query.weight"])


def test_peft_is_an_optional_extra(tmp_path):
    """Without peft the package and the example import; only --lora_modalities asks for it, with a clear error."""
    code = """
import json
import sys
import modeling_mmfnet
loaded_by_package = "peft" in sys.modules
sys.modules["peft"] = None  # as if not installed
from modeling_mmfnet import training_mmfnet as train
model = modeling_mmfnet.MMFNetForClassification.from_encoders_pretrained(
    vision=modeling_mmfnet.MMFNetConvConfig(hidden_sizes=[4]), num_labels=2, fusion_dim=8
)
try:
    train.add_lora(model, ["vision"], 4)
    message = None
except ImportError as error:
    message = str(error)
print(json.dumps({"loaded_by_package": loaded_by_package, "message": message}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded_by_package"] is False
    assert result["message"] and "pip install 'mmfnet[peft]'" in result["message"]


# ---------------------------------------------------------------------------------------------------- bad input
def _bad_dataset(tiny_dataset: Path, folder: Path, case: str) -> Path:
    data = load_from_disk(tiny_dataset)
    if case == "label_out_of_range":
        data = DatasetDict({k: v.cast_column("label", Value("int64")) for k, v in data.items()})
        data["test"] = data["test"].map(lambda row, i: {"label": 7 if i == 3 else row["label"]}, with_indices=True)
    elif case == "string_labels":
        data = DatasetDict({k: v.cast_column("label", Value("string")) for k, v in data.items()})
    elif case == "mixed_image_modes":
        data["train"] = data["train"].map(
            lambda row, i: {"image": row["image"].convert("RGB") if i == 4 and row["image"] else row["image"]},
            with_indices=True,
        )
    data.save_to_disk(folder)
    return folder


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("missing_column", {"text_column": "caption"}, r"split 'train' has no column 'caption'.*--text_column"),
        ("missing_column", {"label_column": "digit"}, r"has no column 'digit'"),
        ("label_out_of_range", {}, r"split 'test': labels must be in \[0, 4\) for the 4 classes, found 0\.\.7"),
        ("string_labels", {}, r"column 'label' holds strings.*class_encode_column"),
        ("mixed_image_modes", {}, r"split 'train': column 'image' mixes image modes \['L', 'RGB'\]"),
    ],
)
def test_bad_input_fails_before_training(case, extra, message, tiny_dataset, encoder_dirs, tmp_path, monkeypatch):
    data = tiny_dataset if case == "missing_column" else _bad_dataset(tiny_dataset, tmp_path / "data", case)

    def no_model(*args, **kwargs):
        raise AssertionError("the bad input was not caught before building the model and training")

    monkeypatch.setattr(train, "build_model", no_model)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run_train(tiny_args(data, out, encoder_dirs["bert"], **extra))
    assert not (out / "model.safetensors").exists()


def test_class_names_come_from_the_class_label_else_from_the_label_values(tiny_dataset, tmp_path):
    """A ClassLabel names the classes, even one that no split holds; a plain int column is named by its values."""
    data = load_from_disk(tiny_dataset)
    data_args = parse(tiny_args(tiny_dataset, tmp_path / "out"))[1]
    names = [*LABELS, "four"]
    five = DatasetDict({k: v.cast_column("label", ClassLabel(names=names)) for k, v in data.items()})
    assert train.check_data(five, data_args, ("text",), ["train", "test"]) == names
    plain = DatasetDict({k: v.cast_column("label", Value("int64")) for k, v in data.items()})
    assert train.check_data(plain, data_args, ("text",), ["train", "test"]) == ["0", "1", "2", "3"]


def test_image_modes_are_checked_on_every_image_without_decoding(tmp_path):
    """An odd image far down the split is caught; the modes come from the file headers."""
    from datasets import Dataset, Image
    from PIL import Image as PILImage

    images = [PILImage.new("L", (8, 8), color=i) for i in range(300)] + [PILImage.new("RGB", (8, 8)), None]
    dataset = Dataset.from_dict({"image": images}).cast_column("image", Image())
    assert train.image_modes(dataset, "image") == {"L", "RGB"}
    assert train.image_modes(dataset.select(range(300)), "image") == {"L"}
