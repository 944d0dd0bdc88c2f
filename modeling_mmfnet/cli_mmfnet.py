"""The `mmfnet` command line (installed with the package).

    mmfnet train --dataset data/avdigits --output_dir outputs/run --vision_encoder conv --text_encoder ... --do_train
    mmfnet predict --model outputs/run --dataset data/avdigits --split test --output preds.jsonl
    mmfnet push outputs/run --repo_id my-user/mmfnet-avdigits

`train` takes examples/train.py's arguments, `push` examples/publish.py's. `predict` runs the checkpoint's
pipeline over a dataset split in batches (any subset of the modalities may be present in each row) and writes one
JSON line per row: `{"row": i, "predictions": [...], "label": ...}` (`label` when the split has the label column).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train.py"
"""examples/train.py of a source checkout, used while the package has no `training_mmfnet` module."""


def train(argv: list[str]) -> int:
    """`mmfnet train ...`: examples/train.py's arguments (`--help` lists them)."""
    try:
        training = importlib.import_module(f"{__package__}.training_mmfnet")
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.training_mmfnet":
            raise
        if not TRAIN_SCRIPT.is_file():
            raise SystemExit(
                "error: `mmfnet train` needs examples/train.py from a source checkout of mmfnet."
            ) from None
        sys.argv = [str(TRAIN_SCRIPT), *argv]
        runpy.run_path(str(TRAIN_SCRIPT), run_name="__main__")
        return 0
    result = training.main(argv)
    return result if isinstance(result, int) else 0


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmfnet predict", description="Predict a dataset split with MMFNet.")
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (with its processor)")
    parser.add_argument("--dataset", required=True, help="a `save_to_disk` folder or a datasets Hub name")
    parser.add_argument("--dataset_config", help="the dataset's configuration name (Hub datasets)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", required=True, type=Path, help="JSON lines file to write")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--top_k", type=int, default=5, help="labels per row (classification)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--audio_column", default="audio")
    parser.add_argument("--sampling_rate_column", default="sampling_rate")
    parser.add_argument("--label_column", default="label", help="copied to the output when present")
    parser.add_argument("--max_samples", type=int, help="predict only the first N rows")
    parser.add_argument("--device", help="e.g. cpu, cuda, cuda:1; default: the first GPU if any, else CPU")
    parser.add_argument("--revision", help="model revision (Hub)")
    parser.add_argument(
        "--trust_remote_code", action="store_true", help="run the repo's own code (not needed with the package)"
    )
    return parser


def predict(argv: list[str]) -> int:
    """`mmfnet predict ...`: batched predictions of a dataset split, with a progress bar."""
    parser = predict_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.top_k < 1:
        parser.error("--batch_size and --top_k must be >= 1")
    import torch
    from datasets import DatasetDict, load_dataset, load_from_disk
    from tqdm.auto import tqdm
    from transformers import pipeline

    from .pipeline_mmfnet import TASK

    if os.path.isdir(args.dataset):
        data = load_from_disk(args.dataset)
    else:
        data = load_dataset(args.dataset, args.dataset_config)
    if isinstance(data, DatasetDict):
        if args.split not in data:
            parser.error(f"split {args.split!r} is not in {args.dataset!r} (it has {list(data)})")
        data = data[args.split]
    if args.max_samples is not None:
        data = data.select(range(min(args.max_samples, len(data))))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipeline(
        TASK, model=args.model, device=device, revision=args.revision, trust_remote_code=args.trust_remote_code
    )
    columns = {"image": args.image_column, "text": args.text_column, "audio": args.audio_column}
    keys = {"vision": "image", "text": "text", "audio": "audio"}
    used = {keys[m]: columns[keys[m]] for m in pipe.modalities if columns[keys[m]] in data.column_names}
    if not used:
        parser.error(
            f"the split has none of the model's input columns {[columns[keys[m]] for m in pipe.modalities]} "
            f"(it has {data.column_names}); choose them with --image_column / --text_column / --audio_column"
        )
    has_rate = "audio" in used and args.sampling_rate_column in data.column_names
    labels = data[args.label_column] if args.label_column in data.column_names else None

    def rows() -> Iterator[dict[str, Any]]:
        for record in data:
            row = {key: record[column] for key, column in used.items() if record[column] is not None}
            if "audio" in row and has_rate and not isinstance(row["audio"], dict):
                row["sampling_rate"] = record[args.sampling_rate_column]
            yield row

    args.output.parent.mkdir(parents=True, exist_ok=True)
    predictions = pipe(rows(), batch_size=args.batch_size, top_k=args.top_k)
    with open(args.output, "w", encoding="utf-8") as output:
        for index, prediction in enumerate(tqdm(predictions, total=len(data), desc="predict", unit="row")):
            line: dict[str, Any] = {"row": index, "predictions": prediction}
            if labels is not None:
                line["label"] = labels[index]
            output.write(json.dumps(line) + "\n")
    print(f"wrote {len(data)} predictions to {args.output}")
    return 0


def push(argv: list[str]) -> int:
    """`mmfnet push FOLDER --repo_id ...`: publish a checkpoint folder with MMFNet's card."""
    from .publishing_mmfnet import add_arguments, run

    parser = add_arguments(argparse.ArgumentParser(prog="mmfnet push", description=push.__doc__))
    run(parser.parse_args(argv), parser)
    return 0


COMMANDS = {"train": train, "predict": predict, "push": push}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
            return 2
        return 0 if argv else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
