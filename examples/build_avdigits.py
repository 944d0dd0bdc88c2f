"""Build the offline AV-Digits(+text) benchmark: handwritten digit images, spoken digits and noisy transcripts.

Sources (all offline):

* **image** -- real handwritten digits from ``sklearn.datasets.load_digits()`` (1,797 8x8 images), split disjointly
  (per class 60/10/30 %) between train / validation / test, bilinearly upscaled to ``image_size`` and degraded per
  sample with Gaussian pixel noise and a random occluding square.
* **audio** -- spoken digit words synthesised with ``espeak-ng`` (English dialects x voice variants, random speed and
  pitch) and ``flite`` (kal, awb, rms, slt), resampled to 8 kHz mono float32, silence trimmed, RMS normalised, placed
  at a random offset in a ``max_seconds`` window and mixed with white noise at ``snr_db``. Speakers (espeak-ng
  variants / flite voices) are split disjointly between train / validation / test. Clean clips are cached on disk.
* **test_real** -- real human recordings of 0-9 from Debian's ``asterisk-core-sounds-en-wav`` paired with test images
  (same corruption as ``test``); present only when that package is installed.
* **text** -- a noisy transcript: the digit word with random typos, homophones ("to", "for", "ate", ...), a wrong
  digit word (``text_confusion_prob``) or missing (``None``, ``text_missing_prob``).

Tasks: ``agree`` (every modality shows the label digit) and ``sum`` (image digit ``a``, spoken digit ``b``, label
``(a + b) % 10``; the text transcribes the spoken digit). ``retranscribe`` derives the *imbalanced* variant of
``agree`` (``IMBALANCED_TEXT``: the same images, audio and labels, clean transcripts; text alone is then the one strong
modality).

Usage::

    python examples/build_avdigits.py --output_dir data/avdigits --task agree
    python examples/build_avdigits.py --output_dir /tmp/avdigits_small --small
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from math import gcd, inf, isfinite
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value, concatenate_datasets
from PIL import Image as PILImage
from scipy.io import wavfile
from scipy.signal import resample_poly
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

SAMPLING_RATE = 8000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ALIASES = {0: ("oh", "nought"), 1: ("won",), 2: ("to", "too"), 4: ("for", "fore"), 8: ("ate",)}
ESPEAK_DIALECTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
# Human-sounding espeak-ng voice variants (robotic/whisper variants and byte-identical duplicates left out).
ESPEAK_VARIANTS = (
    *(f"f{i}" for i in range(1, 6)),
    *(f"m{i}" for i in range(1, 9)),
    *("Alex", "Alicia", "Andrea", "Andy", "Annie", "Denis", "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Marco"),
    *("Mario", "Michael", "Mike", "Nguyen", "Storm", "adam", "anika", "antonio", "announcer", "aunty", "belinda"),
    *("benjamin", "boris", "david", "ed", "edward", "grandma", "grandpa", "gustave", "iven", "john", "kaukovalta"),
    *("klatt", "klatt2", "klatt3", "klatt4", "klatt5", "linda", "max", "michel", "miguel", "norbert", "pablo"),
    *("paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph", "travis", "victor", "zac"),
)
FLITE_VOICES = ("kal", "awb", "rms", "slt")
SPEEDS = (130, 150, 175, 200, 230)  # espeak-ng words per minute (flite: duration stretch 175 / speed)
PITCHES = (25, 40, 50, 60, 75)  # espeak-ng pitch 0..99 (flite keeps its own pitch)
SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.1, "test": 0.3}  # images; speakers use 0.7 / 0.1 / 0.2
TASK_DEFAULTS = {
    "agree": {"snr_db": 3.0, "image_noise": 0.3, "image_occlusion": 0.4},
    "sum": {"snr_db": inf, "image_noise": 0.0, "image_occlusion": 0.0},
}
IMBALANCED_TEXT = {"missing": 0.0, "confusion": 0.03, "alias": 0.2, "typo": 0.04}
"""Transcript noise of the imbalanced variant: never missing, 3 % wrong digit words, fewer typos."""
ASTERISK_PACKAGE = "asterisk-core-sounds-en-wav"
SPEECH_RMS = 0.05
LICENSES = (
    "images: scikit-learn digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0; scikit-learn BSD-3); "
    "synthetic speech: generated with espeak-ng (GPL-3.0, output unencumbered) and flite (BSD-style); "
    "test_real speech: Asterisk core sounds (CC-BY-SA-3.0); transcripts: generated."
)


FEATURES = Features(
    {
        "image": Image(),
        "audio": List(Value("float32")),
        "sampling_rate": Value("int32"),
        "text": Value("string"),
        "label": ClassLabel(names=[str(i) for i in range(10)]),
        "image_digit": Value("int32"),
        "audio_digit": Value("int32"),
        "text_digit": Value("int32"),  # -1 when the text is missing
        "voice": Value("string"),
        "image_id": Value("int32"),  # row of sklearn's load_digits()
    }
)
_SAMPLE_FEATURES = Features({k: v for k, v in FEATURES.items() if k not in ("audio", "sampling_rate")})


@dataclass(frozen=True)
class _Sample:
    image_id: int
    image_digit: int
    audio_path: str
    audio_digit: int
    voice: str
    text: str | None
    text_digit: int
    label: int
    seed: int


def _ensure_tools(binaries: dict[str, str], extra_packages: list[str], install: bool) -> None:
    """Check ``binaries`` (name -> Debian package); as root with ``install``, apt-get install what is missing."""
    missing = sorted({pkg for binary, pkg in binaries.items() if shutil.which(binary) is None})
    if (missing or extra_packages) and install and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = sorted({*missing, *extra_packages})
        print(f"build_avdigits: apt-get update && apt-get install -y {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, env=env)
        missing = sorted({pkg for binary, pkg in binaries.items() if shutil.which(binary) is None})
    if missing:
        names = ", ".join(f"{binary!r} (Debian package {pkg})" for binary, pkg in binaries.items() if pkg in missing)
        raise RuntimeError(
            f"build_avdigits: {names} not found. Install with `sudo apt-get install -y {' '.join(missing)}`, "
            "or run as root with install_missing=True."
        )


def _find_asterisk_digits(root: str) -> dict[str, list[str]]:
    """Map each English Asterisk speaker (resolved folder name) to its recordings of 0..9."""
    speakers = {}
    for digits_dir in sorted({p.resolve() for p in Path(root).glob("en*/digits")}):
        paths = [digits_dir / f"{d}.wav" for d in range(10)]
        if all(p.is_file() for p in paths):
            speakers[f"asterisk:{digits_dir.parent.name}"] = [str(p) for p in paths]
    return speakers


def _split_items(items: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Shuffle and split ``items`` 70/10/20 % (at least one each) into train / validation / test."""
    items = [items[i] for i in rng.permutation(len(items))]
    n_val, n_test = max(1, round(0.1 * len(items))), max(1, round(0.2 * len(items)))
    return {"validation": items[:n_val], "test": items[n_val : n_val + n_test], "train": items[n_val + n_test :]}


def _make_text(
    digit: int, rng: np.random.Generator, missing: float, confusion: float, alias: float, typo: float
) -> tuple[str | None, int]:
    """Noisy transcript of ``digit``: returns ``(text or None, digit the text names or -1)``."""
    if rng.random() < missing:
        return None, -1
    if rng.random() < confusion:
        digit = int((digit + rng.integers(1, 10)) % 10)
    word = DIGIT_WORDS[digit]
    if digit in ALIASES and rng.random() < alias:
        word = str(rng.choice(ALIASES[digit]))
    out, i = [], 0
    while i < len(word):
        op = rng.integers(3) if rng.random() < typo else -1
        if op == 1 and i + 1 < len(word):  # swap with the next character
            out += [word[i + 1], word[i]]
            i += 1
        elif op == 2:  # replace
            out.append(chr(ord("a") + int(rng.integers(26))))
        elif op != 0:  # keep (op 0 drops the character)
            out.append(word[i])
        i += 1
    return "".join(out) or word, digit


def _tts_command(
    voice: str, speed: int, pitch: int, digit: int, path: str, espeak_bin: str, flite_bin: str
) -> list[str]:
    engine, name = voice.split(":", 1)
    word = DIGIT_WORDS[digit]
    if engine == "espeak-ng":
        return [espeak_bin, "-v", name, "-s", str(speed), "-p", str(pitch), "-w", path, word]
    return [flite_bin, "-voice", name, "--setf", f"duration_stretch={175 / speed:.3f}", "-t", word, "-o", path]


def _synthesize(commands: dict[str, list[str]], num_workers: int) -> None:
    """Run the TTS ``commands`` (cache path -> argv) in parallel, writing each file atomically."""

    def run(item: tuple[str, list[str]]) -> None:
        path, cmd = item
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=os.path.dirname(path))
        os.close(fd)
        cmd = [tmp if arg == path else arg for arg in cmd]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or os.path.getsize(tmp) == 0:
            os.unlink(tmp)
            raise RuntimeError(f"TTS failed: {' '.join(cmd)}\n{result.stderr}")
        os.replace(tmp, path)

    with ThreadPoolExecutor(num_workers) as pool:
        list(tqdm(pool.map(run, commands.items()), total=len(commands), desc="synthesising speech", unit="clip"))


def _load_clip(path: str) -> np.ndarray:
    """Read a WAV file as 8 kHz mono float32 with silence (35 dB below the loudest 10 ms frame) trimmed."""
    sr, x = wavfile.read(path)
    x = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0)
    if x.ndim > 1:
        x = x.mean(axis=1)
    if sr != SAMPLING_RATE:
        g = gcd(sr, SAMPLING_RATE)
        x = resample_poly(x, SAMPLING_RATE // g, sr // g).astype(np.float32)
    frame = SAMPLING_RATE // 100
    n = len(x) // frame
    rms = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    return x[active[0] * frame : (active[-1] + 1) * frame]


def _render_audio(clip: np.ndarray, length: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    clip = clip[:length] * (SPEECH_RMS / (np.sqrt(np.mean(clip**2)) + 1e-8))
    out = np.zeros(length, np.float32)
    offset = int(rng.integers(0, length - len(clip) + 1))
    out[offset : offset + len(clip)] = clip
    if isfinite(snr_db):
        out += rng.standard_normal(length).astype(np.float32) * np.float32(SPEECH_RMS * 10 ** (-snr_db / 20))
    return out


def _render_image(
    pixels: np.ndarray, size: int, noise: float, occlusion: float, rng: np.random.Generator
) -> PILImage.Image:
    img = PILImage.fromarray(np.uint8(pixels * (255 / 16))).resize((size, size), PILImage.BILINEAR)
    x = np.asarray(img, np.float32) / 255
    x = x + noise * rng.standard_normal(x.shape).astype(np.float32)
    side = round(occlusion * size)
    if side:
        r, c = rng.integers(0, size - side + 1, size=2)
        x[r : r + side, c : c + side] = rng.random()
    return PILImage.fromarray(np.uint8(np.clip(x, 0, 1) * 255 + 0.5), mode="L")


def build_avdigits(
    output_dir: str | None = None,
    task: Literal["agree", "sum"] = "agree",
    seed: int = 0,
    n_train: int = 3000,
    n_validation: int = 500,
    n_test: int = 1000,
    n_test_real: int = 200,
    snr_db: float | None = None,
    image_noise: float | None = None,
    image_occlusion: float | None = None,
    image_size: int = 16,
    text_missing_prob: float = 0.15,
    text_confusion_prob: float = 0.1,
    text_alias_prob: float = 0.2,
    text_typo_prob: float = 0.08,
    max_seconds: float = 1.0,
    use_flite: bool = True,
    espeak_bin: str = "espeak-ng",
    flite_bin: str = "flite",
    asterisk_dir: str = "/usr/share/asterisk/sounds",
    cache_dir: str | None = None,
    install_missing: bool = True,
    num_workers: int | None = None,
) -> DatasetDict:
    """Build (and with ``output_dir`` save) the AV-Digits(+text) ``DatasetDict``; identical for identical arguments.

    ``snr_db`` / ``image_noise`` / ``image_occlusion`` default (``None``) to the task's values in ``TASK_DEFAULTS``;
    ``snr_db=inf`` adds no audio noise. ``image_noise`` is the Gaussian pixel-noise std (pixels in 0..1),
    ``image_occlusion`` the side of the occluding square as a fraction of the image side. Missing ``espeak-ng`` /
    ``flite`` (and the optional Asterisk sounds) are apt-get installed when ``install_missing`` and running as root;
    otherwise a missing TTS binary raises ``RuntimeError`` naming the package, and ``test_real`` is left out.
    """
    if task not in TASK_DEFAULTS:
        raise ValueError(f"task must be one of {sorted(TASK_DEFAULTS)}, got {task!r}")
    config = {k: v for k, v in locals().items() if k not in ("output_dir", "install_missing", "num_workers")}
    defaults = TASK_DEFAULTS[task]
    snr_db = defaults["snr_db"] if snr_db is None else snr_db
    image_noise = defaults["image_noise"] if image_noise is None else image_noise
    image_occlusion = defaults["image_occlusion"] if image_occlusion is None else image_occlusion
    config.update(snr_db=snr_db, image_noise=image_noise, image_occlusion=image_occlusion)
    text_kw = dict(
        missing=text_missing_prob, confusion=text_confusion_prob, alias=text_alias_prob, typo=text_typo_prob
    )

    binaries = {espeak_bin: "espeak-ng", **({flite_bin: "flite"} if use_flite else {})}
    need_real = n_test_real > 0 and not _find_asterisk_digits(asterisk_dir)
    _ensure_tools(binaries, [ASTERISK_PACKAGE] if need_real else [], install_missing)
    real_speakers = _find_asterisk_digits(asterisk_dir) if n_test_real > 0 else {}
    if n_test_real > 0 and not real_speakers:
        print(
            f"build_avdigits: no English Asterisk digit recordings under {asterisk_dir}; leaving out test_real "
            f"(apt-get install {ASTERISK_PACKAGE})",
            file=sys.stderr,
        )

    cache = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfnet" / "avdigits")
    cache.mkdir(parents=True, exist_ok=True)
    seeds = dict(zip(("partition", *SPLIT_FRACTIONS, "test_real"), np.random.SeedSequence(seed).spawn(5), strict=True))
    rng = np.random.default_rng(seeds["partition"])

    digits = load_digits()
    image_ids: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_FRACTIONS}
    for d in range(10):
        ids = rng.permutation(np.flatnonzero(digits.target == d))
        n_tr, n_va = round(SPLIT_FRACTIONS["train"] * len(ids)), round(SPLIT_FRACTIONS["validation"] * len(ids))
        for name, part in zip(SPLIT_FRACTIONS, np.split(ids, [n_tr, n_tr + n_va]), strict=True):
            image_ids[name].append(part)
    espeak_split = _split_items(list(ESPEAK_VARIANTS), rng)
    flite_split = _split_items(list(FLITE_VOICES), rng) if use_flite else {s: [] for s in SPLIT_FRACTIONS}
    speakers = {
        s: [f"espeak-ng:{v}" for v in espeak_split[s]] + [f"flite:{v}" for v in flite_split[s]]
        for s in SPLIT_FRACTIONS
    }

    commands: dict[str, list[str]] = {}

    def draw_audio(split: str, digit: int, rng: np.random.Generator) -> tuple[str, str]:
        if split == "test_real":
            voice = list(real_speakers)[rng.integers(len(real_speakers))]
            return real_speakers[voice][digit], voice
        speaker = speakers[split][rng.integers(len(speakers[split]))]
        speed, pitch = int(rng.choice(SPEEDS)), int(rng.choice(PITCHES))
        if speaker.startswith("espeak-ng:"):
            voice = f"espeak-ng:{ESPEAK_DIALECTS[rng.integers(len(ESPEAK_DIALECTS))]}+{speaker.split(':')[1]}"
        else:
            voice, pitch = speaker, 0
        path = str(cache / f"{voice.replace(':', '_').replace('+', '_')}_s{speed}_p{pitch}_{digit}.wav")
        if not os.path.exists(path):
            commands[path] = _tts_command(voice, speed, pitch, digit, path, espeak_bin, flite_bin)
        return path, voice

    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    if real_speakers:
        sizes["test_real"] = n_test_real
    plans: dict[str, list[_Sample]] = {}
    for split, n in sizes.items():
        rng = np.random.default_rng(seeds[split])
        by_digit = image_ids["test" if split == "test_real" else split]
        plan = []
        for _ in range(n):
            a = int(rng.integers(10))
            b = a if task == "agree" else int(rng.integers(10))
            image_id = int(rng.choice(by_digit[a]))
            path, voice = draw_audio(split, b, rng)
            text, text_digit = _make_text(b, rng, **text_kw)
            label = a if task == "agree" else (a + b) % 10
            plan.append(_Sample(image_id, a, path, b, voice, text, text_digit, label, int(rng.integers(2**63))))
        plans[split] = plan

    if commands:
        _synthesize(commands, num_workers or os.cpu_count() or 1)

    clips: dict[str, np.ndarray] = {}
    length = round(max_seconds * SAMPLING_RATE)
    info = DatasetInfo(description=__doc__, license=LICENSES)
    splits = {}
    for split, plan in plans.items():
        audio = np.empty((len(plan), length), np.float32)
        columns: dict[str, list] = {name: [] for name in _SAMPLE_FEATURES}
        for i, s in enumerate(tqdm(plan, desc=f"rendering {split}", unit="example")):
            rng = np.random.default_rng(s.seed)
            if s.audio_path not in clips:
                clips[s.audio_path] = _load_clip(s.audio_path)
            audio[i] = _render_audio(clips[s.audio_path], length, snr_db, rng)
            image = _render_image(digits.images[s.image_id], image_size, image_noise, image_occlusion, rng)
            columns["image"].append(image)
            for name in list(columns)[1:]:
                columns[name].append(getattr(s, name))
        offsets = pa.array(np.arange(0, audio.size + 1, length, dtype=np.int32))
        audio_table = pa.table(
            {
                "audio": pa.ListArray.from_arrays(offsets, pa.array(audio.ravel())),
                "sampling_rate": pa.array(np.full(len(plan), SAMPLING_RATE, np.int32)),
            }
        )
        parts = [Dataset.from_dict(columns, features=_SAMPLE_FEATURES), Dataset(audio_table)]
        splits[split] = concatenate_datasets(parts, info=info, axis=1).select_columns(list(FEATURES))
    dataset = DatasetDict(splits)

    if output_dir is not None:
        dataset.save_to_disk(output_dir)
        _write_readme(Path(output_dir), dataset, config)
    return dataset


def retranscribe(
    dataset: DatasetDict, seed: int = 0, missing: float = 0.0, confusion: float = 0.03, alias: float = 0.2,
    typo: float = 0.04,
) -> DatasetDict:  # fmt: skip
    """New noisy transcripts of each row's spoken digit (``text``, ``text_digit``); every other column is kept.

    Deterministic for a seed: row ``i`` of split ``s`` draws from its own generator, seeded by ``(seed, s, i)``.
    ``retranscribe(agree, **IMBALANCED_TEXT)`` is the imbalanced AV-Digits variant.
    """
    splits = {}
    for index, (name, split) in enumerate(dataset.items()):
        texts, digits = [], []
        for row, digit in enumerate(split["audio_digit"]):
            text, text_digit = _make_text(
                digit, np.random.default_rng([seed, index, row]), missing, confusion, alias, typo
            )
            texts.append(text)
            digits.append(text_digit)
        splits[name] = (
            split.remove_columns(["text", "text_digit"])
            .add_column("text", texts, feature=FEATURES["text"])
            .add_column("text_digit", digits, feature=FEATURES["text_digit"])
            .select_columns(list(FEATURES))
        )
    return DatasetDict(splits)


def _write_readme(output_dir: Path, dataset: DatasetDict, config: dict) -> None:
    sizes = "\n".join(f"| {name} | {len(split)} | {len(set(split['voice']))} |" for name, split in dataset.items())
    (output_dir / "README.md").write_text(
        f"# AV-Digits(+text), task `{config['task']}`\n\n"
        "Built offline by `examples/build_avdigits.py`; load with `datasets.load_from_disk`.\n\n"
        f"| split | examples | voices |\n|---|---|---|\n{sizes}\n\n"
        f"## Columns\n\n```\n{dataset['train'].features}\n```\n\n"
        f"## Sources and licences\n\n{LICENSES}\n\n"
        f"## Build arguments\n\n```json\n{json.dumps(config, indent=2, default=str)}\n```\n"
    )


@dataclass
class BuildArguments:
    """Command-line arguments of ``build_avdigits`` (see its docstring)."""

    output_dir: str = field(metadata={"help": "Where to save the DatasetDict (save_to_disk) and README.md."})
    task: Literal["agree", "sum"] = field(default="agree", metadata={"help": "agree: all modalities show the label."})
    seed: int = 0
    n_train: int = 3000
    n_validation: int = 500
    n_test: int = 1000
    n_test_real: int = field(default=200, metadata={"help": "Real-speaker (Asterisk) test examples; 0 disables."})
    snr_db: float | None = field(default=None, metadata={"help": "Audio SNR in dB; default per task; inf = clean."})
    image_noise: float | None = field(default=None, metadata={"help": "Gaussian pixel noise std; default per task."})
    image_occlusion: float | None = field(default=None, metadata={"help": "Occluder side / image side."})
    image_size: int = 16
    text_missing_prob: float = 0.15
    text_confusion_prob: float = 0.1
    text_alias_prob: float = 0.2
    text_typo_prob: float = field(default=0.08, metadata={"help": "Per-character drop/swap/replace probability."})
    max_seconds: float = 1.0
    use_flite: bool = True
    espeak_bin: str = "espeak-ng"
    flite_bin: str = "flite"
    asterisk_dir: str = "/usr/share/asterisk/sounds"
    cache_dir: str | None = field(default=None, metadata={"help": "TTS clip cache (default ~/.cache/mmfnet)."})
    install_missing: bool = field(default=True, metadata={"help": "apt-get install missing tools when root."})
    num_workers: int | None = None
    small: bool = field(default=False, metadata={"help": "Tiny build for CI (200/50/100, 50 real)."})


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BuildArguments).parse_args_into_dataclasses(args=argv)
    kwargs = asdict(args)
    if kwargs.pop("small"):
        kwargs.update(n_train=200, n_validation=50, n_test=100, n_test_real=50)
    try:
        dataset = build_avdigits(**kwargs)
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    print(dataset)


if __name__ == "__main__":
    main()
