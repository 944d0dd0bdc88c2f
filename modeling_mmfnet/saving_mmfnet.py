"""Atomic saves: a process killed while saving leaves the previous checkpoint loadable, never a truncated file.

Everything is written into a temporary sibling folder first. A new folder then takes its place with one
`os.replace`; into an existing folder (e.g. a Trainer `output_dir` that also holds `checkpoint-*` folders) each file
is moved with its own `os.replace`, weights first and `config.json` last, so every file is always either the old
or the new version in full.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")
LAST_FILES = ("config.json", "processor_config.json", "preprocessor_config.json")
"""Moved last: a loader reads these first, so they only point at the new files once those are in place."""


def check_save_directory(save_directory: str | os.PathLike, argument: str = "save_directory") -> Path:
    """The folder to save into; a path that is an existing file is refused (transformers would only log)."""
    if not isinstance(save_directory, (str, os.PathLike)):
        raise TypeError(
            f"`{argument}` must be a folder path (str or os.PathLike), got {type(save_directory).__name__}."
        )
    path = Path(save_directory)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"`{argument}` {str(path)!r} is an existing file; save_pretrained needs a folder.")
    return path


def _default_mode(kind: int) -> int:
    """Permissions a plain `mkdir` (0o777) / `open` (0o666) would give under the current umask; `tempfile` uses 0o700 /
    0o600, which would make a saved checkpoint private."""
    umask = os.umask(0)
    os.umask(umask)
    return kind & ~umask


def _move_order(name: str) -> tuple[int, str]:
    if name in LAST_FILES:
        return 2, name
    return (0 if name.endswith(WEIGHT_SUFFIXES) else 1), name


def atomic_save(
    save: Callable[[str], Any], save_directory: str | os.PathLike, argument: str = "save_directory"
) -> Any:
    """Run `save(temporary_folder)`, then move what it wrote into `save_directory` atomically (see module doc)."""
    target = check_save_directory(save_directory, argument)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    os.chmod(staging, _default_mode(0o777))
    try:
        result = save(str(staging))
        if not target.exists():
            os.replace(staging, target)
            return result
        written = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: _move_order(p.name))
        for path in written:
            destination = target / path.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
        new_weights = {p.relative_to(staging) for p in written if p.name.endswith(WEIGHT_SUFFIXES)}
        if new_weights:  # drop stale shards of an earlier save, as transformers does
            for stale in target.glob("model*.safetensors*"):
                if stale.is_file() and stale.relative_to(target) not in new_weights:
                    stale.unlink()
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary sibling file, flush it to disk, then `os.replace` it onto `path`."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; expected a file path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _default_mode(0o666))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class MMFNetCardHubMixin:
    """`push_to_hub` for MMFNet's models and processor: the repo's model card becomes MMFNet's (updated, or replaced
    with `replace_model_card=True`) just before the upload. `model_card_hook` is installed by the `mmfnet` package on
    import; loaded as remote code (no package) it stays None and transformers' own card handling applies."""

    model_card_hook: Any = None

    def push_to_hub(
        self,
        *args: Any,
        replace_model_card: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """`PushToHubMixin.push_to_hub`, leaving MMFNet's model card in the repo (with the package installed).
        `model_card_kwargs` go to `generate_model_card` (`metrics`, `datasets`, `license`, `tags`, ...)."""
        self._model_card_options = {"replace_model_card": replace_model_card, "model_card_kwargs": model_card_kwargs}
        try:
            return super().push_to_hub(*args, **kwargs)
        finally:
            self._model_card_options = None

    def _upload_modified_files(self, working_dir: str | os.PathLike, repo_id: str, *args: Any, **kwargs: Any) -> Any:
        if self.model_card_hook is not None:
            options = getattr(self, "_model_card_options", None)
            self.model_card_hook.before_upload(
                self, working_dir, repo_id, kwargs.get("revision"), kwargs.get("token"), options
            )
        return super()._upload_modified_files(working_dir, repo_id, *args, **kwargs)


__all__ = ["MMFNetCardHubMixin", "atomic_save", "atomic_write_text", "check_save_directory"]
