"""Checks for training runs: empty splits, undecodable images (naming the row), and damaged Trainer checkpoints
(naming the file), with `--resume_from_checkpoint true` falling back to the newest intact checkpoint.

Package-only (the shipped model files do not import it). Checkpoint files are checked without unpickling anything:
safetensors headers against the file size, JSON files parsed, and the zip archives `torch.save` writes
(optimizer, scheduler, RNG state, scaler) tested member by member with their CRCs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS_PATTERN = re.compile(r"^(model|pytorch_model|adapter_model).*\.(safetensors|bin)$")
TORCH_SAVE_SUFFIXES = (".pt", ".pth", ".bin")


def check_splits_not_empty(data: Any, splits: list[str]) -> None:
    """Every split the run reads must have rows: an empty one would train 0 steps or report metrics of nothing."""
    empty = [split for split in splits if split in data and len(data[split]) == 0]
    if empty:
        sizes = {name: len(data[name]) for name in data}
        raise ValueError(
            f"split(s) {empty} have no rows (split sizes: {sizes}); check the dataset and --max_train_samples / "
            "--max_eval_samples, or choose other splits."
        )


def check_images(dataset: Any, column: str, split: str, allow_remote: bool = False) -> set[str]:
    """Decode every image of `column` (a `datasets.Image` column, or strings naming image files); return the PIL
    modes.

    A corrupt or truncated image raises a ValueError naming the split, column and row; an image given as a URL is
    refused unless `allow_remote` (nothing is fetched over the network otherwise).
    """
    from datasets import Image as ImageFeature
    from PIL import Image

    modes: set[str] = set()
    raw = dataset.select_columns([column])
    if isinstance(dataset.features[column], ImageFeature):
        raw = raw.cast_column(column, ImageFeature(decode=False))
    row = 0
    for batch in raw.iter(batch_size=256):
        for value in batch[column]:
            if isinstance(value, str):
                value = {"bytes": None, "path": value}
            if value is not None:
                source = value.get("bytes") or value.get("path")
                if not value.get("bytes") and isinstance(source, str) and "://" in source:
                    if not allow_remote:
                        raise ValueError(
                            f"split {split!r}, column {column!r}, row {row}: the image is a URL ({source[:80]}); "
                            "nothing is fetched over the network unless asked (--allow_remote_images true), or "
                            "download the images first."
                        )
                else:
                    try:
                        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                            image.load()
                            modes.add(image.mode)
                    except (OSError, SyntaxError, ValueError) as error:
                        raise ValueError(
                            f"split {split!r}, column {column!r}, row {row}: the image cannot be decoded (corrupt or "
                            f"truncated: {error}). Fix or drop that row."
                        ) from error
            row += 1
    return modes


def _check_safetensors(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return "is shorter than a safetensors header"
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            return "is truncated (its header runs past the end of the file)"
        try:
            header = json.loads(file.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "has a corrupt safetensors header"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    if size < expected:
        return f"is truncated ({size} bytes, its header needs {expected})"
    return None


def _check_json(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"is not valid JSON ({error})"
    return None


def _check_torch_archive(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"is corrupt or truncated ({error})"
    if broken is not None:
        return f"is corrupt (member {broken!r} fails its CRC check)"
    return None


def checkpoint_problems(folder: str | os.PathLike) -> list[str]:
    """What is wrong with a Trainer checkpoint folder: one message per damaged or missing file (empty: intact)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{str(folder)!r} is not a folder"]
    files = {path.name: path for path in folder.iterdir() if path.is_file()}
    problems = []
    if "trainer_state.json" not in files:
        problems.append(f"{str(folder / 'trainer_state.json')!r} is missing")
    if not any(WEIGHTS_PATTERN.match(name) for name in files):
        problems.append(f"{str(folder)!r} has no model weights (model.safetensors)")
    for name, path in sorted(files.items()):
        if name.endswith(".safetensors"):
            problem = _check_safetensors(path)
        elif name.endswith(".json"):
            problem = _check_json(path)
        elif name.endswith(TORCH_SAVE_SUFFIXES):
            problem = _check_torch_archive(path)
        else:
            continue
        if problem:
            problems.append(f"{str(path)!r} {problem}")
    return problems


def check_checkpoint(folder: str | os.PathLike) -> None:
    """Raise an OSError naming the damaged files of a checkpoint before the Trainer resumes from it."""
    problems = checkpoint_problems(folder)
    if problems:
        raise OSError(
            f"cannot resume from {str(folder)!r}: " + "; ".join(problems) + ". Resume from an earlier checkpoint, or "
            "pass --resume_from_checkpoint true to pick the newest intact one."
        )


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint to resume from, checked.

    `None` / `False` / "false": no resume. A path: that checkpoint, refused with an OSError naming the damaged file.
    `True` / "true": the newest intact `checkpoint-<step>` of `output_dir`; damaged newer ones are skipped with a
    warning that names them.
    """
    if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in ("true", "false", ""):
        resume_from_checkpoint = resume_from_checkpoint.lower() == "true"
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint is not True:
        if not os.path.isdir(resume_from_checkpoint):
            raise OSError(f"--resume_from_checkpoint {str(resume_from_checkpoint)!r} is not a folder.")
        check_checkpoint(resume_from_checkpoint)
        return str(resume_from_checkpoint)
    output_dir = Path(output_dir)
    candidates = sorted(
        (p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)),
        key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)),
        reverse=True,
    ) if output_dir.is_dir() else []  # fmt: skip
    if not candidates:
        raise ValueError(
            f"--resume_from_checkpoint true, but {str(output_dir)!r} has no checkpoint-<step> folder to resume from."
        )
    skipped = []
    for candidate in candidates:
        problems = checkpoint_problems(candidate)
        if not problems:
            if skipped:
                logger.warning(
                    "Resuming from %s, the newest intact checkpoint; skipped damaged %s",
                    candidate,
                    "; ".join(f"{name} ({problem})" for name, problem in skipped),
                )
            return str(candidate)
        skipped.append((candidate.name, problems[0]))
    raise OSError(
        f"--resume_from_checkpoint true, but every checkpoint in {str(output_dir)!r} is damaged: "
        + "; ".join(f"{name}: {problem}" for name, problem in skipped)
        + "."
    )


__all__ = [
    "check_checkpoint",
    "check_images",
    "check_splits_not_empty",
    "checkpoint_problems",
    "resolve_resume_checkpoint",
]
