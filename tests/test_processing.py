"""MMFNetProcessor and MMFNetDataCollator: per-sample missing modalities, every audio key, save/load, bad input."""

import json

import numpy as np
import pytest
import torch
from conftest import BLOCK_PACKAGE, clean_env, tiny_conv
from datasets import load_from_disk
from hub_server import run_client
from PIL import Image
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    BertTokenizerFast,
    ViTImageProcessor,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)

import modeling_mmfnet as mm

RNG = np.random.default_rng(0)
FULL_KEYS = {
    "pixel_values",
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "input_values",
    "audio_attention_mask",
    "modality_mask",
}


def rgb(seed: int, size: int = 20) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")


def grey(seed: int, size: int = 8) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8), "L")


def clip(length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(length).astype(np.float32)


def whisper_like_extractor() -> WhisperFeatureExtractor:
    """Log-mel features sized for the tiny Whisper encoder: 16 mel bins, 2 × max_source_positions = 40 frames."""
    return WhisperFeatureExtractor(feature_size=16, sampling_rate=8000, hop_length=200, chunk_length=1, n_fft=400)


def conv_processor() -> mm.MMFNetProcessor:
    """The seed-CNN processor: 8×8 grey images and 16-bin log-mel spectrograms of 1 s clips at 8 kHz."""
    return mm.MMFNetProcessor(
        image_processor=mm.conv_image_processor(8, 1), feature_extractor=mm.conv_spectrogram_extractor(num_mel_bins=16)
    )


@pytest.fixture(scope="module")
def processor(encoder_dirs) -> mm.MMFNetProcessor:
    """ViT + BERT + Wav2Vec2, each part loaded from the encoder's own folder."""
    return mm.MMFNetProcessor.from_encoders_pretrained(
        vision=encoder_dirs["vit"], text=encoder_dirs["bert"], audio=encoder_dirs["wav2vec2"]
    )


@pytest.fixture(scope="module")
def tokenizer(encoder_dirs) -> BertTokenizerFast:
    return AutoTokenizer.from_pretrained(encoder_dirs["bert"])


# ------------------------------------------------------------------------------------------------ construction
def test_from_encoders_pretrained_uses_each_encoders_processor(processor, encoder_dirs):
    assert isinstance(processor, mm.MMFNetProcessor)
    assert processor.modalities == ("vision", "text", "audio")
    assert processor.image_processor.size == {"height": 16, "width": 16}  # the ViT folder's own settings
    assert processor.tokenizer.convert_tokens_to_ids("seven") == 12  # the tiny vocabulary, not a default one
    assert processor.feature_extractor.sampling_rate == 8000
    assert processor.model_input_names == [
        "pixel_values",
        "input_ids",
        "attention_mask",
        "input_values",
        "audio_attention_mask",
        "modality_mask",
    ]
    text_only = mm.MMFNetProcessor.from_encoders_pretrained(text=encoder_dirs["bert"])
    assert text_only.modalities == ("text",) and text_only.image_processor is None
    assert text_only.feature_extractor is None
    # objects are taken as they are
    extractor = whisper_like_extractor()
    mixed = mm.MMFNetProcessor.from_encoders_pretrained(text=encoder_dirs["bert"], audio=extractor)
    assert mixed.feature_extractor is extractor and mixed.modalities == ("text", "audio")
    with pytest.raises(ValueError, match="needs at least one of"):
        mm.MMFNetProcessor()


# ------------------------------------------------------------------------------------- missing modalities (None)
def test_none_entries_are_padded_and_masked(processor):
    images = [rgb(0), None, rgb(1)]
    text = ["one two three", "four", None]
    audio = [clip(800, 0), None, clip(400, 1)]
    batch = processor(images=images, text=text, audio=audio, sampling_rate=8000, return_tensors="pt")

    assert set(batch) == FULL_KEYS
    assert set(processor.model_input_names) <= set(batch)
    assert batch["modality_mask"].dtype == torch.bool
    expected_mask = [[True, True, True], [False, True, False], [True, False, True]]
    assert batch["modality_mask"].tolist() == expected_mask
    assert all(value.shape[0] == 3 for value in batch.values())

    # present rows are exactly what the part itself gives; missing rows are padding
    alone = processor.image_processor([images[0], images[2]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"][[0, 2]], alone, rtol=0, atol=0)
    assert batch["pixel_values"].shape == (3, 3, 16, 16) and not batch["pixel_values"][1].any()
    assert not batch["attention_mask"][2].any()
    assert (batch["input_ids"][2] == processor.tokenizer.pad_token_id).all()
    assert batch["audio_attention_mask"].sum(-1).tolist() == [800, 0, 400]
    assert not batch["input_values"][1].any()


def test_a_modality_that_is_none_for_every_sample(processor):
    batch = processor(images=[None, None], text=["one", "two"], audio=None)
    assert "pixel_values" not in batch and "input_values" not in batch
    assert batch["modality_mask"].tolist() == [[False, True, False], [False, True, False]]
    only_missing = processor(text=[None, None])
    assert "input_ids" not in only_missing and not only_missing["modality_mask"].any()


def test_single_sample_forms(processor):
    batch = processor(images=rgb(0), text="one two", audio=clip(300), sampling_rate=8000)
    assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0] == batch["input_values"].shape[0] == 1
    assert batch["modality_mask"].tolist() == [[True, True, True]]
    # torch tensors and plain lists are waveforms too
    batch = processor(audio=[torch.from_numpy(clip(300)), clip(200).tolist()], sampling_rate=8000)
    assert batch["audio_attention_mask"].sum(-1).tolist() == [300, 200]


# ------------------------------------------------------------------------------------------------------- errors
def test_bad_input_errors(processor, tokenizer):
    with pytest.raises(ValueError, match=r"same batch size.*'vision': 2.*'text': 3"):
        processor(images=[rgb(0), rgb(1)], text=["one", "two", "three"])
    with pytest.raises(ValueError, match=r"`sampling_rate` is 16000 Hz but the feature extractor expects 8000 Hz"):
        processor(audio=[clip(800)], sampling_rate=16000)
    with pytest.raises(ValueError, match=r"mixes PIL modes \['L', 'RGB'\].*convert"):
        processor(images=[rgb(0), None, grey(1)])
    with pytest.raises(ValueError, match="Pass at least one of `images`, `text`, `audio`"):
        processor()
    with pytest.raises(ValueError, match="mono waveform"):
        processor(audio=[np.zeros((2, 100), dtype=np.float32)], sampling_rate=8000)
    text_only = mm.MMFNetProcessor(tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"`images` was given but this processor has no image_processor"):
        text_only(images=[rgb(0)], text=["one"])


# ------------------------------------------------------------------------------------------------ text padding
def test_text_padding_with_the_real_tokenizer(processor, tokenizer):
    text = ["one two three four", None, "five"]
    batch = processor(text=text)
    reference = tokenizer([text[0], text[2]], padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        torch.testing.assert_close(batch[key][[0, 2]], reference[key], rtol=0, atol=0)
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert tokenizer.convert_ids_to_tokens(first.tolist()) == ["[CLS]", "one", "two", "three", "four", "[SEP]"]
    assert batch["attention_mask"].sum(-1).tolist() == [6, 0, 3]  # "five": [CLS] five [SEP], then padding
    assert (batch["input_ids"][2, 3:] == tokenizer.pad_token_id).all()
    fixed = processor(text=text, text_kwargs={"padding": "max_length", "max_length": 8})
    assert fixed["input_ids"].shape == (3, 8)
    short = processor(text=text, text_kwargs={"max_length": 3})
    assert short["input_ids"].shape == (3, 3)  # truncation is on by default


# ---------------------------------------------------------------------------------------------- audio input keys
def test_wav2vec2_gives_input_values_and_audio_attention_mask(processor):
    clips = [clip(500, 0), None, clip(800, 1)]
    batch = processor(audio=clips, sampling_rate=8000)
    assert set(batch) == {"input_values", "audio_attention_mask", "modality_mask"}
    assert batch["input_values"].shape == (3, 800)
    assert batch["audio_attention_mask"].sum(-1).tolist() == [500, 0, 800]
    # each clip is normalised over its own samples only: padding does not change it
    alone = processor(audio=[clips[0]], sampling_rate=8000)["input_values"][0]
    torch.testing.assert_close(batch["input_values"][0, :500], alone, rtol=0, atol=1e-5)
    assert not batch["input_values"][0, 500:].any()
    assert abs(float(alone.mean())) < 1e-3 and abs(float(alone.std()) - 1) < 1e-2


def test_whisper_like_extractor_gives_input_features(encoder_dirs):
    processor = mm.MMFNetProcessor.from_encoders_pretrained(text=encoder_dirs["bert"], audio=whisper_like_extractor())
    assert "input_features" in processor.model_input_names and "input_values" not in processor.model_input_names
    batch = processor(text=["one", "two", None], audio=[clip(3000), None, clip(6000, 1)], sampling_rate=8000)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "input_features", "audio_attention_mask",
                          "modality_mask"}  # fmt: skip
    assert batch["input_features"].shape == (3, 16, 40)  # always padded to the extractor's 1 s window
    assert batch["audio_attention_mask"].sum(-1).tolist() == [15, 0, 30]  # frames at a 200-sample hop
    assert not batch["input_features"][1].any()
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        text=encoder_dirs["bert"], audio=encoder_dirs["whisper"], num_labels=3, fusion_dim=16
    ).eval()
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (3, 3) and torch.isfinite(out.logits).all()
    assert out.modality_mask.tolist() == batch["modality_mask"].tolist()


def test_seed_cnn_processor_fits_the_conv_backbone():
    processor = conv_processor()
    assert processor.modalities == ("vision", "audio")
    batch = processor(images=[grey(0, 20), None, grey(1, 5)], audio=[None, clip(4000), clip(9000, 1)],
                      sampling_rate=8000)  # fmt: skip
    assert set(batch) == {"pixel_values", "input_features", "audio_attention_mask", "modality_mask"}
    assert batch["pixel_values"].shape == (3, 1, 8, 8)  # resized, one channel
    present = batch["pixel_values"][[0, 2]]
    assert present.min() >= -1 and present.max() <= 1 and present.min() < 0 < present.max()
    assert batch["input_features"].shape == (3, 16, 100)  # 10 ms hop, padded / cut to 1 s
    assert batch["audio_attention_mask"].sum(-1).tolist() == [0, 50, 100]
    assert batch["modality_mask"].tolist() == [[True, False], [False, True], [True, True]]
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=tiny_conv(), audio=tiny_conv(), num_labels=4, fusion_dim=16
    ).eval()
    with torch.no_grad():
        out = model(**batch, labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 4) and torch.isfinite(out.loss)
    # an RGB seed CNN gets three channels, grey images included
    rgb_batch = mm.MMFNetProcessor(image_processor=mm.conv_image_processor(8, 3))(images=[grey(0)])
    assert rgb_batch["pixel_values"].shape == (1, 3, 8, 8)


# ------------------------------------------------------------------------------------------- model on the output
def test_model_forward_on_processor_output_is_per_sample(processor, encoder_dirs):
    """The padded, partly missing batch gives each sample the logits it gets alone: padding and None are inert."""
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=encoder_dirs["vit"], text=encoder_dirs["bert"], audio=encoder_dirs["wav2vec2"],
        fusion_type="transformer", fusion_dim=16, num_labels=5,
    ).eval()  # fmt: skip
    images = [rgb(0), None, rgb(1), rgb(2)]
    text = ["one two three four five", "six", None, "seven eight"]
    audio = [clip(800, 0), clip(800, 1), clip(800, 2), None]  # equal lengths: wav2vec2's GroupNorm sees padding
    batch = processor(images=images, text=text, audio=audio, sampling_rate=8000)
    with torch.no_grad():
        out = model(**batch, labels=torch.tensor([0, 1, 2, 3]))
    assert out.logits.shape == (4, 5) and torch.isfinite(out.loss)
    assert out.modality_mask.tolist() == batch["modality_mask"].tolist()
    for i in range(4):
        single = processor(images=[images[i]], text=[text[i]], audio=[audio[i]], sampling_rate=8000)
        with torch.no_grad():
            logits = model(**single).logits
        torch.testing.assert_close(logits[0], out.logits[i], rtol=0, atol=1e-5, msg=f"sample {i}")


# --------------------------------------------------------------------------------------------------- save / load
def _processors(encoder_dirs) -> dict[str, mm.MMFNetProcessor]:
    return {
        "full": mm.MMFNetProcessor.from_encoders_pretrained(
            vision=encoder_dirs["vit"], text=encoder_dirs["bert"], audio=encoder_dirs["wav2vec2"]
        ),
        "text_only": mm.MMFNetProcessor.from_encoders_pretrained(text=encoder_dirs["bert"]),
        "seed_cnn": conv_processor(),
    }


def _inputs(name: str) -> dict:
    inputs = {
        "full": dict(images=[rgb(0), None], text=["one two", None], audio=[None, clip(700)], sampling_rate=8000),
        "text_only": dict(text=["one two three", None, "four"]),
        "seed_cnn": dict(images=[grey(0), None], audio=[clip(3000), clip(5000, 1)], sampling_rate=8000),
    }
    return inputs[name]


@pytest.mark.parametrize("name", ["full", "text_only", "seed_cnn"])
def test_save_and_auto_processor_round_trip(name, encoder_dirs, tmp_path):
    processor = _processors(encoder_dirs)[name]
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_mmfnet.MMFNetProcessor"}
    assert (tmp_path / "processing_mmfnet.py").is_file()
    parts = {"full": ["image_processor", "tokenizer", "feature_extractor"], "text_only": ["tokenizer"],
             "seed_cnn": ["image_processor", "feature_extractor"]}[name]  # fmt: skip
    assert saved["present_parts"] == parts

    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, mm.MMFNetProcessor)
    assert loaded.modalities == processor.modalities
    assert [type(getattr(loaded, part)).__name__ if getattr(loaded, part) is not None else None
            for part in ("image_processor", "feature_extractor")] == [
        type(getattr(processor, part)).__name__ if getattr(processor, part) is not None else None
        for part in ("image_processor", "feature_extractor")
    ]  # fmt: skip
    expected, again = processor(**_inputs(name)), loaded(**_inputs(name))
    assert set(again) == set(expected)
    for key in expected:
        torch.testing.assert_close(again[key], expected[key], rtol=0, atol=0, msg=key)


def test_processor_loads_as_remote_code_without_the_package(encoder_dirs, tmp_path):
    folder = tmp_path / "processor"
    processor = _processors(encoder_dirs)["full"]
    processor.save_pretrained(folder)
    expected = processor(**_inputs("full"))
    code = (
        BLOCK_PACKAGE
        + """
import numpy as np
from PIL import Image
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained(V["folder"], trust_remote_code=True)
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8), "RGB")
audio = np.random.default_rng(0).standard_normal(700).astype(np.float32)
batch = processor(images=[image, None], text=["one two", None], audio=[None, audio], sampling_rate=8000)
RESULT = {
    "module": type(processor).__module__,
    "modalities": list(processor.modalities),
    "batch": {key: value.tolist() for key, value in batch.items()},
}
"""
    )
    result = run_client(code, clean_env(tmp_path / "hf_home"), tmp_path, folder=str(folder))
    assert result["module"].startswith("transformers_modules."), result["module"]
    assert result["modalities"] == ["vision", "text", "audio"]
    assert set(result["batch"]) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(torch.tensor(result["batch"][key], dtype=value.dtype), value, msg=key)


# ----------------------------------------------------------------------------------------------------- collator
@pytest.fixture(scope="module")
def rows(tiny_dataset) -> list[dict]:
    return list(load_from_disk(tiny_dataset)["train"].select(range(10)))


@pytest.fixture(scope="module")
def collator(encoder_dirs) -> mm.MMFNetDataCollator:
    processor = mm.MMFNetProcessor(
        image_processor=mm.conv_image_processor(8, 1),
        tokenizer=AutoTokenizer.from_pretrained(encoder_dirs["bert"]),
        feature_extractor=mm.conv_spectrogram_extractor(num_mel_bins=16),
    )
    return mm.MMFNetDataCollator(processor)


def test_collator_on_dataset_rows_with_missing_entries(collator, rows):
    batch = collator(rows)
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids", "input_features",
                          "audio_attention_mask", "modality_mask", "labels"}  # fmt: skip
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    expected = [[row[c] is not None for c in ("image", "text", "audio")] for row in rows]
    assert batch["modality_mask"].tolist() == expected
    assert not all(all(row) for row in expected)  # the toy data does miss modalities
    assert batch["pixel_values"].shape == (10, 1, 8, 8) and batch["input_features"].shape == (10, 16, 100)
    # text padded to the longest present row; audio of 4000 samples = 50 frames of the 100-frame window
    assert batch["attention_mask"].sum(-1).tolist() == [3 if row["text"] else 0 for row in rows]
    assert batch["audio_attention_mask"].sum(-1).tolist() == [50 if row["audio"] else 0 for row in rows]
    # a row's features do not depend on its batch
    for i in (0, 4):
        single = collator([rows[i]])
        for key in ("pixel_values", "input_features"):
            torch.testing.assert_close(single[key][0], batch[key][i], rtol=0, atol=1e-6)


def test_collator_takes_the_datasets_audio_dict_form(collator, rows):
    as_dicts = [
        {**{k: v for k, v in row.items() if k not in ("audio", "sampling_rate")},
         "audio": None if row["audio"] is None else {"array": np.asarray(row["audio"]), "sampling_rate": 8000}}
        for row in rows
    ]  # fmt: skip
    expected, batch = collator(rows), collator(as_dicts)
    assert set(batch) == set(expected)
    for key in expected:
        torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0, msg=key)
    wrong_rate = [{**row, "audio": {**row["audio"], "sampling_rate": 16000}} if row["audio"] else row
                  for row in as_dicts]  # fmt: skip
    with pytest.raises(ValueError, match="expects 8000 Hz"):
        collator(wrong_rate)
    mixed = [wrong_rate[0], *as_dicts[1:]]
    with pytest.raises(ValueError, match=r"mixes sampling rates \[8000, 16000\]"):
        collator(mixed)


def test_collator_missing_column_and_unlabelled_rows(collator, rows):
    renamed = mm.MMFNetDataCollator(collator.processor, text_column="caption")
    with pytest.raises(ValueError, match=r"no column 'caption' \(the text column\).*`text_column=`"):
        renamed(rows)
    unlabelled = mm.MMFNetDataCollator(collator.processor, label_column=None)
    assert "labels" not in unlabelled(rows)
    no_label_rows = [{k: v for k, v in row.items() if k != "label"} for row in rows]
    assert "labels" not in collator(no_label_rows)


def test_collator_without_a_modality(collator, rows):
    full = collator(rows)
    for column, modality in enumerate(("vision", "text", "audio")):
        reduced = collator.without(modality)
        assert reduced.columns[modality] is None and collator.columns[modality] is not None  # a copy
        batch = reduced(rows)
        assert not batch["modality_mask"][:, column].any()
        others = [c for c in range(3) if c != column]
        assert batch["modality_mask"][:, others].tolist() == full["modality_mask"][:, others].tolist()
        dropped = set(mm.ENCODER_INPUT_NAMES[modality]) & set(full)
        assert dropped and set(batch) == set(full) - dropped
        for key in set(batch) - {"modality_mask"}:
            torch.testing.assert_close(batch[key], full[key], rtol=0, atol=0, msg=key)


def test_collator_output_trains_a_model(collator, rows, encoder_dirs):
    """One optimisation step on a collated batch: every encoder that saw a present row gets a gradient."""
    torch.manual_seed(0)
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=tiny_conv(), text=encoder_dirs["bert"], audio=tiny_conv(), fusion_dim=16, num_labels=4
    )
    model.train()
    out = model(**collator(rows))
    out.loss.backward()
    for name in ("vision_model", "text_model", "audio_model"):
        grads = [p.grad for p in getattr(model.mmfnet, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name


def test_processor_parts_are_checked(tokenizer):
    with pytest.raises((TypeError, ValueError)):
        mm.MMFNetProcessor(tokenizer=ViTImageProcessor())
    assert mm.MMFNetProcessor(feature_extractor=Wav2Vec2FeatureExtractor()).modalities == ("audio",)
