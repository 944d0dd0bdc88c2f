"""Publish a saved MMFNet checkpoint folder (model + processor + MMFNet's model card) to the Hugging Face Hub.

    python examples/publish.py outputs/agree --repo_id my-user/mmfnet-avdigits
    python examples/publish.py outputs/agree --repo_id my-user/mmfnet-avdigits --revision dev --tag v0.2 \
        --commit_message "Retrained with modality dropout" --dataset my-user/avdigits --private

The same as `mmfnet push ...`; the logic lives in `modeling_mmfnet/publishing_mmfnet.py` (see its docstring).
"""

from __future__ import annotations

import argparse
import sys

from huggingface_hub import CommitInfo

from modeling_mmfnet.publishing_mmfnet import SKIPPED, add_arguments, check_checkpoint, publish_checkpoint, run


def main(argv: list[str] | None = None) -> CommitInfo:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    return run(parser.parse_args(argv), parser)


__all__ = ["SKIPPED", "check_checkpoint", "main", "publish_checkpoint"]

if __name__ == "__main__":
    main(sys.argv[1:])
