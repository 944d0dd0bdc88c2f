"""examples/train.py on a user's own data: defaults, what is read from the data, and the training options.

Real Trainer runs of a few steps on toy datasets made here: train+test splits only, RGB 64×64 images, 16 kHz audio
(in one process and under `torchrun`), plus the README's fine-tuning command as written.
"""

import dataclasses
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_dataset
from datasets import load_from_disk
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor, Trainer, TrainingArguments

import modeling_mmfnet as mm
from modeling_mmfnet import training_mmfnet as train
from modeling_mmfnet.augmentation_mmfnet import mask_spectrograms, shift_and_flip_images

REPO = Path(__file__).resolve().parents[1]


def small_run(data: Path, output_dir: Path, **overrides) -> list[str]:
    """A few CPU steps of seed-CNN vision and audio (no text) with the script's own defaults otherwise."""
    options = {
        "dataset": data, "output_dir": output_dir, "vision_encoder": "conv", "audio_encoder": "conv",
        "conv_hidden_sizes": "4,8", "fusion_dim": 8, "fusion_hidden_dim": 16, "num_mel_bins": 16,
        "max_steps": 2, "max_train_samples": 8, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
        "report_to": "none", "disable_tqdm": "true", "use_cpu": "true", "dataloader_num_workers": 0,
        "report_missing_modalities": "false", **overrides,
    }  # fmt: skip
    return [arg for key, value in options.items() if value is not None for arg in (f"--{key}", str(value))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_train(argv: list[str]) -> dict[str, float]:
    return train.run(*train.parse_args(argv))


def no_model(*args, **kwargs):
    raise AssertionError("the problem was not caught before building the model")


def subprocess_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }


@pytest.fixture(scope="module")
def train_test_only(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tt") / "data", sizes={"train": 24, "test": 8})


@pytest.fixture(scope="module")
def rgb_16k(tmp_path_factory) -> Path:
    """RGB 64×64 images and 16 kHz audio, the common formats of users' data."""
    folder = tmp_path_factory.mktemp("rgb16k") / "data"
    return make_tiny_dataset(folder, sizes={"train": 8, "validation": 4, "test": 4}, image_side=64,
                             image_mode="RGB", sampling_rate=16000)  # fmt: skip


# ------------------------------------------------------------------------------------------- defaults, README
def readme_training_command() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Fine-tuning with the Trainer") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return block.replace("\\\n", " ").strip()


def test_readme_finetuning_command_trains_as_written(tiny_dataset, tmp_path):
    """The README's command, run by bash as written (real MiniLM included), on the toy data with a step limit."""
    command = readme_training_command()
    assert command.startswith("python examples/train.py") and "--do_train" not in command
    dataset = re.search(r"--dataset (\S+)", command).group(1)
    output = re.search(r"--output_dir (\S+)", command).group(1)
    out = tmp_path / "out"
    command = command.replace(f"--dataset {dataset}", f"--dataset {shlex.quote(str(tiny_dataset))}")
    command = command.replace(f"--output_dir {output}", f"--output_dir {shlex.quote(str(out))}")
    command += " --max_steps 2 --max_train_samples 8 --per_device_eval_batch_size 8 --use_cpu true"
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "mel filter" not in proc.stderr  # the spectrogram's mel range fits the 8 kHz clips
    results = json.loads((out / "mmfnet_results.json").read_text())
    assert np.isfinite(results["train_loss"]) and "test_accuracy" in results
    # evaluated every epoch (8 rows, batch 64: one step each), the best validation epoch kept and saved
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    accuracies = {e["step"]: e["eval_accuracy"] for e in state["log_history"] if "eval_accuracy" in e}
    assert set(accuracies) == {1, 2}
    assert state["best_metric"] == max(accuracies.values())
    best = results["best_checkpoint_step"]
    assert accuracies[best] == state["best_metric"]
    final, kept = load_file(out / "model.safetensors"), load_file(out / f"checkpoint-{best}" / "model.safetensors")
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)


def test_a_run_that_trains_nothing_says_so_and_fails(tiny_dataset, tmp_path):
    proc = subprocess.run(
        [sys.executable, "examples/train.py", *small_run(tiny_dataset, tmp_path / "a", do_train="false",
                                                        eval_strategy="no", save_strategy="no")],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "nothing to do: --do_train false trains nothing" in proc.stderr
    assert not (tmp_path / "a" / "mmfnet_results.json").exists()
    with pytest.raises(RuntimeError, match="the run trained 0 steps"):
        run_train(small_run(tiny_dataset, tmp_path / "b", max_steps=None, num_train_epochs=0, eval_strategy="no"))
    with pytest.raises(ValueError, match="evaluates a trained model: give it with --model_name_or_path"):
        run_train(small_run(tiny_dataset, tmp_path / "c", do_train="false", do_eval="true"))


def test_evaluation_alone_of_a_trained_model(tiny_dataset, tmp_path, caplog):
    trained = run_train(small_run(tiny_dataset, tmp_path / "trained", eval_strategy="no", save_strategy="no"))
    argv = small_run(tiny_dataset, tmp_path / "eval", do_train="false", do_eval="true",
                     model_name_or_path=tmp_path / "trained", vision_encoder="none", audio_encoder="none")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="modeling_mmfnet.training_mmfnet"):
        assert train.main(argv) == 0
    # the model-building flags small_run passes describe the saved model instead: named, not silently ignored
    (warning,) = [r.getMessage() for r in caplog.records if "is loaded as saved" in r.getMessage()]
    assert "--fusion_dim, --fusion_hidden_dim, --conv_hidden_sizes, --num_mel_bins (which build" in warning
    assert "--vision_encoder" not in warning and "--model_name_or_path" not in warning.split(":")[1]
    evaluated = json.loads((tmp_path / "eval" / "mmfnet_results.json").read_text())
    assert not any(key.startswith("train") for key in evaluated)
    for key in ("test_loss", "test_accuracy", "test_macro_f1"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6)


# --------------------------------------------------------------------------------------------- train + test only
def test_the_script_reports_bad_arguments_without_a_traceback(train_test_only, tmp_path):
    """`examples/train.py` on data that does not fit: the check's message, exit status 2, no Python traceback."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), *small_run(train_test_only, tmp_path / "out")],
        env=subprocess_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "train.py: error: the dataset has no 'validation' split" in proc.stderr
    assert "--validation_split_percentage" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()
    debug = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), *small_run(train_test_only, tmp_path / "out"),
         "--log_level", "debug"],
        env=subprocess_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # asked for: the traceback is logged


def test_train_and_test_splits_only(train_test_only, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(train, "build_model", no_model)
        with pytest.raises(ValueError, match=r"no 'validation' split.*--eval_split.*--validation_split_percentage"):
            run_train(small_run(train_test_only, tmp_path / "a"))
    # the carved split: 25 % of train, disjoint from what is left, the same on every call (and every rank)
    data_args = train.parse_args(small_run(train_test_only, tmp_path / "b", validation_split_percentage=25))[1]
    data_args.max_train_samples = None
    carved = train.load_data(data_args, seed=3, carve_validation=True)
    assert (len(carved["train"]), len(carved["validation"])) == (18, 6)
    again = train.load_data(data_args, seed=3, carve_validation=True)
    rows = [tuple(np.asarray(r["audio"] or [0.0])[:4]) + (r["label"],) for r in carved["validation"]]
    assert rows == [tuple(np.asarray(r["audio"] or [0.0])[:4]) + (r["label"],) for r in again["validation"]]
    assert not set(rows) & {tuple(np.asarray(r["audio"] or [0.0])[:4]) + (r["label"],) for r in carved["train"]}
    # and a run evaluates on it every epoch
    out = tmp_path / "run"
    results = run_train(small_run(train_test_only, out, validation_split_percentage=25, max_steps=4))
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_accuracy" in e] == [2, 4]
    assert "test_accuracy" in results


# ------------------------------------------------------------------------------------- what comes from the data
def test_rgb_64px_images_and_16khz_audio_are_read_from_the_data(rgb_16k, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger=train.__name__), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the mel-filter warning included
        run_train(small_run(rgb_16k, out, eval_strategy="no", save_strategy="no"))
    assert "images: RGB, 64×64 (all) → 3 channel(s)" in caplog.text
    data = load_from_disk(rgb_16k)
    clips = sum(audio is not None for split in ("train", "test") for audio in data[split]["audio"])
    assert f"audio: {clips} clips at 16000 Hz" in caplog.text  # every clip of the splits the run uses
    processor = AutoProcessor.from_pretrained(out)
    assert (
        processor.image_processor.size == {"height": 64, "width": 64}
        and len(processor.image_processor.image_mean) == 3
    )
    extractor = processor.feature_extractor
    assert isinstance(extractor, mm.MMFNetSpectrogramExtractor) and extractor.sampling_rate == 16000
    assert extractor.max_frequency == 8000 and (extractor.mel_filters.max(0) > 0).all()
    config = mm.MMFNetForClassification.from_pretrained(out).config
    assert config.vision_config.num_channels == 3
    row = load_from_disk(rgb_16k)["test"][0]
    batch = mm.MMFNetDataCollator(processor)([row])
    assert batch["pixel_values"].shape == (1, 3, 64, 64)


def test_conv_image_processor_reads_colour_images_as_grey_or_rgb():
    from PIL import Image as PILImage

    colour = PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3)).astype("uint8"), "RGB")
    grey = mm.MMFNetProcessor(image_processor=mm.conv_image_processor(8, 1))
    torch.testing.assert_close(
        grey(images=[colour])["pixel_values"], grey(images=[colour.convert("L")])["pixel_values"]
    )
    rgb = mm.MMFNetProcessor(image_processor=mm.conv_image_processor((8, 6), 3))(images=[colour])
    assert rgb["pixel_values"].shape == (1, 3, 8, 6)
    with pytest.raises(ValueError, match="`num_channels` must be 1 .* or 3"):
        mm.conv_image_processor(8, 2)


def test_spectrogram_mel_range_fits_the_sampling_rate(tmp_path):
    for rate in (8000, 16000, 22050):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            extractor = mm.conv_spectrogram_extractor(sampling_rate=rate, num_mel_bins=40)
        assert extractor.max_frequency == rate / 2 and (extractor.mel_filters.max(0) > 0).all(), rate
    extractor.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        reloaded = mm.MMFNetSpectrogramExtractor.from_pretrained(tmp_path)
    np.testing.assert_array_equal(reloaded.mel_filters, extractor.mel_filters)
    with pytest.raises(ValueError, match=r"`max_frequency` must be in \(0, sampling_rate / 2 = 4000\] Hz"):
        mm.MMFNetSpectrogramExtractor(sampling_rate=8000, max_frequency=8000)


def test_mixed_rates_fail_before_the_model_unless_resampled(tmp_path, monkeypatch):
    data = make_tiny_dataset(tmp_path / "data", sizes={"train": 8, "validation": 4, "test": 4},
                             sampling_rate={"train": 16000, "validation": 16000, "test": 8000})  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(train, "build_model", no_model)
        with pytest.raises(ValueError, match=r"mixes sampling rates \(10 clips at 16000 Hz, 3 clips at 8000 Hz\); "
                                             r"pass --resample_audio_to 16000"):  # fmt: skip
            run_train(small_run(data, tmp_path / "a"))
    out = tmp_path / "b"
    run_train(small_run(data, out, resample_audio_to=16000, eval_strategy="no", save_strategy="no"))
    assert AutoProcessor.from_pretrained(out).feature_extractor.sampling_rate == 16000


def test_pretrained_audio_encoder_rate_is_checked_before_the_model(rgb_16k, encoder_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "build_model", no_model)
    argv = small_run(rgb_16k, tmp_path / "a", vision_encoder="none", audio_encoder=encoder_dirs["wav2vec2"])
    with pytest.raises(ValueError, match=r"16000 Hz but the audio encoder's .* expects 8000 Hz: pass "
                                         r"--resample_audio_to 8000"):  # fmt: skip
        run_train(argv)


def test_resampling_keeps_the_tone():
    rate, target = 8000, 16000
    tone = np.sin(2 * np.pi * 500 * np.arange(rate) / rate).astype("float32")
    collator = mm.MMFNetDataCollator(mm.MMFNetProcessor(feature_extractor=mm.conv_spectrogram_extractor(target)),
                                     image_column=None, text_column=None, resample_to=target)  # fmt: skip
    resampled = mm.processing_mmfnet.resample(tone, rate, target)
    assert len(resampled) == target and np.argmax(np.abs(np.fft.rfft(resampled))) == 500  # 1 s: bin = Hz
    batch = collator([{"audio": tone, "sampling_rate": rate, "label": 0}])
    direct = collator.processor(audio=[resampled], sampling_rate=target)
    torch.testing.assert_close(batch["input_features"], direct["input_features"])


def test_audio_rates_under_torchrun(rgb_16k, tmp_path):
    """Two processes read the 16 kHz rate from the data on each rank before building, and train."""
    out = tmp_path / "ddp"
    argv = small_run(rgb_16k, out, eval_strategy="no", save_strategy="no", per_device_train_batch_size=2)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "examples/train.py", *argv]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    clips = sum(audio is not None for split in ("train", "test") for audio in load_from_disk(rgb_16k)[split]["audio"])
    assert log.count(f"audio: {clips} clips at 16000 Hz") == 2 and "mel filter" not in log
    assert "process 0 of 2" in log and "process 1 of 2" in log
    assert AutoProcessor.from_pretrained(out).feature_extractor.sampling_rate == 16000


# ---------------------------------------------------------------------------------------------------- options
def test_encoder_learning_rate_is_a_parameter_group(tiny_dataset, encoder_dirs, tmp_path):
    """Encoders at lr 0 stay exactly as loaded while the fusion and head train at --learning_rate."""
    out = tmp_path / "out"
    run_train(small_run(tiny_dataset, out, text_encoder=encoder_dirs["bert"], learning_rate=1e-2,
                        encoder_learning_rate=0.0, eval_strategy="no", save_strategy="no"))  # fmt: skip
    trained = load_file(out / "model.safetensors")
    disk = AutoModel.from_pretrained(encoder_dirs["bert"]).state_dict()
    for name, tensor in disk.items():
        if f"mmfnet.text_model.{name}" in trained:
            torch.testing.assert_close(trained[f"mmfnet.text_model.{name}"], tensor, rtol=0, atol=0)
    base = mm.MMFNetForClassification.from_pretrained(out)
    assert base.config.num_labels == 4
    # the Trainer's own optimizer and decay groups, split by encoder
    model = train.build_model(train.parse_args(small_run(tiny_dataset, out, text_encoder=encoder_dirs["bert"]))[0],
                              ["a", "b", "c", "d"])  # fmt: skip
    args = train.MMFNetTrainingArguments(output_dir=str(tmp_path / "o"), learning_rate=1e-3, weight_decay=0.1,
                                         encoder_learning_rate=1e-5, use_cpu=True, report_to="none",
                                         eval_strategy="no")  # fmt: skip
    optimizer = train.MMFNetTrainer(model=model, args=args).create_optimizer()
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault((group["lr"], group["weight_decay"]), set()).update(id(p) for p in group["params"])
    encoder_ids = {id(p) for n, p in model.named_parameters() if re.match(r"mmfnet\.(vision|text|audio)_model\.", n)}
    assert set(by_lr) == {(1e-3, 0.1), (1e-3, 0.0), (1e-5, 0.1), (1e-5, 0.0)}
    assert by_lr[(1e-5, 0.1)] | by_lr[(1e-5, 0.0)] == encoder_ids
    assert sum(len(ids) for ids in by_lr.values()) == len(list(model.parameters()))


def test_augmentation_applies_in_training_only(tiny_dataset):
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=mm.MMFNetConvConfig(hidden_sizes=[4]), audio=mm.MMFNetConvConfig(hidden_sizes=[4]), num_labels=4,
        fusion_dim=8, dropout=0.0, augment_image_shift=0.25, augment_image_flip=0.5, augment_time_mask=0.2,
        augment_frequency_mask=0.2,
    )  # fmt: skip
    processor = mm.MMFNetProcessor(
        image_processor=mm.conv_image_processor(8), feature_extractor=mm.conv_spectrogram_extractor(num_mel_bins=16)
    )
    rows = [r for r in load_from_disk(tiny_dataset)["train"] if r["image"] is not None and r["audio"] is not None]
    batch = mm.MMFNetDataCollator(processor, text_column=None)(rows)
    seen = {}
    model.mmfnet.vision_model.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(pixels=kwargs["pixel_values"]), with_kwargs=True
    )
    model.mmfnet.audio_model.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(mel=kwargs["input_features"]), with_kwargs=True
    )
    model.eval()
    with torch.no_grad():
        eval_logits = model(**batch).logits
    assert torch.equal(seen["pixels"], batch["pixel_values"]) and torch.equal(seen["mel"], batch["input_features"])
    model.train()
    with torch.no_grad():
        model(**batch)
    assert not torch.equal(seen["pixels"], batch["pixel_values"]) and not torch.equal(
        seen["mel"], batch["input_features"]
    )
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, eval_logits, rtol=0, atol=0)
    model.train()  # a badly shaped input still gets the model's own clear error, augmentation on or not
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(batch, channels, height, width\)"):
        model(pixel_values=batch["pixel_values"][0], input_features=batch["input_features"])


def test_image_shift_is_an_edge_padded_crop_and_flip_mirrors():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    torch.manual_seed(0)
    shifted = shift_and_flip_images(images, max_shift=0.25)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    for b in range(2):
        crops = [padded[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(shifted[b], crop) for crop in crops)
    assert torch.equal(shift_and_flip_images(images, flip_prob=1.0), images.flip(-1))
    assert torch.equal(shift_and_flip_images(images), images)


def test_spectrogram_masks_set_bands_to_the_clip_mean_inside_valid_frames():
    torch.manual_seed(0)
    features = torch.randn(4, 16, 50)
    valid = torch.ones(4, 50, dtype=torch.long)
    valid[:, 30:] = 0
    masked = mask_spectrograms(features, time_mask=0.2, frequency_mask=0.25, num_masks=2, attention_mask=valid)
    changed = masked != features
    assert changed.any() and not changed[:, :, 30:].any()  # padding frames untouched
    for b in range(4):
        mean = features[b, :, :30].mean()
        torch.testing.assert_close(masked[b][changed[b]], mean.expand(int(changed[b].sum())))
        full_frames = changed[b].all(0).sum()  # time bands: every bin of a frame
        assert full_frames <= 2 * (0.2 * 30 + 1)


def test_augmentation_flags_reach_the_config(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    run_train(small_run(tiny_dataset, out, augment_image_shift=0.125, augment_time_mask=0.1, eval_strategy="no",
                        save_strategy="no"))  # fmt: skip
    config = mm.MMFNetConfig.from_pretrained(out)
    assert (config.augment_image_shift, config.augment_time_mask, config.augment_image_flip) == (0.125, 0.1, 0.0)
    with pytest.raises((ValueError, StrictDataclassError), match=r"`augment_image_flip` must be a number in"):
        mm.MMFNetConfig(vision_config=mm.MMFNetConvConfig(), augment_image_flip=1.5)


def test_modality_balance_and_conv_backbone_flags_reach_the_saved_model(tiny_dataset, tmp_path):
    """`--modality_balance` and the `--conv_*` backbone flags: a short run, then the saved model read back."""
    out = tmp_path / "out"
    metrics = run_train(small_run(
        tiny_dataset, out, modality_balance="ogm_ge", modality_balance_alpha=0.3, aux_unimodal_weight=1,
        conv_normalization="batch", conv_convs_per_block=2, conv_global_pooling="average", eval_strategy="no",
        save_strategy="no",
    ))  # fmt: skip
    assert np.isfinite(metrics["test_loss"])
    model = mm.MMFNetForClassification.from_pretrained(out)
    config = model.config
    assert (config.modality_balance, config.modality_balance_alpha, config.aux_unimodal_weight) == ("ogm_ge", 0.3, 1)
    for modality in ("vision", "audio"):  # both seed CNNs get the backbone flags
        conv = getattr(config, f"{modality}_config")
        assert (conv.normalization, conv.convs_per_block, conv.global_pooling) == ("batch", 2, "average")
        encoder = getattr(model.mmfnet, f"{modality}_model")
        layers = list(encoder.modules())
        assert sum(isinstance(m, torch.nn.Conv2d) for m in layers) == 2 * 2  # 2 blocks × 2 convolutions
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in layers) == 4
        assert not any(isinstance(m, torch.nn.GroupNorm) for m in layers)
    pixels = torch.randn(2, config.vision_config.num_channels, 8, 8)  # the tiny dataset's 8×8 images
    tokens = model.eval().mmfnet.vision_model(pixel_values=pixels).last_hidden_state
    assert tokens.shape == (2, 1, 8)  # global pooling: one token of the last block's 8 channels


def test_the_default_conv_flags_keep_the_seed_cnn(tiny_dataset):
    model_args = train.parse_args(small_run(tiny_dataset, "unused"))[0]
    built = train.build_model(model_args, ["a", "b"], image_channels=1)
    assert built.config.vision_config.to_diff_dict() == mm.MMFNetConvConfig(hidden_sizes=[4, 8]).to_diff_dict()
    assert built.config.modality_balance == "none"


def exit_status(argv: list[str]) -> int:
    try:
        return train.main(argv)
    except SystemExit as exit:  # argparse's own checks (a value outside the choices)
        return exit.code


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"modality_balance": "ogm_ge"}, "--modality_balance ogm_ge compares the modalities through their auxiliary "
         "unimodal heads: it needs --aux_unimodal_weight > 0 (got 0.0)"),
        ({"modality_balance": "ogm", "aux_unimodal_weight": 1, "audio_encoder": "none"},
         "at least two of --vision_encoder, --text_encoder, --audio_encoder (got ['vision'])"),
        ({"modality_balance": "gradblend"}, "--modality_balance/--modality-balance: invalid choice: 'gradblend'"),
        ({"conv_normalization": "layer"}, "--conv_normalization/--conv-normalization: invalid choice: 'layer'"),
        ({"conv_global_pooling": "mean"}, "--conv_global_pooling/--conv-global-pooling: invalid choice: 'mean'"),
        ({"conv_convs_per_block": 0}, "--conv_convs_per_block must be an integer >= 1, got 0."),
        ({"modality_balance_alpha": -1}, "--modality_balance_alpha must be >= 0, got -1.0."),
        ({"dropout": 1.5}, "`dropout` must be a number in [0.0, 1.0), got 1.5"),  # the config's own check
    ],
)  # fmt: skip
def test_bad_balance_and_conv_flags_exit_2_naming_the_flag(overrides, message, tiny_dataset, tmp_path, capsys):
    assert exit_status(small_run(tiny_dataset, tmp_path / "out", **overrides)) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_json_argument_file_is_checked_like_the_command_line(tiny_dataset, tmp_path, capsys):
    """HfArgumentParser's JSON path skips argparse's choices: `ModelArguments` checks them itself."""
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps({"dataset": str(tiny_dataset), "output_dir": str(tmp_path / "out"),
                                     "vision_encoder": "conv", "conv_global_pooling": "mean"}))  # fmt: skip
    assert exit_status([str(arguments)]) == 2
    assert "--conv_global_pooling must be one of none, average, max; got 'mean'." in capsys.readouterr().err


def test_caching_the_frozen_modality_while_the_others_train(tiny_dataset, encoder_dirs, tmp_path):
    """Frozen text cached, seed CNNs training: the same run as with the text encoder live, without running it."""
    common = dict(text_encoder=encoder_dirs["bert"], freeze_text="true", eval_strategy="no", save_strategy="steps",
                  save_steps=2, learning_rate=1e-2, dropout=0.1, modality_dropout=0.3, optim="sgd")  # fmt: skip
    # SGD: Adam would turn rounding noise on a zero-gradient conv bias (before GroupNorm) into full ±lr steps
    live = run_train(small_run(tiny_dataset, tmp_path / "live", **common))
    cached = run_train(small_run(tiny_dataset, tmp_path / "cached", cache_embeddings="true", **common))

    def losses(folder: Path) -> list[float]:
        state = json.loads((folder / "checkpoint-2" / "trainer_state.json").read_text())
        return [entry["loss"] for entry in state["log_history"] if "loss" in entry]

    np.testing.assert_allclose(losses(tmp_path / "cached"), losses(tmp_path / "live"), rtol=0, atol=1e-5)
    assert cached["test_loss"] == pytest.approx(live["test_loss"], abs=1e-5)
    live_weights, cached_weights = (
        load_file(tmp_path / "live" / "model.safetensors"),
        load_file(tmp_path / "cached" / "model.safetensors"),
    )
    assert max((live_weights[k] - cached_weights[k]).abs().max().item() for k in live_weights) <= 1e-5
    assert any("vision_model" in k for k in live_weights)  # the seed CNNs trained in both runs

    # the collator: cached text features plus raw images and audio, one presence mask; the text encoder never runs
    model = mm.MMFNetForClassification.from_pretrained(tmp_path / "cached").eval()
    assert not any(p.requires_grad for p in model.mmfnet.text_model.parameters())  # still frozen after loading
    processor = AutoProcessor.from_pretrained(tmp_path / "cached")
    collator = mm.MMFNetDataCollator(processor)
    data = load_from_disk(tiny_dataset)["test"]
    embeddings = mm.cache_modality_embeddings(model, data, collator)
    assert {"text_embeds", "image", "audio", "sampling_rate", "label"} <= set(embeddings.column_names)
    batch = mm.MMFNetEmbeddingCollator(collator=collator)(list(embeddings))
    assert {"text_embeds", "pixel_values", "input_features"} <= set(batch)
    calls = []
    model.mmfnet.text_model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        from_cache = model(**batch)
        assert not calls
        live_out = model(**collator(list(data)))
    torch.testing.assert_close(from_cache.logits, live_out.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(batch["modality_mask"], collator(list(data))["modality_mask"])


def test_compute_metrics_gets_the_logits_unless_asked(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=mm.MMFNetConvConfig(hidden_sizes=[4]), num_labels=4, fusion_dim=8, aux_unimodal_weight=0.5
    )
    collator = mm.MMFNetDataCollator(mm.MMFNetProcessor(image_processor=mm.conv_image_processor(8)),
                                     text_column=None, audio_column=None)  # fmt: skip
    data = load_from_disk(tiny_dataset)["test"].filter(lambda row: row["image"] is not None)
    seen = []

    def compute_metrics(prediction):
        seen.append(prediction.predictions)
        return {}

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_eval_batch_size=4,
                             remove_unused_columns=False, dataloader_pin_memory=False)  # fmt: skip
    trainer = Trainer(model=model, args=args, data_collator=collator, compute_metrics=compute_metrics)
    trainer.evaluate(data)
    assert isinstance(seen[-1], np.ndarray) and seen[-1].shape == (len(data), 4)
    everything = trainer.predict(data, ignore_keys=[]).predictions  # on request: every output
    assert isinstance(everything, tuple) and len(everything) == 6  # + vision_model_output
    assert everything[1].shape == (len(data), 8) and everything[4].shape == (len(data), 1, 4)


def test_trainable_only_checkpoints_resume_exactly(tiny_dataset, encoder_dirs, tmp_path):
    common = dict(text_encoder=encoder_dirs["bert"], freeze_text="true", eval_strategy="no", save_strategy="steps",
                  save_steps=2, max_steps=4, checkpoint_trainable_only="true", learning_rate=1e-2)  # fmt: skip
    full = tmp_path / "full"
    run_train(small_run(tiny_dataset, full, **common))
    checkpoint = load_file(full / "checkpoint-2" / "model.safetensors")
    final = load_file(full / "model.safetensors")
    frozen = {k for k in final if k.startswith("mmfnet.text_model.")}
    assert frozen and not frozen & set(checkpoint)  # the checkpoint leaves the frozen encoder out
    assert set(checkpoint) == set(final) - frozen  # and keeps everything else
    resumed = tmp_path / "resumed"
    run_train(small_run(tiny_dataset, resumed, resume_from_checkpoint=full / "checkpoint-2", **common))
    again = load_file(resumed / "model.safetensors")
    assert again.keys() == final.keys()
    for name, tensor in final.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------------------------------- --unimodal_first
def test_unimodal_first_trains_each_encoder_alone_then_fuses_them(tiny_dataset, tmp_path, monkeypatch, caplog):
    """Each seed CNN trained alone in `_unimodal-{modality}`, the fused model built from those trained encoders."""
    built = []  # (modalities, encoder weights at build time) of every model the run builds
    build_model = train.build_model

    def spy(*args, **kwargs):
        model = build_model(*args, **kwargs)
        weights = {m: {k: v.clone() for k, v in getattr(model.mmfnet, f"{m}_model").state_dict().items()}
                   for m in model.config.modalities}  # fmt: skip
        built.append((model.config.modalities, weights))
        return model

    monkeypatch.setattr(train, "build_model", spy)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger=train.logger.name):
        metrics = run_train(small_run(tiny_dataset, out, unimodal_first="true", modality_dropout=0.2))
    assert [modalities for modalities, _ in built] == [("vision",), ("audio",), ("vision", "audio")]
    fused_start = built[-1][1]
    for index, modality in enumerate(("vision", "audio"), start=1):
        folder = out / f"_unimodal-{modality}"
        assert f"unimodal-first: training the {modality} encoder alone ({index}/2)" in caplog.text
        assert f"unimodal-first: the {modality} encoder alone scores eval_accuracy" in caplog.text
        results = json.loads((folder / "mmfnet_results.json").read_text())
        assert np.isfinite(results["train_loss"]) and 0 <= results["eval_accuracy"] <= 1
        single = mm.MMFNetForClassification.from_pretrained(folder)
        assert single.config.modalities == (modality,) and single.config.modality_dropout == 0.0
        assert AutoProcessor.from_pretrained(folder) is not None
        # the fused model started from the trained encoder: the weights saved alone, exactly
        trained = getattr(single.mmfnet, f"{modality}_model").state_dict()
        assert trained.keys() == fused_start[modality].keys()
        assert all(torch.equal(trained[k], fused_start[modality][k]) for k in trained)
        initial = built[index - 1][1][modality]  # the branch's random start: training changed it
        assert not all(torch.equal(initial[k], trained[k]) for k in trained)
    fused = mm.MMFNetForClassification.from_pretrained(out)
    assert fused.config.modalities == ("vision", "audio") and fused.config.modality_dropout == 0.2
    for modality in ("vision", "audio"):
        recorded = getattr(fused.config, f"{modality}_encoder_name")
        assert recorded == str(out / f"_unimodal-{modality}") and Path(recorded).is_dir()
    assert np.isfinite(metrics["test_loss"]) and "fused model built from the trained vision, audio" in caplog.text


def test_build_model_uses_the_trained_encoders_as_given(tiny_dataset):
    model_args = train.parse_args(small_run(tiny_dataset, "unused"))[0]
    single = train.build_model(dataclasses.replace(model_args, audio_encoder="none"), ["a", "b"], image_channels=1)
    encoder = single.mmfnet.vision_model
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(1.0)  # no longer what a fresh seed CNN would start from
    expected = {k: v.clone() for k, v in encoder.state_dict().items()}
    fused = train.build_model(model_args, ["a", "b"], 1, {"vision": encoder}, {"vision": "out/_unimodal-vision"})
    got = fused.mmfnet.vision_model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert fused.config.vision_encoder_name == "out/_unimodal-vision" and fused.config.audio_encoder_name is None
    with pytest.raises(ValueError, match=r"trained_encoders has \['text'\], which the encoder flags leave out"):
        train.build_model(model_args, ["a", "b"], 1, {"text": encoder})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"unimodal_first": "true", "audio_encoder": "none"}, "--unimodal_first trains each branch alone before "
         "fusing them: it needs at least two of --vision_encoder, --text_encoder, --audio_encoder (got ['vision'])"),
        ({"unimodal_first": "true", "model_name_or_path": "trained/mmfnet"}, "--unimodal_first trains the encoders "
         "given by --vision_encoder / --text_encoder / --audio_encoder alone before fusing them; it cannot start "
         "from --model_name_or_path 'trained/mmfnet'."),
        ({"unimodal_first": "true", "vision_encoder": "org/vit", "audio_encoder": "org/wav2vec2",
          "freeze_vision": "true", "freeze_audio": "true"}, "--unimodal_first has no encoder to train alone"),
        ({"unimodal_first": "true", "lora_modalities": "vision"}, "--unimodal_first does not combine with "
         "--lora_modalities"),
    ],
)  # fmt: skip
def test_bad_unimodal_first_exits_2_naming_the_flag(overrides, message, tiny_dataset, tmp_path, capsys):
    assert exit_status(small_run(tiny_dataset, tmp_path / "out", **overrides)) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_unimodal_first_with_frozen_seed_cnns_trains_only_the_fusion_on_them(tiny_dataset, tmp_path):
    """The main job's recipe: seed CNNs trained alone, then frozen (and cached) while the fusion trains."""
    out = tmp_path / "out"
    run_train(small_run(tiny_dataset, out, unimodal_first="true", freeze_vision="true", freeze_audio="true",
                        cache_embeddings="true"))  # fmt: skip
    fused = load_file(out / "model.safetensors")
    for modality in ("vision", "audio"):
        alone = load_file(out / f"_unimodal-{modality}" / "model.safetensors")
        encoder = [k for k in alone if k.startswith(f"mmfnet.{modality}_model.")]
        assert encoder and all(torch.equal(fused[k], alone[k]) for k in encoder)
        assert not torch.equal(fused["classifier.weight"], alone["classifier.weight"])  # the head is the fused one


def test_unimodal_first_trains_a_pretrained_encoder_alone_unless_frozen(tiny_dataset, encoder_dirs, tmp_path, caplog):
    """A trainable pretrained encoder is trained alone and keeps its source as name; a frozen one is not trained."""
    bert = str(encoder_dirs["bert"])
    trains = tmp_path / "trains"
    with caplog.at_level(logging.INFO, logger=train.logger.name):
        run_train(small_run(tiny_dataset, trains, text_encoder=bert, audio_encoder="none", unimodal_first="true"))
    assert "training the text encoder alone (2/2)" in caplog.text
    assert (trains / "_unimodal-text" / "config.json").is_file()
    config = mm.MMFNetConfig.from_pretrained(trains)
    assert (config.text_encoder_name, config.vision_encoder_name) == (bert, str(trains / "_unimodal-vision"))

    frozen = tmp_path / "frozen"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=train.logger.name):
        run_train(small_run(tiny_dataset, frozen, text_encoder=bert, audio_encoder="none", freeze_text="true",
                            unimodal_first="true"))  # fmt: skip
    assert "training the vision encoder alone (1/1)" in caplog.text and "text encoder alone" not in caplog.text
    assert sorted(p.name for p in frozen.glob("_unimodal-*")) == ["_unimodal-vision"]
    fused, original = load_file(frozen / "model.safetensors"), load_file(encoder_dirs["bert"] / "model.safetensors")
    shared = [k for k in original if f"mmfnet.text_model.{k}" in fused]  # the pooler is dropped
    assert len(shared) > 10 and all(torch.equal(fused[f"mmfnet.text_model.{k}"], original[k]) for k in shared)
