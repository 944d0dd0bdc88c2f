"""Tests of the offline AV-Digits(+text) builder, examples/build_avdigits.py (tiny sizes)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "build_avdigits.py"
_spec = importlib.util.spec_from_file_location("build_avdigits", SCRIPT)
avd = sys.modules["build_avdigits"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(avd)

requires_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="espeak-ng / flite not installed (apt-get install espeak-ng flite)",
)
SIZES = dict(n_train=40, n_validation=20, n_test=30, n_test_real=20, install_missing=False)


def speaker(voice: str) -> str:
    """Speaker identity of a voice: the espeak-ng variant, the flite voice or the Asterisk recording set."""
    return voice.rsplit("+", 1)[-1] if voice.startswith("espeak-ng:") else voice


@pytest.fixture(scope="module")
def agree_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("agree")
    avd.build_avdigits(str(out), cache_dir=str(tmp_path_factory.mktemp("cache")), **SIZES)
    return out


@pytest.fixture(scope="module")
def agree(agree_dir):
    return load_from_disk(str(agree_dir))


@requires_tts
def test_schema_and_saved_files(agree, agree_dir):
    assert {"train", "validation", "test"} <= set(agree)
    assert [len(agree[s]) for s in ("train", "validation", "test")] == [40, 20, 30]
    assert agree["train"].features == avd.FEATURES
    assert agree["train"].features["label"].names == [str(i) for i in range(10)]
    row = agree["train"][0]
    assert row["image"].mode == "L" and row["image"].size == (16, 16)
    assert len(row["audio"]) == 8000 and row["sampling_rate"] == 8000
    assert np.asarray(agree["train"].with_format("numpy")[:4]["audio"]).dtype == np.float32
    assert "CC-BY-SA-3.0" in (agree_dir / "README.md").read_text()


@requires_tts
def test_same_seed_same_dataset(agree, tmp_path):
    # A fresh TTS cache, so synthesis itself is checked for determinism too.
    again = avd.build_avdigits(cache_dir=str(tmp_path / "cache"), **SIZES)
    for split in agree:
        assert again[split].data.table.equals(agree[split].data.table), split
    other = avd.build_avdigits(seed=1, cache_dir=str(tmp_path / "cache"), **SIZES)
    assert not other["train"].data.table.equals(agree["train"].data.table)


@requires_tts
def test_splits_disjoint_by_voice_and_image(agree):
    splits = ("train", "validation", "test")
    speakers = {s: {speaker(v) for v in agree[s]["voice"]} for s in splits}
    images = {s: set(agree[s]["image_id"]) for s in splits}
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not speakers[a] & speakers[b], (a, b)
            assert not images[a] & images[b], (a, b)


@requires_tts
def test_agree_labels(agree):
    for split in agree.values():
        label = np.asarray(split["label"])
        assert (np.asarray(split["image_digit"]) == label).all()
        assert (np.asarray(split["audio_digit"]) == label).all()
        assert all((t is None) == (d == -1) for t, d in zip(split["text"], split["text_digit"], strict=True))


@requires_tts
def test_clean_text_is_the_digit_word(tmp_path):
    clean_text = dict(text_missing_prob=0.0, text_confusion_prob=0.0, text_alias_prob=0.0, text_typo_prob=0.0)
    ds = avd.build_avdigits(cache_dir=str(tmp_path), **{**SIZES, "n_test_real": 0}, **clean_text)
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"]["text"] == [avd.DIGIT_WORDS[d] for d in ds["train"]["label"]]


@requires_tts
def test_imbalanced_variant_keeps_images_audio_and_labels_with_clean_transcripts(agree):
    imbalanced = avd.retranscribe(agree, seed=0, **avd.IMBALANCED_TEXT)
    assert imbalanced.keys() == agree.keys()
    for name, split in imbalanced.items():
        assert split.features == avd.FEATURES
        same = [c for c in avd.FEATURES if c not in ("text", "text_digit")]
        assert split.select_columns(same).data.table.equals(agree[name].select_columns(same).data.table), name
        assert None not in split["text"]  # never missing
        words = np.asarray(split["text_digit"])
        assert (words >= 0).all() and (words == np.asarray(split["audio_digit"])).mean() > 0.8
    again = avd.retranscribe(agree, seed=0, **avd.IMBALANCED_TEXT)
    assert again["train"]["text"] == imbalanced["train"]["text"]  # deterministic for a seed
    clean = avd.retranscribe(agree, missing=0.0, confusion=0.0, alias=0.0, typo=0.0)
    assert clean["test"]["text"] == [avd.DIGIT_WORDS[d] for d in agree["test"]["audio_digit"]]


@requires_tts
def test_sum_task(tmp_path):
    ds = avd.build_avdigits(task="sum", text_confusion_prob=0.0, cache_dir=str(tmp_path), **SIZES)
    for split in ds.values():
        a, b = np.asarray(split["image_digit"]), np.asarray(split["audio_digit"])
        assert (np.asarray(split["label"]) == (a + b) % 10).all()
        assert all(d in (-1, y) for d, y in zip(split["text_digit"], b, strict=True))


@requires_tts
@pytest.mark.skipif(
    not avd._find_asterisk_digits("/usr/share/asterisk/sounds"),
    reason=f"real-speaker recordings not installed (apt-get install {avd.ASTERISK_PACKAGE})",
)
def test_real_speaker_split(agree):
    real = agree["test_real"]
    assert len(real) == 20
    assert all(v.startswith("asterisk:") for v in real["voice"])
    assert not set(real["image_id"]) & (set(agree["train"]["image_id"]) | set(agree["validation"]["image_id"]))
    assert (np.asarray(real["label"]) == np.asarray(real["audio_digit"])).all()


def test_missing_espeak_names_the_package(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output_dir", str(tmp_path), "--small", "--no_install_missing"]
        + ["--espeak_bin", "/nonexistent/espeak-ng"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "apt-get install -y espeak-ng" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_arguments_match_function_defaults():
    cli = {f.name: f.default for f in dataclasses.fields(avd.BuildArguments) if f.name != "small"}
    params = inspect.signature(avd.build_avdigits).parameters
    assert cli == {name: p.default for name, p in params.items() if name != "output_dir"} | {
        "output_dir": dataclasses.MISSING
    }
