"""Cost of MMFNet's input value checks (`config.check_input_values`): forward time with them on / off.

    python benchmarks/input_checks.py [--quick] [--output benchmarks/results/input_checks.json]

Same sizes and method as `run_benchmarks.py` (random ViT-, BERT- and Wav2Vec2-like encoders, batch 8, eval,
`inference_mode`; `median(on) / median(off)` over interleaved rounds in one process). Two workloads: the full
forward from raw inputs, and the forward from cached pooled features (`*_embeds`), where the encoders do not run
and the checks' share is largest.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_benchmarks as rb  # noqa: E402


def measure(sizes: rb.Sizes) -> dict[str, dict]:
    torch.manual_seed(0)
    configs = rb.encoder_configs(sizes)
    model = rb.mm.MMFNetModel(rb.mmfnet_config(sizes, configs, rb.MODALITIES, fusion_type="concat")).eval()
    inputs = rb.make_inputs(sizes, sizes.batch)
    inputs["modality_mask"] = torch.ones(sizes.batch, 3, dtype=torch.bool)  # the mask and its row checks too

    def forward(checked: bool, **kwargs: torch.Tensor) -> None:
        model.config.check_input_values = checked
        model(**kwargs)

    results = {}
    with torch.inference_mode():
        embeds = model.get_modality_embeddings(**inputs)
        embeds["modality_mask"] = inputs["modality_mask"]
        for name, feed in (("raw_inputs", inputs), ("cached_embeds", embeds)):
            calls = {"on": partial(forward, True, **feed), "off": partial(forward, False, **feed)}
            times = rb.interleaved(calls, 2 * sizes.rounds)
            results[name] = rb.ratio_entry(times["on"], times["off"], None, ("checks on", "checks off"))
    model.config.check_input_values = True
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds (a smoke run)")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    sizes = rb.QUICK if args.quick else rb.DEFAULT
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    results = measure(sizes)
    for name, entry in results.items():
        print(
            f"{name}: checks on / off = {entry['ratio']:.3f} (median {entry['numerator']['median_s'] * 1e3:.2f} ms vs "
            f"{entry['denominator']['median_s'] * 1e3:.2f} ms; minima {entry['ratio_of_minima']:.3f}, "
            f"{entry['rounds']} rounds, sizes {sizes.name}, batch {sizes.batch}, {torch.get_num_threads()} threads)"
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"sizes": sizes.name, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
