"""`MMFNetClassificationPipeline`: classify rows that hold any subset of an image, a text and an audio clip.

    pipe = pipeline("multimodal-classification", model="user/mmfnet-repo")            # package installed
    pipe = pipeline(model="user/mmfnet-repo", trust_remote_code=True)                  # without the package
    pipe({"image": "cat.png", "text": "a small cat"})                                  # [{"label", "score"}, ...]
    pipe([{"text": "meow"}, {"audio": "meow.wav"}], batch_size=8, top_k=2)

Rows are processed together by the checkpoint's `MMFNetProcessor`, so a batch mixes rows with different
modalities. This file ships with every MMFNet classification checkpoint (`custom_pipelines` in `config.json`).
"""

from __future__ import annotations

import io
import os
import urllib.request
import wave
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.utils import is_vision_available

if is_vision_available():
    from PIL import Image

TASK = "multimodal-classification"
"""The task name registered with transformers' `PIPELINE_REGISTRY` when the `mmfnet` package is imported."""
SAVED_TASK = "mmfnet-classification"
"""The task name saved in a checkpoint's `config.json` (`custom_pipelines`), loaded with `trust_remote_code=True`.
It differs from `TASK` so that, with the package installed, `pipeline(TASK, model=repo)` needs no remote code."""
ROW_KEYS: dict[str, str] = {"image": "vision", "text": "text", "audio": "audio"}
"""Row key → modality."""
URL_PREFIXES = ("http://", "https://")


class MMFNetClassificationPipeline(Pipeline):
    r"""Single-label, multi-label or regression predictions of an MMFNet classification model.

    Each input row is a dict with any subset of:
    - `image`: a PIL image or a local file path;
    - `text`: a string;
    - `audio`: a 1-D float array (with the row's `sampling_rate`), a dict `{"array", "sampling_rate"}` as
      `datasets` gives, or a local file path. WAV (PCM 8/16/24/32-bit, or float) is read with the standard
      library; other formats (FLAC, OGG, MP3) need the `soundfile` package. Audio at another rate is resampled
      with `scipy.signal.resample_poly` when scipy is installed, else rejected.

    A missing key (or `None`) means that modality is missing for that row; every row needs at least one.
    URLs are refused unless the call passes `allow_urls=True`.

    Outputs per row, by `config.problem_type`:
    - single-label: the `top_k` (default 5, at most `num_labels`) `{"label", "score"}` with
      `score = softmax(logits)`, best first;
    - multi-label: the same with `score = sigmoid(logits)` per label;
    - regression: `[{"label", "value"}]`, one per output (`top_k` does not apply).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "MMFNetClassificationPipeline needs the checkpoint's MMFNetProcessor: save it next to the model "
                "(`processor.save_pretrained(folder)`) or pass `processor=`."
            )
        if getattr(self.model.config, "model_type", None) != "mmfnet" or not hasattr(self.model, "classifier"):
            raise TypeError(
                f"MMFNetClassificationPipeline needs an MMFNet classification model "
                f"(AutoModelForSequenceClassification), got {type(self.model).__name__}."
            )
        self.modalities = tuple(self.processor.modalities)

    def _sanitize_parameters(
        self, top_k: int | None = None, allow_urls: bool | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(
                f"Unknown arguments {sorted(kwargs)}; this pipeline takes `top_k`, `allow_urls`, `batch_size`."
            )
        preprocess, postprocess = {}, {}
        if allow_urls is not None:
            if not isinstance(allow_urls, bool):
                raise TypeError(f"`allow_urls` must be a bool, got {type(allow_urls).__name__}.")
            preprocess["allow_urls"] = allow_urls
        if top_k is not None:
            if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
                raise ValueError(f"`top_k` must be an int >= 1, got {top_k!r}.")
            postprocess["top_k"] = top_k
        return preprocess, {}, postprocess

    # ----------------------------------------------------------------------------------------------- preprocess
    def load_row(self, row: dict[str, Any], allow_urls: bool = False) -> dict[str, Any]:
        """Validate one input row and read its files: `{"image": PIL | None, "text": str | None, "audio": array |
        None}` with audio at the feature extractor's sampling rate."""
        if not isinstance(row, dict):
            raise TypeError(
                f"Each input must be a dict with any of 'image', 'text', 'audio' (and 'sampling_rate'), got "
                f"{type(row).__name__}."
            )
        unknown = sorted(set(row) - {*ROW_KEYS, "sampling_rate"})
        if unknown:
            raise ValueError(
                f"Unknown keys {unknown} in an input row; expected any of 'image', 'text', 'audio' "
                "(with 'sampling_rate' for an audio array)."
            )
        loaded: dict[str, Any] = {}
        for key, modality in ROW_KEYS.items():
            value = row.get(key)
            if value is None:
                continue
            if modality not in self.modalities:
                raise ValueError(
                    f"The row has {key!r} but this model has no {modality} modality (modalities: "
                    f"{', '.join(self.modalities)})."
                )
            if key == "image":
                loaded[key] = _read_image(value, allow_urls)
            elif key == "text":
                if not isinstance(value, str):
                    raise TypeError(f"'text' must be a str, got {type(value).__name__}.")
                loaded[key] = value
            else:
                loaded[key] = self._read_audio(value, row.get("sampling_rate"), allow_urls)
        if not loaded:
            raise ValueError(
                f"An input row has none of this model's modalities ({', '.join(self.modalities)}); "
                "each row needs at least one."
            )
        return loaded

    def _read_audio(self, value: Any, sampling_rate: int | None, allow_urls: bool) -> np.ndarray:
        if isinstance(value, dict):
            if "array" not in value or "sampling_rate" not in value:
                raise ValueError(f"An 'audio' dict needs 'array' and 'sampling_rate', got keys {sorted(value)}.")
            value, sampling_rate = value["array"], value["sampling_rate"]
        if isinstance(value, (str, os.PathLike)):
            value, sampling_rate = _read_audio_file(value, allow_urls)
        elif sampling_rate is None:
            raise ValueError("An 'audio' array needs the row's 'sampling_rate' (Hz).")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        waveform = np.asarray(value, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"'audio' must be a mono waveform (1-D), got shape {waveform.shape}.")
        target = self.processor.feature_extractor.sampling_rate
        return _resample(waveform, int(sampling_rate), target)

    def process_rows(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The model inputs of loaded rows (see `load_row`), in one processor call."""
        given = {"vision": ("image", "images"), "text": ("text", "text"), "audio": ("audio", "audio")}
        arguments = {
            argument: [row.get(key) for row in rows] if modality in self.modalities else None
            for modality, (key, argument) in given.items()
        }
        sampling_rate = self.processor.feature_extractor.sampling_rate if "audio" in self.modalities else None
        return dict(self.processor(**arguments, sampling_rate=sampling_rate))

    def preprocess(self, inputs: dict[str, Any], allow_urls: bool = False) -> dict[str, torch.Tensor]:
        return self.process_rows([self.load_row(inputs, allow_urls)])

    def get_iterator(
        self,
        inputs: Any,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict[str, Any],
        forward_params: dict[str, Any],
        postprocess_params: dict[str, Any],
    ) -> PipelineIterator:
        """Batches are built by the processor from raw rows, so one batch may mix rows with different modalities."""
        if isinstance(inputs, (list, tuple)):
            dataset = PipelineDataset(inputs, self.load_row, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.load_row, preprocess_params)
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self.process_rows)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    # ------------------------------------------------------------------------------------------ forward, output
    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dtype = self.model.dtype
        model_inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model_inputs.items()}
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int = 5) -> list[dict[str, Any]]:
        logits = model_outputs["logits"][0].float()
        config = self.model.config
        labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(logits.shape[-1])]
        problem_type = config.problem_type or (
            "regression" if config.num_labels == 1 else "single_label_classification"
        )
        if problem_type == "regression":
            return [{"label": label, "value": value} for label, value in zip(labels, logits.tolist(), strict=True)]
        scores = logits.sigmoid() if problem_type == "multi_label_classification" else logits.softmax(-1)
        best = scores.topk(min(top_k, scores.shape[-1]))
        return [
            {"label": labels[i], "score": s} for s, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
        ]


def _open(source: str | os.PathLike, allow_urls: bool) -> io.BytesIO | str:
    """A local path as is, or (with `allow_urls`) the bytes of an http(s) URL."""
    source = os.fspath(source)
    if source.startswith(URL_PREFIXES):
        if not allow_urls:
            raise ValueError(f"{source!r} is a URL: URLs are fetched only with `allow_urls=True`.")
        with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310 - http(s) only, asked for
            return io.BytesIO(response.read())
    if not os.path.isfile(source):
        raise FileNotFoundError(f"No such file: {source!r}.")
    return source


def _read_image(value: Any, allow_urls: bool) -> Any:
    if not is_vision_available():
        raise ImportError("Reading images needs Pillow: `pip install pillow`.")
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        image = Image.open(_open(value, allow_urls))
        image.load()
        return image
    raise TypeError(f"'image' must be a PIL image or a local file path, got {type(value).__name__}.")


def _read_audio_file(path: str | os.PathLike, allow_urls: bool) -> tuple[np.ndarray, int]:
    """A mono float waveform in [-1, 1] and its sampling rate; multi-channel audio is averaged."""
    source = _open(path, allow_urls)
    try:
        with wave.open(source, "rb") as reader:
            rate, width, channels = reader.getframerate(), reader.getsampwidth(), reader.getnchannels()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError):
        if isinstance(source, io.BytesIO):
            source.seek(0)
        try:
            import soundfile
        except ImportError:
            raise ValueError(
                f"{os.fspath(path)!r} is not a PCM WAV file; reading other formats (FLAC, OGG, MP3) needs "
                "`pip install soundfile`."
            ) from None
        try:
            data, rate = soundfile.read(source, dtype="float32", always_2d=True)
        except (RuntimeError, TypeError) as error:  # soundfile.LibsndfileError is a RuntimeError
            raise ValueError(f"Cannot read the audio file {os.fspath(path)!r}: {error}") from error
        return data.mean(axis=1), int(rate)
    if width == 1:  # unsigned 8-bit
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # signed 24-bit little-endian
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        values = raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16)
        samples = (np.where(values >= 1 << 23, values - (1 << 24), values) / float(1 << 23)).astype(np.float32)
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        samples = np.frombuffer(frames, dtype=dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    else:
        raise ValueError(f"{os.fspath(path)!r}: {8 * width}-bit WAV samples are not supported.")
    return samples.reshape(-1, channels).mean(axis=1), rate


def _resample(waveform: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return waveform
    try:
        from scipy.signal import resample_poly
    except ImportError:
        raise ValueError(
            f"The audio is at {rate} Hz but the model expects {target} Hz; resample it first or install scipy."
        ) from None
    divisor = np.gcd(rate, target)
    return resample_poly(waveform, target // divisor, rate // divisor).astype(np.float32)


__all__ = ["MMFNetClassificationPipeline", "SAVED_TASK", "TASK"]
