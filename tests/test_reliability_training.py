"""Issue 14, training runs: empty splits, undecodable images naming the row, and resuming from damaged Trainer
checkpoints (the damaged file is named; `true` falls back to the newest intact checkpoint and says so)."""

import io
import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_bert
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from transformers import Trainer, TrainingArguments

import modeling_mmfnet as mm
from modeling_mmfnet import checkpoints_mmfnet as ckpt


def _trainer(output_dir, max_steps: int) -> Trainer:
    torch.manual_seed(0)
    config = mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim=16, fusion_hidden_dim=32, num_labels=2)
    model = mm.MMFNetForClassification(config)
    rng = np.random.default_rng(0)
    data = Dataset.from_dict(
        {"text_embeds": rng.standard_normal((16, 32)).astype("float32").tolist(), "labels": [0, 1] * 8}
    )
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, save_steps=2, per_device_train_batch_size=4,
        report_to=[], use_cpu=True, dataloader_pin_memory=False, learning_rate=1e-2, seed=0,
    )  # fmt: skip
    return Trainer(model=model, args=args, train_dataset=data)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real Trainer run with checkpoint-2 and checkpoint-4 (weights, optimizer, scheduler, RNG, state)."""
    folder = tmp_path_factory.mktemp("run")
    _trainer(folder, 4).train()
    assert {p.name for p in folder.iterdir()} >= {"checkpoint-2", "checkpoint-4"}
    return folder


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


DAMAGE = [
    ("weights_truncated", "model.safetensors", _truncate, r"model.safetensors' is truncated"),
    ("optimizer_truncated", "optimizer.pt", _truncate, r"optimizer.pt' is corrupt or truncated"),
    ("optimizer_garbled", "optimizer.pt", _garble, r"optimizer.pt' is corrupt"),
    ("scheduler_truncated", "scheduler.pt", _truncate, r"scheduler.pt' is corrupt or truncated"),
    ("rng_truncated", "rng_state.pth", _truncate, r"rng_state.pth' is corrupt or truncated"),
    ("state_corrupt", "trainer_state.json", lambda p: p.write_text('{"global_step": 4,'),
     r"trainer_state.json' is not valid JSON"),
    ("state_missing", "trainer_state.json", lambda p: p.unlink(), r"trainer_state.json' is missing"),
    ("weights_missing", "model.safetensors", lambda p: p.unlink(), r"has no model weights \(model.safetensors\)"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "damage", "message"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_checkpoint_names_the_file(run_dir, tmp_path, file, damage, message):
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(run_dir / "checkpoint-4", checkpoint)
    assert ckpt.checkpoint_problems(checkpoint) == []
    damage(checkpoint / file)
    with pytest.raises(OSError, match=r"cannot resume from .*checkpoint-4.*" + message):
        ckpt.resolve_resume_checkpoint(str(checkpoint), tmp_path)


def test_resume_true_falls_back_to_the_newest_intact_checkpoint(run_dir, tmp_path, caplog):
    output_dir = tmp_path / "run"
    shutil.copytree(run_dir, output_dir)
    assert ckpt.resolve_resume_checkpoint("true", output_dir) == str(output_dir / "checkpoint-4")
    assert ckpt.resolve_resume_checkpoint("false", output_dir) is None
    _truncate(output_dir / "checkpoint-4" / "optimizer.pt")
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        chosen = ckpt.resolve_resume_checkpoint(True, output_dir)
    assert chosen == str(output_dir / "checkpoint-2")
    assert "newest intact checkpoint; skipped damaged checkpoint-4" in caplog.text and "optimizer.pt" in caplog.text
    trainer = _trainer(output_dir, 4)
    trainer.train(resume_from_checkpoint=chosen)  # the chosen one really resumes
    assert trainer.state.global_step == 4
    for name in ("checkpoint-2", "checkpoint-4"):
        _truncate(output_dir / name / "model.safetensors")
    with pytest.raises(OSError, match=r"every checkpoint in .* is damaged: checkpoint-4: .*checkpoint-2: "):
        ckpt.resolve_resume_checkpoint(True, output_dir)
    with pytest.raises(ValueError, match=r"has no checkpoint-<step> folder"):
        ckpt.resolve_resume_checkpoint(True, tmp_path / "empty")


def test_empty_splits_are_refused():
    data = DatasetDict({"train": Dataset.from_dict({"label": [0, 1]}), "test": Dataset.from_dict({"label": []})})
    ckpt.check_splits_not_empty(data, ["train"])
    with pytest.raises(
        ValueError, match=r"split\(s\) \['test'\] have no rows \(split sizes: \{'train': 2, 'test': 0\}"
    ):
        ckpt.check_splits_not_empty(data, ["train", "test"])


def _png(mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, (32, 32), 7).save(buffer, format="PNG")
    return buffer.getvalue()


def test_undecodable_images_and_urls_name_the_row(tmp_path):
    features = Features({"image": Image(), "label": Value("int32")})
    good, truncated = _png(), _png()[:40]
    data = Dataset.from_dict(
        {"image": [{"bytes": good, "path": None}, None, {"bytes": truncated, "path": None}], "label": [0, 1, 0]},
        features=features,
    )
    assert ckpt.check_images(data.select([0, 1]), "image", "train") == {"L"}
    with pytest.raises(ValueError, match=r"split 'train', column 'image', row 2: the image cannot be decoded"):
        ckpt.check_images(data, "image", "train")
    url = {"bytes": None, "path": "https://example.com/a.png"}
    remote = Dataset.from_dict({"image": [url], "label": [0]}, features=features)
    with pytest.raises(ValueError, match=r"row 0: the image is a URL .*--allow_remote_images true"):
        ckpt.check_images(remote, "image", "test")
    assert ckpt.check_images(remote, "image", "test", allow_remote=True) == set()  # allowed, and still not fetched


# --------------------------------------------------------------------------------------- the training script
def run_train(argv: list[str]) -> dict[str, float]:
    from modeling_mmfnet import training_mmfnet as train

    return train.run(*train.parse_args(argv))


def script_args(data, output_dir, **overrides) -> list[str]:
    """A tiny seed-CNN run (vision and audio) of the training script on the toy data, on CPU."""
    options = {
        "dataset": data, "output_dir": output_dir, "vision_encoder": "conv", "audio_encoder": "conv",
        "conv_hidden_sizes": "8,16,16", "fusion_dim": 16, "fusion_hidden_dim": 32, "num_mel_bins": 16,
        "max_steps": 2, "max_train_samples": 8, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
        "seed": 0, "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "disable_tqdm": "true",
        "use_cpu": "true", "report_missing_modalities": "false", **overrides,
    }  # fmt: skip
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


def _damage_data(tiny_dataset, folder, case: str):
    from datasets import load_from_disk

    data = load_from_disk(tiny_dataset)
    if case == "corrupt_image":
        raw = data["train"].cast_column("image", Image(decode=False))
        bad = {"bytes": _png()[:40], "path": None}
        raw = raw.map(lambda row, i: {"image": bad if i == 4 else row["image"]}, with_indices=True)
        data["train"] = raw.cast_column("image", Image())
    elif case == "url_image":  # an image column of strings (paths), one a URL that datasets would fetch
        for split in data:
            paths = ["https://example.com/a.png" if i == 4 else None for i in range(len(data[split]))]
            data[split] = data[split].remove_columns("image").add_column("image", paths)
    data.save_to_disk(folder)
    return folder


SCRIPT_CASES = [
    ("empty_split", {"eval_strategy": "epoch", "max_eval_samples": 0}, r"split\(s\) \['validation'\] have no rows"),
    ("corrupt_image", {}, r"split 'train', column 'image', row 4: the image cannot be decoded"),
    ("url_image", {}, r"split 'train', column 'image', row 4: the image is a URL .*--allow_remote_images true"),
]


@pytest.mark.parametrize(("case", "extra", "message"), SCRIPT_CASES, ids=[c[0] for c in SCRIPT_CASES])
def test_training_script_refuses_bad_data_before_training(tiny_dataset, tmp_path, monkeypatch, case, extra, message):
    from modeling_mmfnet import training_mmfnet as train

    def no_model(*args, **kwargs):
        raise AssertionError("the bad input was not caught before building the model")

    monkeypatch.setattr(train, "build_model", no_model)
    data = tiny_dataset if case == "empty_split" else _damage_data(tiny_dataset, tmp_path / "data", case)
    with pytest.raises(ValueError, match=message):
        run_train(script_args(data, tmp_path / "out", **extra))


def test_training_script_resume_names_the_damaged_file_and_falls_back(tiny_dataset, tmp_path, caplog):
    out = tmp_path / "out"
    common = {"max_steps": 4}
    run_train(script_args(tiny_dataset, out, save_strategy="steps", save_steps=2, **common))
    _truncate(out / "checkpoint-4" / "scheduler.pt")
    with pytest.raises(OSError, match=r"cannot resume from .*checkpoint-4.*scheduler.pt' is corrupt or truncated"):
        run_train(script_args(tiny_dataset, out, resume_from_checkpoint=out / "checkpoint-4", **common))
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        metrics = run_train(script_args(tiny_dataset, out, resume_from_checkpoint="true", **common))
    assert "Resuming from" in caplog.text and "skipped damaged checkpoint-4" in caplog.text
    assert f"Resuming from {out / 'checkpoint-2'}" in caplog.text
    assert metrics["train_runtime"] > 0
