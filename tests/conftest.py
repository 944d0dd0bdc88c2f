"""Shared fixtures: tiny randomly initialised HF encoders, saved to disk and loaded back with `from_pretrained`."""

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    ASTConfig,
    BertConfig,
    BertTokenizerFast,
    DistilBertConfig,
    ViTConfig,
    ViTImageProcessor,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    WhisperConfig,
)

import modeling_mmfnet as mm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "to",
    "too",
    "for",
    "won",
    "ate",
    "oh",
    "ten",
    "hello",
    "world",
]

SHIPPED_CODE_FILES = frozenset(
    {
        "balance_mmfnet.py",
        "configuration_mmfnet.py",
        "modeling_mmfnet.py",
        "fusion_mmfnet.py",
        "modeling_mmfnet_conv.py",
        "validation_mmfnet.py",
        "saving_mmfnet.py",
        "augmentation_mmfnet.py",
        "pipeline_mmfnet.py",
    }
)
"""The model's code files that `save_pretrained` copies beside the weights (they travel to the Hub)."""


def tiny_vit() -> ViTConfig:
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=4,
        num_channels=3,
    )


def tiny_bert() -> BertConfig:
    return BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )


def tiny_distilbert() -> DistilBertConfig:
    return DistilBertConfig(vocab_size=len(WORDS) + 5, dim=32, n_layers=2, n_heads=2, hidden_dim=64)


def tiny_wav2vec2(**overrides: Any) -> Wav2Vec2Config:
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return Wav2Vec2Config(
        **{**sizes, **overrides},
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=12,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )


def tiny_ast() -> ASTConfig:
    return ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_mel_bins=16,
        max_length=32,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
    )


def tiny_whisper() -> WhisperConfig:
    return WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=16,
        max_source_positions=20,
        vocab_size=40,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def tiny_conv(**kwargs) -> mm.MMFNetConvConfig:
    return mm.MMFNetConvConfig(num_channels=1, hidden_sizes=[8, 16, 16], **kwargs)


def tiny_processor(encoder_dirs: dict[str, Path]) -> mm.MMFNetProcessor:
    """The processor of a seed-CNN (8×8 grey) + tiny BERT + tiny Wav2Vec2 model, its parts loaded from disk."""
    from transformers import AutoFeatureExtractor, AutoTokenizer

    return mm.MMFNetProcessor(
        image_processor=mm.conv_image_processor(8, 1),
        tokenizer=AutoTokenizer.from_pretrained(encoder_dirs["bert"]),
        feature_extractor=AutoFeatureExtractor.from_pretrained(encoder_dirs["wav2vec2"]),
    )


def write_tokenizer(folder: Path) -> BertTokenizerFast:
    """A real WordPiece tokenizer over a tiny vocabulary, saved next to the tiny text encoders."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="session")
def encoder_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random encoders (with their processors) saved with `save_pretrained`, by family name."""
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    configs = {
        "vit": tiny_vit(),
        "bert": tiny_bert(),
        "distilbert": tiny_distilbert(),
        "wav2vec2": tiny_wav2vec2(),
        "ast": tiny_ast(),
        "whisper": tiny_whisper(),
    }
    dirs = {}
    for name, config in configs.items():
        AutoModel.from_config(config).save_pretrained(root / name)
        dirs[name] = root / name
    mm.MMFNetConvModel(tiny_conv()).save_pretrained(root / "conv")
    dirs["conv"] = root / "conv"
    for name in ("bert", "distilbert"):
        write_tokenizer(root / name)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(root / "vit")
    Wav2Vec2FeatureExtractor(sampling_rate=8000, return_attention_mask=True).save_pretrained(root / "wav2vec2")
    return dirs


def three_modality_config(fusion_type: str = "concat", **kwargs) -> mm.MMFNetConfig:
    defaults = dict(fusion_dim=32, fusion_hidden_dim=64, tensor_fusion_dim=4, num_labels=5, dropout=0.0)
    defaults.update(kwargs)
    return mm.MMFNetConfig(
        vision_config=tiny_vit(),
        text_config=tiny_bert(),
        audio_config=tiny_wav2vec2(),
        fusion_type=fusion_type,
        **defaults,
    )


def random_inputs(batch_size: int = 3, seed: int = 0, modalities=("vision", "text", "audio")) -> dict:
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    if "vision" in modalities:
        inputs["pixel_values"] = torch.randn(batch_size, 3, 16, 16, generator=generator)
    if "text" in modalities:
        inputs["input_ids"] = torch.randint(5, len(WORDS) + 5, (batch_size, 6), generator=generator)
        inputs["attention_mask"] = torch.ones(batch_size, 6, dtype=torch.long)
    if "audio" in modalities:
        inputs["input_values"] = torch.randn(batch_size, 800, generator=generator)
    return inputs


BLOCK_PACKAGE = '''
import importlib.abc, sys

class _HidePackage(importlib.abc.MetaPathFinder):
    """Make `modeling_mmfnet` unimportable, as on a machine without the package installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "modeling_mmfnet":
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, _HidePackage())
try:
    import modeling_mmfnet  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("modeling_mmfnet must not be importable here")
'''
"""Prelude for subprocess snippets that must run without the package (the remote-code path)."""


def clean_env(hf_home: Path) -> dict[str, str]:
    """Environment for a fresh client process: own HF_HOME, offline, no inherited HF_/TRANSFORMERS_/PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and k != "PYTHONPATH"
    }
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    return env


def make_tiny_dataset(
    folder: Path,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    image_side: int = 8,
    image_mode: str = "L",
    sampling_rate: int | dict[str, int] = 8000,
) -> Path:
    """A learnable multimodal toy `DatasetDict` (PIL image, text, waveform; some entries None) saved to disk.

    The label is a digit 0–3 shown by all three modalities: a bright image quadrant, a number word, a tone pitch.
    Images are `image_side`² in `image_mode` ("L" or "RGB"); clips last 0.5 s at `sampling_rate` (one rate, or one
    per split).
    """
    import numpy as np
    from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Image, Sequence, Value  # noqa: F401
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    words = ["zero", "one", "two", "three"]
    features = Features(
        {
            "image": Image(),
            "text": Value("string"),
            "audio": Sequence(Value("float32")),
            "sampling_rate": Value("int32"),
            "label": ClassLabel(names=words),
        }
    )
    half = image_side // 2
    channels = {"L": (), "RGB": (3,)}[image_mode]
    splits = {}
    for split, size in (sizes or {"train": 32, "validation": 8, "test": 8}).items():
        rate = sampling_rate[split] if isinstance(sampling_rate, dict) else sampling_rate
        rows = {name: [] for name in features}
        for i in range(size):
            label = int(rng.integers(0, 4))
            pixels = rng.integers(0, 40, (image_side, image_side, *channels)).astype("uint8")
            pixels[
                (label // 2) * half : (label // 2) * half + half, (label % 2) * half : (label % 2) * half + half
            ] = 220
            t = np.arange(rate // 2) / rate
            noise = 0.1 * rng.standard_normal(len(t))
            tone = (np.sin(2 * np.pi * (300 + 200 * label) * t) + noise).astype("float32")
            rows["image"].append(PILImage.fromarray(pixels, image_mode) if i % 5 != 1 else None)
            rows["text"].append(words[label] if i % 5 != 2 else None)
            rows["audio"].append(tone if i % 5 != 3 else None)
            rows["sampling_rate"].append(rate)
            rows["label"].append(label)
        splits[split] = Dataset.from_dict(rows, features=features)
    DatasetDict(splits).save_to_disk(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")
