"""MMFNetProcessor: one processor over the encoders' own processors, with per-sample missing modalities.

`processor(images=[img, None], text=["seven", "two"], audio=[wave, wave], sampling_rate=8000)` returns the model's
named inputs (`pixel_values`, `input_ids`, `attention_mask`, `input_values` or `input_features`,
`audio_attention_mask`) plus `modality_mask` `(B, M)`. A `None` entry marks that modality missing for that sample:
its row is filled with padding, marked absent in `modality_mask`, and the model neither encodes nor reads it.
"""

import io
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoTokenizer,
    BatchFeature,
    ProcessorMixin,
    SequenceFeatureExtractor,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)
from transformers.audio_utils import mel_filter_bank

from .saving_mmfnet import MMFNetCardHubMixin, atomic_save, check_save_directory

try:  # the PIL backend needs no torchvision
    from transformers import ViTImageProcessorPil as _ConvImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import ViTImageProcessor as _ConvImageProcessor

PARTS: dict[str, str] = {"vision": "image_processor", "text": "tokenizer", "audio": "feature_extractor"}
"""The processor part serving each modality, in the canonical modality order."""


def conv_image_processor(size: int | tuple[int, int] = 8, num_channels: int = 1) -> _ConvImageProcessor:
    """Image processor for the seed CNN: resize to `size` (a side, or `(height, width)`), scale to [0, 1], normalise
    to [-1, 1], with `num_channels` channels (3: any PIL mode is converted to RGB; 1: colour images to grey, by
    [`MMFNetProcessor`])."""
    if num_channels not in (1, 3):
        raise ValueError(f"`num_channels` must be 1 (grey) or 3 (RGB), got {num_channels!r}.")
    height, width = (size, size) if isinstance(size, int) else size
    if min(height, width) < 1:
        raise ValueError(f"`size` must be a positive side or (height, width), got {size!r}.")
    return _ConvImageProcessor(
        size={"height": height, "width": width},
        image_mean=[0.5] * num_channels,
        image_std=[0.5] * num_channels,
        do_convert_rgb=num_channels == 3,
    )


class MMFNetSpectrogramExtractor(WhisperFeatureExtractor):
    r"""Log-mel spectrograms `(n_mels, frames)` for the seed CNN: Whisper's front end with the mel range fitted to
    the sampling rate.

    Whisper's extractor always spreads its filters over 0–8 kHz; below 16 kHz the filters above the Nyquist frequency
    `rate / 2` cover no FFT bin and stay all zero (transformers warns "At least one mel filter has all zero values").
    Here the `feature_size` filters span `[0, max_frequency]`, `max_frequency ≤ sampling_rate / 2` (default: exactly
    `sampling_rate / 2`), so every mel bin carries signal. Saved and loaded like any feature extractor.
    """

    def __init__(
        self,
        feature_size: int = 40,
        sampling_rate: int = 8000,
        hop_length: int = 80,
        chunk_length: int = 1,
        n_fft: int = 512,
        padding_value: float = 0.0,
        dither: float = 0.0,
        return_attention_mask: bool = True,
        max_frequency: float | None = None,
        **kwargs: Any,
    ) -> None:
        nyquist = sampling_rate / 2
        max_frequency = nyquist if max_frequency is None else float(max_frequency)
        if not 0 < max_frequency <= nyquist:
            raise ValueError(
                f"`max_frequency` must be in (0, sampling_rate / 2 = {nyquist:g}] Hz, got {max_frequency:g}."
            )
        # Whisper's own __init__ would first build (and warn about) its fixed 0-8 kHz filter bank: set its fields here
        SequenceFeatureExtractor.__init__(
            self,
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.chunk_length = chunk_length
        self.n_samples = chunk_length * sampling_rate
        self.nb_max_frames = self.n_samples // hop_length
        self.dither = dither
        self.max_frequency = max_frequency
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + n_fft // 2,
            num_mel_filters=feature_size,
            min_frequency=0.0,
            max_frequency=max_frequency,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )


def conv_spectrogram_extractor(
    sampling_rate: int = 8000, num_mel_bins: int = 40, max_seconds: int = 1, frames_per_second: int = 100
) -> MMFNetSpectrogramExtractor:
    """Log-mel spectrograms `(n_mels, frames)` of short clips for the seed CNN, padded to `max_seconds`.

    The hop is `sampling_rate / frames_per_second` samples (10 ms by default), the FFT window the next power of two
    of four hops, and the mel filters span 0 Hz to the Nyquist frequency `sampling_rate / 2`.
    """
    if not isinstance(sampling_rate, int) or sampling_rate < frames_per_second:
        raise ValueError(f"`sampling_rate` must be an int >= {frames_per_second} Hz, got {sampling_rate!r}.")
    hop_length = sampling_rate // frames_per_second
    return MMFNetSpectrogramExtractor(
        feature_size=num_mel_bins,
        sampling_rate=sampling_rate,
        hop_length=hop_length,
        chunk_length=max_seconds,
        n_fft=int(2 ** np.ceil(np.log2(4 * hop_length))),
        return_attention_mask=True,
    )


class _PresentParts:
    """`get_attributes`: every part on the class (what can be loaded), only the parts it has on an instance."""

    def __get__(self, instance: "MMFNetProcessor | None", owner: type) -> Any:
        names = list(PARTS.values())
        if instance is None:
            return lambda: names
        return lambda: [name for name in names if getattr(instance, name, None) is not None]


class MMFNetProcessor(MMFNetCardHubMixin, ProcessorMixin):
    r"""Bundles an image processor, a tokenizer and an audio feature extractor, each optional.

    Args:
        image_processor: for the vision encoder (e.g. `AutoImageProcessor.from_pretrained(vit)` or
            [`conv_image_processor`]).
        tokenizer: for the text encoder.
        feature_extractor: for the audio encoder (Wav2Vec2-like → `input_values`, Whisper/AST-like →
            `input_features`; or [`conv_spectrogram_extractor`]).
        present_parts: set on save so a load knows which parts exist; computed, not to be passed by hand.
    """

    get_attributes = _PresentParts()

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        feature_extractor: Any = None,
        present_parts: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # ProcessorMixin.__init__ insists on every part; set the ones given ourselves, with its class checks.
        self.chat_template = kwargs.pop("chat_template", None)
        parts = {"image_processor": image_processor, "tokenizer": tokenizer, "feature_extractor": feature_extractor}
        if all(part is None for part in parts.values()):
            raise ValueError(
                "MMFNetProcessor needs at least one of `image_processor`, `tokenizer`, `feature_extractor`."
            )
        for name, part in parts.items():
            if part is not None:
                self.check_argument_for_proper_class(name, part)
            setattr(self, name, part)
        self.present_parts = [name for name, part in parts.items() if part is not None]

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> Any:
        """`ProcessorMixin.save_pretrained`, atomic (see `saving_mmfnet.py`); a path to a file is refused. With the
        package installed, the folder's README.md becomes (or is updated to) MMFNet's card."""
        check_save_directory(save_directory)
        save = super().save_pretrained
        if push_to_hub:  # the upload reads the folder it names: save in place, then upload
            result = save(save_directory, push_to_hub=True, **kwargs)
        else:
            result = atomic_save(lambda staging: save(staging, **kwargs), save_directory)
        if self.model_card_hook is not None:
            self.model_card_hook.after_save(self, save_directory)
        return result

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this processor serves, in the canonical order: the columns of `modality_mask`."""
        return tuple(m for m, part in PARTS.items() if getattr(self, part) is not None)

    @property
    def model_input_names(self) -> list[str]:
        names = []
        if self.image_processor is not None:
            names.append("pixel_values")
        if self.tokenizer is not None:
            names += [n for n in self.tokenizer.model_input_names if n in ("input_ids", "attention_mask")]
        if self.feature_extractor is not None:
            names += [self.feature_extractor.model_input_names[0], "audio_attention_mask"]
        return [*names, "modality_mask"]

    @classmethod
    def from_encoders_pretrained(
        cls,
        vision: str | os.PathLike | Any | None = None,
        text: str | os.PathLike | Any | None = None,
        audio: str | os.PathLike | Any | None = None,
        **kwargs: Any,
    ) -> "MMFNetProcessor":
        """Build from each encoder's own processor: a Hub id / folder (Auto*.from_pretrained), an object, or None."""
        loaders = {"vision": AutoImageProcessor, "text": AutoTokenizer, "audio": AutoFeatureExtractor}
        parts = {}
        for modality, source in (("vision", vision), ("text", text), ("audio", audio)):
            if isinstance(source, (str, os.PathLike)):
                source = loaders[modality].from_pretrained(source, **kwargs)
            parts[PARTS[modality]] = source
        return cls(**parts)

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        """Load only the parts that were saved (`present_parts`), in `__init__` order."""
        folder = os.path.join(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
        if (
            not processor_dict
            and os.path.isdir(folder)
            and not os.path.isfile(os.path.join(folder, "processor_config.json"))
        ):
            raise OSError(
                f"{str(folder)!r} has no processor_config.json: it holds no MMFNetProcessor (save one with "
                "`processor.save_pretrained(folder)`, or build it with `MMFNetProcessor.from_encoders_pretrained`)."
            )
        present = (processor_dict or {}).get("present_parts", list(PARTS.values()))
        subfolder = kwargs.pop("subfolder", "")
        loaders = {"image_processor": AutoImageProcessor, "feature_extractor": AutoFeatureExtractor}
        saved_extractor = (processor_dict or {}).get("feature_extractor") or {}
        if saved_extractor.get("feature_extractor_type") == MMFNetSpectrogramExtractor.__name__:
            loaders["feature_extractor"] = MMFNetSpectrogramExtractor  # ours: no Auto mapping needed, remote code too
        args = []
        for name in PARTS.values():
            if name not in present:
                args.append(None)
            elif name == "tokenizer":
                args.append(
                    cls._load_tokenizer_from_pretrained(name, pretrained_model_name_or_path, subfolder, **kwargs)
                )
            else:
                args.append(
                    loaders[name].from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
                )
        return args

    def __call__(
        self,
        images: Sequence[Any] | Any | None = None,
        text: Sequence[str | None] | str | None = None,
        audio: Sequence[Any] | Any | None = None,
        sampling_rate: int | None = None,
        return_tensors: str = "pt",
        text_kwargs: dict[str, Any] | None = None,
        images_kwargs: dict[str, Any] | None = None,
        audio_kwargs: dict[str, Any] | None = None,
        resample: bool = False,
        allow_remote_images: bool = False,
    ) -> BatchFeature:
        r"""Process a batch; `None` entries (or a `None` modality) mark missing modalities.

        Returns a [`BatchFeature`] with the model inputs of every modality given, and `modality_mask` `(B, M)`
        whose columns are `self.modalities`. Audio needs its `sampling_rate`; at another rate than the feature
        extractor's it is refused, or resampled with `resample=True`. Images are PIL images, arrays, encoded bytes
        (or `{"bytes", "path"}` dicts) or local paths; URLs are fetched only with `allow_remote_images=True`.
        """
        given = {"vision": images, "text": text, "audio": audio}
        for modality, value in given.items():
            if value is not None and getattr(self, PARTS[modality]) is None:
                raise ValueError(
                    f"`{ {'vision': 'images', 'text': 'text', 'audio': 'audio'}[modality] }` was given but this "
                    f"processor has no {PARTS[modality]} (modalities: {self.modalities})."
                )
        batches = {m: self._as_batch(m, v) for m, v in given.items() if v is not None}
        if not batches:
            raise ValueError("Pass at least one of `images`, `text`, `audio`.")
        sizes = {m: len(v) for m, v in batches.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"`images`, `text` and `audio` must have the same batch size (one entry per sample, None "
                             f"for missing); got {sizes}.")  # fmt: skip
        batch_size = next(iter(sizes.values()))
        if batch_size == 0:
            raise ValueError("the batch is empty: pass at least one sample (None marks a missing modality).")
        data: dict[str, Any] = {}
        mask = torch.zeros(batch_size, len(self.modalities), dtype=torch.bool)
        for column, modality in enumerate(self.modalities):
            if modality not in batches:
                continue
            rows = [i for i, item in enumerate(batches[modality]) if item is not None]
            mask[rows, column] = True
            if not rows:
                continue
            present = [batches[modality][i] for i in rows]
            if modality == "vision":
                present = [
                    _load_image(image, row, allow_remote_images) for image, row in zip(present, rows, strict=True)
                ]
                modes = {image.mode for image in present if hasattr(image, "mode")}
                if len(modes) > 1:
                    raise ValueError(
                        f"`images` mixes PIL modes {sorted(modes)}; convert them to one mode first "
                        "(e.g. `image.convert('L')` or `image.convert('RGB')`)."
                    )
                if len(getattr(self.image_processor, "image_mean", None) or [0, 0, 0]) == 1:
                    # a one-channel processor (the grey seed CNN): colour PIL images become grey
                    present = [im.convert("L") if getattr(im, "mode", "L") != "L" else im for im in present]
                self._check_image_channels(present, rows)
                features = self.image_processor(present, return_tensors="pt", **(images_kwargs or {}))
                data["pixel_values"] = _scatter(features["pixel_values"], rows, batch_size)
            elif modality == "text":
                for item, row in zip(present, rows, strict=True):
                    if not isinstance(item, str):
                        raise TypeError(f"`text` row {row} is a {type(item).__name__}; expected a string or None.")
                options = {"padding": True, "truncation": True, **(text_kwargs or {})}
                features = self.tokenizer(present, return_tensors="pt", **options)
                pad_id = self.tokenizer.pad_token_id or 0
                for key in ("input_ids", "attention_mask", "token_type_ids"):
                    if key in features:
                        data[key] = _scatter(features[key], rows, batch_size, fill=pad_id if key == "input_ids" else 0)
            else:
                data.update(
                    self._process_audio(present, rows, batch_size, sampling_rate, audio_kwargs or {}, resample)
                )
        data["modality_mask"] = mask
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _as_batch(modality: str, value: Any) -> list[Any]:
        if modality == "text":
            return [value] if isinstance(value, str) else list(value)
        if modality == "audio":
            is_single = isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 1
            return [value] if is_single else list(value)
        return list(value) if isinstance(value, list | tuple) else [value]

    def _check_image_channels(self, images: list[Any], rows: list[int]) -> None:
        """An RGB image into a one-channel processor (or the reverse) would be silently broadcast or fail deep down."""
        mean = getattr(self.image_processor, "image_mean", None)
        if not isinstance(mean, (list, tuple)) or getattr(self.image_processor, "do_convert_rgb", False):
            return
        for image, row in zip(images, rows, strict=True):
            channels = _image_channels(image)
            if channels is not None and channels != len(mean):
                raise ValueError(
                    f"`images` row {row} has {channels} channel(s) but the image processor normalises "
                    f"{len(mean)} (image_mean={list(mean)}); convert the images first (e.g. `image.convert('L')` "
                    "for one channel, `image.convert('RGB')` for three) or use a processor built for that."
                )

    def _process_audio(
        self,
        clips: list[Any],
        rows: list[int],
        batch_size: int,
        sampling_rate: int | None,
        options: dict[str, Any],
        resample: bool = False,
    ) -> dict[str, torch.Tensor]:
        extractor = self.feature_extractor
        if sampling_rate is None:
            raise ValueError(
                f"`sampling_rate` is required with `audio`: the feature extractor expects {extractor.sampling_rate} "
                "Hz and audio at another rate would be silently misread. Pass `sampling_rate=` (the collator reads "
                "it from the `sampling_rate` column or the `datasets.Audio` dicts)."
            )
        if not isinstance(sampling_rate, (int, np.integer)) or isinstance(sampling_rate, bool) or sampling_rate <= 0:
            raise ValueError(f"`sampling_rate` must be a positive int (Hz), got {sampling_rate!r}.")
        if sampling_rate != extractor.sampling_rate and not resample:
            raise ValueError(
                f"`sampling_rate` is {sampling_rate} Hz but the feature extractor expects "
                f"{extractor.sampling_rate} Hz; resample the audio first (e.g. with `scipy.signal.resample_poly`), "
                "or pass `resample=True`."
            )
        waves = []
        for clip, row in zip(clips, rows, strict=True):
            if (isinstance(clip, np.ndarray) and np.issubdtype(clip.dtype, np.integer)) or (
                isinstance(clip, torch.Tensor) and not clip.is_floating_point()
            ):
                raise TypeError(
                    f"`audio` row {row} holds integer samples ({clip.dtype}, e.g. 16-bit PCM); convert them to floats "
                    "in [-1, 1] first (e.g. `wave / 32768` for int16)."
                )
            try:
                wave = np.asarray(clip, dtype=np.float32)
            except (TypeError, ValueError) as error:
                raise ValueError(f"`audio` row {row} is not an array of samples ({type(clip).__name__}).") from error
            if wave.ndim != 1:
                raise ValueError(
                    f"`audio` row {row}: each entry must be a mono waveform (1-D array of samples) or None, got shape "
                    f"{wave.shape}."
                )
            if wave.size == 0:
                raise ValueError(f"`audio` row {row} is an empty clip (0 samples); use None for a missing clip.")
            if not np.isfinite(wave).all():
                raise ValueError(f"`audio` row {row} holds NaN or inf samples.")
            if sampling_rate != extractor.sampling_rate:
                wave = resample_wave(wave, sampling_rate, extractor.sampling_rate)
            waves.append(wave)
        window = getattr(extractor, "n_samples", None) if isinstance(extractor, WhisperFeatureExtractor) else None
        longest = max(len(wave) for wave in waves)
        if window and longest > window:
            _warn_once(
                f"audio clips longer than the feature extractor's window ({window} samples = "
                f"{window / extractor.sampling_rate:g} s, its `chunk_length`) are cut to it; the longest here has "
                f"{longest}. Build the extractor with a longer window (`conv_spectrogram_extractor(max_seconds=...)`) "
                "to keep them whole."
            )
        # A Wav2Vec2 extractor built with return_attention_mask=False serves a group-norm backbone that must not get
        # an attention mask (its docs); zero padding then changes the outputs of the shorter clips.
        wants_mask = not (isinstance(extractor, Wav2Vec2FeatureExtractor) and not extractor.return_attention_mask)
        if not wants_mask and len({len(wave) for wave in waves}) > 1:
            _warn_once(
                "padding clips of different lengths for a feature extractor with return_attention_mask=False (a "
                "group-norm Wav2Vec2-style backbone, which takes no attention mask): a padded clip's outputs differ "
                "from the same clip alone. Batch clips of equal length, or use batch size 1, for exact results."
            )
        options = {"padding": True, "return_attention_mask": wants_mask, **options}
        if isinstance(extractor, WhisperFeatureExtractor):
            options["padding"] = "max_length"
        features = extractor(waves, sampling_rate=extractor.sampling_rate, return_tensors="pt", **options)
        key = extractor.model_input_names[0]
        out = {key: _scatter(features[key], rows, batch_size)}
        if "attention_mask" in features:
            out["audio_attention_mask"] = _scatter(features["attention_mask"], rows, batch_size)
        return out


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message.split(";")[0] not in _WARNED:
        _WARNED.add(message.split(";")[0])
        warnings.warn(message, UserWarning, stacklevel=3)


def _image_channels(image: Any) -> int | None:
    if hasattr(image, "getbands"):
        return len(image.getbands())
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        return None
    if len(shape) == 2:
        return 1
    return shape[-1] if shape[-1] in (1, 3, 4) else shape[0]


def _load_image(value: Any, row: int, allow_remote: bool = False) -> Any:
    """A decoded image for `value` (PIL, array, bytes, `{"bytes", "path"}`, path or URL); errors name the row."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # datasets' Image(decode=False)
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        if not allow_remote:
            raise ValueError(
                f"`images` row {row} is a URL ({value[:80]}); the processor fetches nothing over the network unless "
                "asked: download the images first, or pass `allow_remote_images=True`."
            )
        from transformers.image_utils import load_image

        return load_image(value)
    source = None
    if isinstance(value, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(value))
    elif isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise ValueError(f"`images` row {row} is a string but not an existing image file: {str(value)[:120]!r}.")
        source = value
    elif isinstance(value, (np.ndarray, torch.Tensor)):
        if value.ndim not in (2, 3) or 0 in value.shape:
            raise ValueError(
                f"`images` row {row} is an array of shape {tuple(value.shape)}; expected (height, width) or "
                "(height, width, channels) / (channels, height, width) with every side > 0."
            )
        if value.ndim == 2:  # one grey channel, last axis
            value = value[..., None]
    elif not isinstance(value, Image.Image):
        raise TypeError(
            f"`images` row {row} is a {type(value).__name__}; expected a PIL image, an array, encoded image bytes, "
            "a local path, or None for a missing image."
        )
    try:
        if source is not None:
            value = Image.open(source)
        if isinstance(value, Image.Image):
            value.load()  # decode now: a truncated file fails here, not deep inside the image processor
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"`images` row {row} cannot be decoded as an image (corrupt or truncated: {error})."
        ) from error
    return value


def resample(wave: Any, rate: int, target: int) -> np.ndarray:
    """`wave` (1-D) from `rate` to `target` Hz with scipy's polyphase filter (`resample_poly`, up/down reduced)."""
    wave = np.asarray(wave, dtype=np.float32)
    if rate == target:
        return wave
    try:  # an optional dependency, needed only when resampling is asked for
        from scipy.signal import resample_poly
    except ImportError as error:
        raise ImportError("resampling audio needs scipy: `pip install scipy`.") from error
    divisor = math.gcd(int(rate), int(target))
    return resample_poly(wave, int(target) // divisor, int(rate) // divisor).astype(np.float32)


resample_wave = resample  # `MMFNetProcessor.__call__` has a `resample` flag that shadows the function


def _scatter(values: torch.Tensor, rows: list[int], batch_size: int, fill: float = 0) -> torch.Tensor:
    """Place the rows computed for the present samples into a full batch, `fill` elsewhere."""
    if len(rows) == batch_size:
        return values
    full = values.new_full((batch_size, *values.shape[1:]), fill)
    full[rows] = values
    return full


class MMFNetDataCollator:
    r"""Collate `datasets` rows into MMFNet inputs; any modality may be `None` in any row.

    Args:
        processor: the [`MMFNetProcessor`].
        image_column / text_column / audio_column: row keys of each modality (`None` to leave it out). An audio
            value is a waveform array (with its rate in `sampling_rate_column`) or a dict
            `{"array": ..., "sampling_rate": ...}` as the `datasets.Audio` feature gives.
        label_column: row key of the label (`None` for unlabelled data); it becomes `labels`.
        resample_to (`int`, *optional*): resample every clip to this rate (Hz, polyphase filter of
            `scipy.signal.resample_poly`) before the feature extractor; without it, clips must come at the
            extractor's rate.
    """

    def __init__(
        self,
        processor: MMFNetProcessor,
        image_column: str | None = "image",
        text_column: str | None = "text",
        audio_column: str | None = "audio",
        label_column: str | None = "label",
        sampling_rate_column: str | None = "sampling_rate",
        resample_to: int | None = None,
    ) -> None:
        if resample_to is not None and (not isinstance(resample_to, int) or resample_to < 1):
            raise ValueError(f"`resample_to` must be a positive int (Hz) or None, got {resample_to!r}.")
        self.processor = processor
        self.columns = {"vision": image_column, "text": text_column, "audio": audio_column}
        self.label_column = label_column
        self.sampling_rate_column = sampling_rate_column
        self.resample_to = resample_to

    def without(self, modality: str) -> "MMFNetDataCollator":
        """The same collator with `modality` left out of every batch (to measure a model without it)."""
        columns = {m: (None if m == modality else c) for m, c in self.columns.items()}
        return MMFNetDataCollator(
            self.processor,
            image_column=columns["vision"],
            text_column=columns["text"],
            audio_column=columns["audio"],
            label_column=self.label_column,
            sampling_rate_column=self.sampling_rate_column,
            resample_to=self.resample_to,
        )

    def __call__(self, rows: list[dict[str, Any]]) -> BatchFeature:
        rows = check_rows(rows)
        inputs: dict[str, Any] = {}
        for modality, column in self.columns.items():
            if column is None or modality not in self.processor.modalities:
                continue
            missing = [i for i, row in enumerate(rows) if column not in row]
            if missing:
                raise ValueError(
                    f"rows {missing[:5]} have no column {column!r} (the {modality} column); they have "
                    f"{sorted(rows[missing[0]])}. Name the column with `{_COLUMN_ARGUMENTS[modality]}=` (None to "
                    "leave the modality out)."
                )
            inputs[modality] = [row[column] for row in rows]
        sampling_rate = None
        if "audio" in inputs:
            waves, rates = [], set()
            for index, (row, value) in enumerate(zip(rows, inputs["audio"], strict=True)):
                rate = None
                if isinstance(value, dict):
                    if "array" not in value or "sampling_rate" not in value:
                        raise ValueError(
                            f"row {index}: the audio dict in column {self.columns['audio']!r} needs 'array' and "
                            f"'sampling_rate' keys (as `datasets.Audio` gives), got keys {sorted(value)}."
                        )
                    rate, value = value["sampling_rate"], value["array"]
                elif value is not None:
                    if self.sampling_rate_column is None or self.sampling_rate_column not in row:
                        raise ValueError(
                            f"row {index} has a raw waveform in column {self.columns['audio']!r} but no sampling-rate "
                            f"column {self.sampling_rate_column!r}; add one (`sampling_rate_column=`), or store the "
                            "audio as `datasets.Audio` / `{'array', 'sampling_rate'}` dicts."
                        )
                    rate = row[self.sampling_rate_column]
                if value is not None and self.resample_to is not None:
                    value, rate = resample(value, rate, self.resample_to), self.resample_to
                if value is not None and rate is not None:
                    rates.add(rate)
                waves.append(value)
            if len(rates) > 1:
                raise ValueError(
                    f"one batch mixes sampling rates {sorted(rates)}; resample the audio column first (the "
                    "collator's `resample_to`)."
                )
            inputs["audio"], sampling_rate = waves, next(iter(rates), None)
        try:
            batch = self.processor(
                images=inputs.get("vision"),
                text=inputs.get("text"),
                audio=inputs.get("audio"),
                sampling_rate=sampling_rate,
            )
        except (ValueError, TypeError) as error:  # name the dataset column, not the processor argument
            message = str(error)
            for argument, modality in (("images", "vision"), ("audio", "audio"), ("text", "text")):
                message = message.replace(f"`{argument}` row", f"column {self.columns[modality]!r} row")
            raise type(error)(message) from error
        labels = collate_labels(rows, self.label_column)
        if labels is not None:
            batch["labels"] = labels
        return batch


_COLUMN_ARGUMENTS = {"vision": "image_column", "text": "text_column", "audio": "audio_column"}


def check_rows(rows: Any) -> list[Any]:
    """A collator's input: a non-empty list of dict rows."""
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"a collator takes a list of rows (dicts), got {type(rows).__name__}.")
    if len(rows) == 0:
        raise ValueError("the batch is empty (0 rows); a collator needs at least one row.")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"row {index} is a {type(row).__name__}; a collator takes dict rows (column → value).")
    return list(rows)


def collate_labels(rows: list[dict[str, Any]], label_column: str | None) -> torch.Tensor | None:
    """`labels` from `label_column`: None when no row has the column; every row needs a numeric label otherwise."""
    if label_column is None or not any(label_column in row for row in rows):
        return None
    values = [row.get(label_column) for row in rows]
    missing = [i for i, value in enumerate(values) if value is None]
    if missing:
        raise ValueError(
            f"rows {missing[:5]} have no label in column {label_column!r} while others do; every row of a labelled "
            "batch needs one (drop unlabelled rows, or set `label_column=None` for unlabelled data)."
        )
    strings = [i for i, value in enumerate(values) if isinstance(value, str)]
    if strings:
        raise TypeError(
            f"column {label_column!r} holds strings (row {strings[0]}: {values[strings[0]]!r}); labels must be class "
            f"ids or numbers: encode them first, e.g. `dataset.class_encode_column({label_column!r})` or "
            "`config.label2id`."
        )
    try:
        return torch.tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"column {label_column!r} cannot become a tensor of labels ({error}); labels must be ints, floats, or "
            "equal-length lists of floats (multi-label / multi-output)."
        ) from error


__all__ = [
    "MMFNetDataCollator",
    "MMFNetProcessor",
    "MMFNetSpectrogramExtractor",
    "conv_image_processor",
    "conv_spectrogram_extractor",
]
