"""Issue 14, processor and collator: bad waveforms, images and rows get errors naming the row and column; nothing
is fetched over the network unless asked; padding that changes a group-norm backbone's outputs is announced."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import resample_poly
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

import modeling_mmfnet as mm


def grey(seed: int = 0, size: int = 8) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size)).astype("uint8"), "L")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wave(length: int = 4000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(length).astype(np.float32)


@pytest.fixture(scope="module")
def processor() -> mm.MMFNetProcessor:
    """Seed-CNN parts: 8×8 one-channel images, 16-bin log-mel spectrograms of 1 s clips at 8 kHz."""
    return mm.MMFNetProcessor(
        image_processor=mm.conv_image_processor(8, 1), feature_extractor=mm.conv_spectrogram_extractor(num_mel_bins=16)
    )


@pytest.fixture(scope="module")
def truncated_png(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("images") / "truncated.png"
    data = png_bytes(grey(size=64))
    path.write_bytes(data[: len(data) // 2])
    return str(path)


PROCESSOR_CASES = [
    ("no_sampling_rate", lambda p, _: p(audio=[wave()]), ValueError, r"`sampling_rate` is required with `audio`"),
    ("other_rate", lambda p, _: p(audio=[wave()], sampling_rate=16000), ValueError,
     r"`sampling_rate` is 16000 Hz but the feature extractor expects 8000 Hz.*`resample=True`"),
    ("rate_not_int", lambda p, _: p(audio=[wave()], sampling_rate="8000"), ValueError,
     r"`sampling_rate` must be a positive int \(Hz\), got '8000'"),
    ("empty_clip", lambda p, _: p(audio=[wave(), np.zeros(0)], sampling_rate=8000), ValueError,
     r"`audio` row 1 is an empty clip \(0 samples\); use None"),
    ("nan_clip", lambda p, _: p(audio=[np.full(800, np.nan)], sampling_rate=8000), ValueError,
     r"`audio` row 0 holds NaN or inf samples"),
    ("stereo_clip", lambda p, _: p(audio=[None, np.zeros((2, 800))], sampling_rate=8000), ValueError,
     r"`audio` row 1: each entry must be a mono waveform .* got shape \(2, 800\)"),
    ("garbage_bytes", lambda p, _: p(images=[grey(), b"not an image"]), ValueError,
     r"`images` row 1 cannot be decoded as an image \(corrupt or truncated"),
    ("truncated_file", lambda p, path: p(images=[path]), ValueError,
     r"`images` row 0 cannot be decoded as an image \(corrupt or truncated: .*truncated"),
    ("missing_file", lambda p, _: p(images=[None, "no/such/image.png"]), ValueError,
     r"`images` row 1 is a string but not an existing image file"),
    ("url", lambda p, _: p(images=["https://example.com/cat.png"]), ValueError,
     r"`images` row 0 is a URL .* fetches nothing over the network unless asked.*`allow_remote_images=True`"),
    ("rgb_array_into_grey", lambda p, _: p(images=[np.zeros((8, 8, 3), dtype=np.uint8)]), ValueError,
     r"`images` row 0 has 3 channel\(s\) but the image processor normalises 1 \(image_mean=\[0.5\]\)"),
    ("not_an_image", lambda p, _: p(images=[42]), TypeError, r"`images` row 0 is a int; expected a PIL image"),
    ("empty_array_image", lambda p, _: p(images=[grey(), np.zeros((0, 8))]), ValueError,
     r"`images` row 1 is an array of shape \(0, 8\)"),
    ("int16_audio", lambda p, _: p(audio=[(wave() * 1000).astype(np.int16)], sampling_rate=8000), TypeError,
     r"`audio` row 0 holds integer samples \(int16, e.g. 16-bit PCM\); convert them to floats in \[-1, 1\]"),
    ("empty_batch", lambda p, _: p(images=[], audio=[]), ValueError, r"the batch is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"), [c[1:] for c in PROCESSOR_CASES], ids=[c[0] for c in PROCESSOR_CASES]
)
def test_bad_processor_input(processor, truncated_png, call, error, message):
    with pytest.raises(error, match=message):
        call(processor, truncated_png)


def test_encoded_images_and_resampling_are_correct(processor):
    image = grey(3)
    from_pil = processor(images=[image])["pixel_values"]
    rgb = image.convert("RGB")  # a colour PIL image into the one-channel processor becomes grey (not an error)
    torch.testing.assert_close(processor(images=[rgb])["pixel_values"], from_pil, rtol=0, atol=0)
    for encoded in (png_bytes(image), {"bytes": png_bytes(image), "path": None}):
        torch.testing.assert_close(processor(images=[encoded])["pixel_values"], from_pil, rtol=0, atol=0)
    grey_array = np.asarray(image)  # (height, width): one channel
    torch.testing.assert_close(processor(images=[grey_array])["pixel_values"], from_pil, rtol=0, atol=0)
    clip = wave(8000)
    resampled = processor(audio=[clip], sampling_rate=16000, resample=True)["input_features"]
    expected = processor(audio=[resample_poly(clip, 1, 2).astype(np.float32)], sampling_rate=8000)["input_features"]
    torch.testing.assert_close(resampled, expected)


def test_clips_longer_than_the_window_warn_once():
    extractor = WhisperFeatureExtractor(feature_size=16, sampling_rate=8000, hop_length=80, chunk_length=3, n_fft=256)
    processor = mm.MMFNetProcessor(feature_extractor=extractor)
    with pytest.warns(UserWarning, match=r"longer than the feature extractor's window \(24000 samples = 3 s"):
        processor(audio=[wave(30000)], sampling_rate=8000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(audio=[wave(30000)], sampling_rate=8000)  # once only
        processor(audio=[wave(20000)], sampling_rate=8000)  # fits: no warning


def test_group_norm_wav2vec2_padding_is_announced_and_unmasked():
    """A Wav2Vec2 extractor with return_attention_mask=False serves a group-norm backbone: no mask, and a warning
    when clips of different lengths are padded (their outputs then differ from each clip alone)."""
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=8000, return_attention_mask=False)
    processor = mm.MMFNetProcessor(feature_extractor=extractor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = processor(audio=[wave(800), wave(800, 1)], sampling_rate=8000)
    assert "audio_attention_mask" not in same
    with pytest.warns(UserWarning, match=r"return_attention_mask=False \(a group-norm Wav2Vec2-style backbone"):
        padded = processor(audio=[wave(800), wave(500, 1)], sampling_rate=8000)
    assert "audio_attention_mask" not in padded and padded["input_values"].shape == (2, 800)


# ------------------------------------------------------------------------------------------------------ collator
def row(seed: int = 0, **changes) -> dict:
    return {"image": grey(seed), "audio": wave(4000, seed), "sampling_rate": 8000, "label": seed % 3, **changes}


COLLATOR_CASES = [
    ("empty_batch", [], ValueError, r"the batch is empty \(0 rows\)"),
    ("not_dict_rows", [("image", None)], TypeError, r"row 0 is a tuple; a collator takes dict rows"),
    ("first_row_unlabelled", [{k: v for k, v in row().items() if k != "label"}, row(1)], ValueError,
     r"rows \[0\] have no label in column 'label' while others do"),
    ("none_label", [row(0), row(1, label=None)], ValueError, r"rows \[1\] have no label in column 'label'"),
    ("string_labels", [row(0, label="cat"), row(1, label="dog")], TypeError,
     r"column 'label' holds strings \(row 0: 'cat'\).*class_encode_column"),
    ("ragged_labels", [row(0, label=[0.0, 1.0]), row(1, label=[1.0])], TypeError,
     r"column 'label' cannot become a tensor of labels"),
    ("missing_column", [{k: v for k, v in row().items() if k != "image"}], ValueError,
     r"rows \[0\] have no column 'image' \(the vision column\).*`image_column=`"),
    ("audio_dict_without_rate", [row(0, audio={"array": wave()})], ValueError,
     r"row 0: the audio dict in column 'audio' needs 'array' and 'sampling_rate' keys"),
    ("wave_without_rate_column", [{k: v for k, v in row().items() if k != "sampling_rate"}], ValueError,
     r"row 0 has a raw waveform in column 'audio' but no sampling-rate column 'sampling_rate'"),
    ("corrupt_image", [row(0), row(1, image=b"\x89PNG broken")], ValueError,
     r"column 'image' row 1 cannot be decoded as an image"),
    ("empty_clip", [row(0, audio=np.zeros(0, dtype=np.float32))], ValueError,
     r"column 'audio' row 0 is an empty clip"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "error", "message"), [c[1:] for c in COLLATOR_CASES], ids=[c[0] for c in COLLATOR_CASES]
)
def test_bad_collator_rows(processor, rows, error, message):
    collator = mm.MMFNetDataCollator(processor, text_column=None)
    with pytest.raises(error, match=message):
        collator(rows)


def test_collator_good_rows_and_embedding_collator(processor):
    collator = mm.MMFNetDataCollator(processor, text_column=None)
    batch = collator([row(0), row(1, audio={"array": wave(3000, 1), "sampling_rate": 8000})])
    assert batch["labels"].tolist() == [0, 1] and batch["pixel_values"].shape == (2, 1, 8, 8)
    assert "labels" not in collator([{k: v for k, v in row().items() if k != "label"}])  # unlabelled data
    embedding_collator = mm.MMFNetEmbeddingCollator()
    with pytest.raises(ValueError, match=r"rows \[0\] have no 'modality_mask' column"):
        embedding_collator([{"vision_embeds": np.zeros(4, dtype=np.float32), "label": 0}])
    with pytest.raises(ValueError, match=r"the batch is empty"):
        embedding_collator([])
