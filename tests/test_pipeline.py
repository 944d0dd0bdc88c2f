"""The MMFNet pipeline: saved with the model, run with and without the package, on rows with any modalities."""

from __future__ import annotations

import copy
import functools
import http.server
import importlib.util
import json
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BLOCK_PACKAGE, clean_env, tiny_bert, tiny_conv, tiny_processor, write_tokenizer
from hub_server import run_client
from PIL import Image
from transformers import pipeline

import modeling_mmfnet as mm

LABELS = ["zero", "one", "two"]


def write_wav(path: Path, samples: np.ndarray, rate: int) -> np.ndarray:
    """Write 16-bit PCM; return the float waveform a reader gets back (`int16 / 32768`)."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def checkpoint(encoder_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny three-modality classifier saved with its processor, input files, and rows with missing modalities."""
    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=tiny_conv(), text=str(encoder_dirs["bert"]), audio=str(encoder_dirs["wav2vec2"]),
        fusion_type="gated", fusion_dim=16, fusion_hidden_dim=32, num_labels=3, dropout=0.0,
        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)},
    ).eval()  # fmt: skip
    processor = tiny_processor(encoder_dirs)
    folder = root / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    image.save(root / "digit.png")
    wav = write_wav(root / "clip.wav", 0.5 * np.sin(np.arange(1200) / 7.0), 8000)
    array = rng.uniform(-0.5, 0.5, 900).astype(np.float32)
    # what each row holds, and the same row as the processor takes it (None = missing)
    rows = [
        (
            {"image": str(root / "digit.png"), "text": "one two", "audio": str(root / "clip.wav")},
            (image, "one two", wav),
        ),
        ({"text": "three"}, (None, "three", None)),
        ({"image": str(root / "digit.png")}, (image, None, None)),
        ({"audio": array.tolist(), "sampling_rate": 8000, "text": "four oh"}, (None, "four oh", array)),
        ({"audio": {"array": array.tolist(), "sampling_rate": 8000}}, (None, None, array)),
    ]
    expected = []
    with torch.no_grad():
        for _, (img, text, audio) in rows:
            inputs = processor(images=[img], text=[text], audio=[audio], sampling_rate=8000)
            expected.append(model(**inputs).logits.softmax(-1)[0].tolist())
    return {"folder": folder, "model": model, "rows": [r for r, _ in rows], "expected": expected, "root": root}


def scores_by_label(prediction: list[dict[str, Any]]) -> list[float]:
    by_label = {p["label"]: p["score"] for p in prediction}
    return [by_label[name] for name in LABELS]


REMOTE = """
import io, sys
sys.stdin = io.StringIO()
import torch
torch.set_num_threads(1)
from transformers import pipeline

pipe = pipeline(model=V["folder"], trust_remote_code=True)
RESULT = {
    "single": [pipe(row, top_k=3) for row in V["rows"]],
    "batched": pipe(V["rows"], batch_size=2, top_k=3),
    "top1": pipe(V["rows"][0], top_k=1),
    "modules": sorted({type(o).__module__.split(".")[0] for o in (pipe, pipe.model, pipe.processor)}),
    "pipeline": type(pipe).__name__,
}
"""


def test_pipeline_without_the_package(checkpoint: dict[str, Any], tmp_path: Path) -> None:
    """`pipeline(model=folder, trust_remote_code=True)` in a process where `modeling_mmfnet` cannot be imported:
    the saved `custom_pipelines` and code files run; each row's scores equal the model's own softmax on the
    processor's output for that row, one row at a time and in mixed-modality batches."""
    config = json.loads((checkpoint["folder"] / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "mmfnet-classification": {
            "impl": "pipeline_mmfnet.MMFNetClassificationPipeline",
            "pt": ["AutoModelForSequenceClassification"],
            "type": "multimodal",
        }
    }
    assert (checkpoint["folder"] / "pipeline_mmfnet.py").is_file()
    got = run_client(
        BLOCK_PACKAGE + REMOTE,
        clean_env(tmp_path / "hf"),
        tmp_path,
        folder=str(checkpoint["folder"]),
        rows=checkpoint["rows"],
    )
    assert got["modules"] == ["transformers_modules"] and got["pipeline"] == "MMFNetClassificationPipeline"
    for single, batched, expected in zip(got["single"], got["batched"], checkpoint["expected"], strict=True):
        assert [p["score"] for p in single] == sorted((p["score"] for p in single), reverse=True)
        np.testing.assert_allclose(scores_by_label(single), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores_by_label(batched), expected, rtol=1e-4, atol=1e-5)
    assert len(got["top1"]) == 1 and got["top1"][0]["label"] == LABELS[int(np.argmax(checkpoint["expected"][0]))]


def test_pipeline_with_the_package(checkpoint: dict[str, Any]) -> None:
    """`pipeline("multimodal-classification", model=folder)` needs no remote code when the package is installed,
    also as a generator (streamed) input; bad rows fail with clear errors."""
    pipe = pipeline("multimodal-classification", model=str(checkpoint["folder"]))
    assert type(pipe) is mm.MMFNetClassificationPipeline and type(pipe.model) is mm.MMFNetForClassification
    streamed = list(pipe((row for row in checkpoint["rows"]), batch_size=3, top_k=3))
    for prediction, expected in zip(streamed, checkpoint["expected"], strict=True):
        np.testing.assert_allclose(scores_by_label(prediction), expected, rtol=1e-4, atol=1e-5)
    assert len(pipe({"text": "one"})) == 3  # default top_k 5, at most num_labels

    with pytest.raises(ValueError, match=r"Unknown keys \['images'\]"):
        pipe({"images": "x.png"})
    with pytest.raises(ValueError, match="none of this model's modalities"):
        pipe({"text": None})
    with pytest.raises(TypeError, match="'text' must be a str"):
        pipe({"text": 3})
    with pytest.raises(ValueError, match="needs the row's 'sampling_rate'"):
        pipe({"audio": [0.0] * 100})
    with pytest.raises(FileNotFoundError, match="no-such.png"):
        pipe({"image": "no-such.png"})
    with pytest.raises(ValueError, match="`top_k` must be an int >= 1"):
        pipe({"text": "one"}, top_k=0)
    with pytest.raises(ValueError, match="URLs are fetched only with `allow_urls=True`"):
        pipe({"image": "http://127.0.0.1:9/digit.png"})


def test_base_model_checkpoint_has_no_classification_pipeline(checkpoint: dict[str, Any], tmp_path: Path) -> None:
    """The head checkpoint loaded and saved as the base model drops the pipeline (it would load a random head)."""
    mm.MMFNetModel.from_pretrained(checkpoint["folder"]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "mmfnet-classification" not in config.get("custom_pipelines", {})
    assert "AutoModel" in config["auto_map"]


def test_pipeline_fetches_urls_only_when_asked(checkpoint: dict[str, Any]) -> None:
    """With `allow_urls=True` an http URL is fetched (here from a local HTTP server) and gives the same scores as
    the local file."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(checkpoint["root"]))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        pipe = pipeline("multimodal-classification", model=str(checkpoint["folder"]))
        row = {"image": f"{base}/digit.png", "text": "one two", "audio": f"{base}/clip.wav"}
        fetched = pipe(row, allow_urls=True, top_k=3)
    finally:
        server.shutdown()
    np.testing.assert_allclose(scores_by_label(fetched), checkpoint["expected"][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_pipeline_outputs_per_problem_type(problem_type: str, tmp_path: Path) -> None:
    """Multi-label: sigmoid scores per label; regression: the raw values, one per output."""
    num_labels = 3 if problem_type == "multi_label_classification" else 2
    config = mm.MMFNetConfig(
        text_config=tiny_bert(), fusion_dim=16, fusion_hidden_dim=32, num_labels=num_labels, problem_type=problem_type
    )
    torch.manual_seed(0)
    model = mm.MMFNetForClassification(config).eval()
    processor = mm.MMFNetProcessor(tokenizer=write_tokenizer(tmp_path / "tok"))
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    with torch.no_grad():
        logits = model(**processor(text=["one two"])).logits[0]
    got = pipeline("multimodal-classification", model=str(tmp_path / "model"))({"text": "one two"}, top_k=3)
    if problem_type == "regression":
        assert [p["label"] for p in got] == ["LABEL_0", "LABEL_1"]
        np.testing.assert_allclose([p["value"] for p in got], logits.tolist(), rtol=1e-5)
    else:
        by_label = {p["label"]: p["score"] for p in got}
        np.testing.assert_allclose([by_label[f"LABEL_{i}"] for i in range(3)], logits.sigmoid().tolist(), rtol=1e-5)
        assert abs(sum(by_label.values()) - 1.0) > 1e-3  # independent sigmoids, not a softmax


def test_device_map_and_dtype_auto(checkpoint: dict[str, Any], tmp_path: Path) -> None:
    """`from_pretrained(..., device_map="auto", dtype="auto")` loads the saved float32 checkpoint through
    accelerate's placement: same dtype as saved, every weight on a real device, same outputs."""
    model = mm.MMFNetForClassification.from_pretrained(checkpoint["folder"], device_map="auto", dtype="auto").eval()
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.dtype == torch.float32 and model.device.type == expected_device
    assert all(p.device == model.device for p in model.parameters())  # placed, none left on `meta`
    reference = checkpoint["model"]
    loaded = model.state_dict()
    for name, parameter in reference.state_dict().items():
        assert torch.equal(loaded[name].cpu(), parameter), name
    pipe = pipeline("multimodal-classification", model=model, processor=mm.MMFNetProcessor.from_pretrained(
        checkpoint["folder"]))  # fmt: skip
    np.testing.assert_allclose(
        scores_by_label(pipe(checkpoint["rows"][1], top_k=3)), checkpoint["expected"][1], rtol=1e-4, atol=1e-5
    )

    # a bfloat16 checkpoint stays bfloat16 with dtype="auto"; the pipeline feeds it bfloat16 inputs
    half = tmp_path / "bf16"
    copy.deepcopy(reference).to(torch.bfloat16).save_pretrained(half)
    mm.MMFNetProcessor.from_pretrained(checkpoint["folder"]).save_pretrained(half)
    pipe = pipeline("multimodal-classification", model=str(half), device_map="auto", dtype="auto")
    assert pipe.model.dtype == torch.bfloat16
    np.testing.assert_allclose(
        scores_by_label(pipe(checkpoint["rows"][0], top_k=3)), checkpoint["expected"][0], atol=0.03
    )


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_reader(width: int, tmp_path: Path) -> None:
    """PCM WAV of every sample width, stereo averaged to mono, read with the standard library only."""
    from modeling_mmfnet.pipeline_mmfnet import _read_audio_file

    left = np.array([0.0, 0.5, -0.5, 0.25, -1.0])
    right = np.array([0.0, -0.5, 0.5, 0.25, 0.5])
    scale = 2 ** (8 * width - 1)
    frames = np.stack([left, right], axis=1).reshape(-1)
    ints = np.clip(np.round(frames * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        data = (ints + 128).astype(np.uint8).tobytes()
    else:
        data = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
    with wave.open(str(tmp_path / "x.wav"), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(width)
        writer.setframerate(16000)
        writer.writeframes(data)
    waveform, rate = _read_audio_file(tmp_path / "x.wav", allow_urls=False)
    assert rate == 16000 and waveform.dtype == np.float32
    np.testing.assert_allclose(waveform, (left + right) / 2, atol=2 / scale)
    (tmp_path / "y.flac").write_bytes(b"fLaC not really")
    has_soundfile = importlib.util.find_spec("soundfile") is not None
    with pytest.raises(ValueError, match="Cannot read the audio file" if has_soundfile else "not a PCM WAV file"):
        _read_audio_file(tmp_path / "y.flac", allow_urls=False)
