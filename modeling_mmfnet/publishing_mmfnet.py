"""Publish a saved MMFNet checkpoint folder (model + processor + MMFNet's model card) to the Hugging Face Hub.

One commit with the folder's weights (safetensors only), `config.json` (with `auto_map` and `custom_pipelines`), the
`*_mmfnet.py` code files that let `trust_remote_code=True` load it without the package, the processor files, the
run's results file, and a `README.md` card from the run's real metrics. The card already on the repo is updated
(its hand-written text and metadata kept), or replaced with `replace_card=True`. Training leftovers (optimizer
state, `training_args.bin`, `checkpoint-*` folders, `.bin` weights) stay local. The token comes from `token`,
`HF_TOKEN` or `hf auth login`; `HF_ENDPOINT` picks another Hub. Used by `mmfnet push` and `examples/publish.py`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from .card_mmfnet import hub_card, refresh_model_card

SKIPPED = (
    "README.md",  # the card is generated (and merged with the repo's card), not copied
    ".*",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.pkl",
    "trainer_state.json",
)
"""Top-level files never published (sub-folders are never published either)."""


def check_checkpoint(folder: Path) -> list[Path]:
    """The files to publish; raises `ValueError` when the folder cannot load from the Hub without the package."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{str(folder)!r} has no config.json: pass a folder written by `save_pretrained`.")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "mmfnet":
        raise ValueError(f"{str(folder)!r} holds a {config.get('model_type')!r} model, not an MMFNet (`mmfnet`).")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not any(fnmatch.fnmatch(p.name, s) for s in SKIPPED))
    names = {p.name for p in files}
    if "model.safetensors" not in names and "model.safetensors.index.json" not in names:
        raise ValueError(
            f"{str(folder)!r} has no model.safetensors: only safetensors weights are published. Re-save the model "
            "with `save_pretrained` (safetensors is its default)."
        )
    auto_map = config.get("auto_map") or {}
    processor_path = folder / "processor_config.json"
    if processor_path.is_file():
        auto_map = {**auto_map, **(json.loads(processor_path.read_text()).get("auto_map") or {})}
    needed = {reference.split(".")[0] + ".py" for reference in auto_map.values()}
    for code_file in [folder / name for name in sorted(names) if name.endswith(".py")]:
        needed |= {f"{module}.py" for module in re.findall(r"^\s*from \.(\w+) import", code_file.read_text(), re.M)}
    missing = sorted(needed - names)
    if "AutoModel" not in auto_map or missing:
        raise ValueError(
            f"{str(folder)!r} cannot load without the package: "
            + (f"code files {missing} are missing" if missing else "config.json has no `auto_map`")
            + ". Re-save it in a process that imported `modeling_mmfnet`: "
            "`AutoModelForSequenceClassification.from_pretrained(folder).save_pretrained(folder)`."
        )
    return files


def publish_checkpoint(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    tag: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    replace_card: bool = False,
    **card_kwargs: Any,
) -> CommitInfo:
    """Publish `folder` to `repo_id` in one commit on branch `revision` (created from `main` when missing).

    `card_kwargs` go to `generate_model_card` (`metrics`, `datasets`, `base_models`, `license`, `tags`, ...);
    the card on `revision` is updated unless `replace_card`. `tag` tags the new commit. Returns the commit (`.oid`
    is its sha).
    """
    folder = Path(folder)
    files = check_checkpoint(folder)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    existing = hub_card(repo_id, revision=revision, token=token)
    card = refresh_model_card(folder, existing, replace=replace_card, repo_id=repo_id, **card_kwargs)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=p) for p in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    commit = api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message or f"Upload MMFNet checkpoint {folder.resolve().name}",
        revision=revision,
    )
    if tag:
        api.create_tag(repo_id, tag=tag, revision=commit.oid)
    return commit


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The publishing options (shared by `mmfnet push` and `examples/publish.py`)."""
    parser.add_argument("folder", type=Path, help="checkpoint folder (save_pretrained of the model and processor)")
    parser.add_argument("--repo_id", required=True, help="Hub repo, `user/name` (created when missing)")
    parser.add_argument("--revision", help="branch to commit to (created from main when missing); default: main")
    parser.add_argument("--tag", help="tag the new commit (e.g. v1.0)")
    parser.add_argument("--private", action="store_true", help="create the repo private (no effect if it exists)")
    parser.add_argument("--commit_message")
    parser.add_argument("--token", help="Hub token; default: HF_TOKEN or the stored login")
    parser.add_argument("--metrics_file", type=Path, help="JSON metrics; default: the folder's results file")
    parser.add_argument("--dataset", action="append", default=None, help="dataset id or path (repeatable)")
    parser.add_argument("--base_model", action="append", default=None, help="encoder Hub id (repeatable)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--replace_card", action="store_true", help="replace the repo's card instead of updating it")
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> CommitInfo:
    """Publish as the parsed `args` say; a checkpoint that cannot be published exits with status 2."""
    metrics = json.loads(args.metrics_file.read_text()) if args.metrics_file else None
    try:
        commit = publish_checkpoint(
            args.folder,
            args.repo_id,
            revision=args.revision,
            tag=args.tag,
            private=args.private,
            commit_message=args.commit_message,
            token=args.token,
            replace_card=args.replace_card,
            metrics=metrics,
            datasets=args.dataset,
            base_models=args.base_model,
            license=args.license,
        )
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"published {args.folder} to {args.repo_id}@{args.revision or 'main'}: commit {commit.oid}")
    return commit


__all__ = ["SKIPPED", "add_arguments", "check_checkpoint", "publish_checkpoint", "run"]
