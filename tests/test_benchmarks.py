"""The benchmark suite runs end to end in `--quick` mode and writes every entry (sanity bounds, no timing goals)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ratios(results: dict) -> dict[str, float]:
    """Every P1–P5 ratio, by a readable name."""
    found = {f"P1 {fusion}": entry["ratio"] for fusion, entry in results["P1_fusion_overhead"].items()}
    found["P2"] = results["P2_training_step_vs_vtde"]["ratio"]
    found["P3"] = results["P3_cached_embeddings"]["ratio"]
    for modality, variants in results["P4_missing_modality"].items():
        found.update({f"P4 {modality} {variant}": entry["ratio"] for variant, entry in variants.items()})
    found["P5"] = results["P5_checkpointing_memory"]["ratio"]
    return found


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("benchmarks")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    process = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_benchmarks.py"), "--quick", "--output-dir", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return output


def test_quick_run_writes_every_entry(quick_run: Path):
    results = json.loads((quick_run / "results.json").read_text())
    assert {"cpu", "logical_cores", "torch", "transformers", "date"} <= set(results["machine"])
    assert results["mode"] == "quick" and results["sizes"]["fusion_dim"] > 0
    found = ratios(results)
    assert len(found) == 6 + 1 + 1 + 6 + 1, sorted(found)
    for name, value in found.items():
        assert math.isfinite(value) and value > 0, (name, value)
    for metric, entry in results["P1_fusion_overhead"].items():
        assert entry["numerator"]["median_s"] > 0 and entry["denominator"]["median_s"] > 0, metric
    # one verdict per table row, each `ratio <= goal` of its entry (P3 adds a row per other batch size)
    entries = [*results["P1_fusion_overhead"].values(), results["P2_training_step_vs_vtde"]]
    cached = results["P3_cached_embeddings"]
    entries += [cached, *(e for e in cached["by_batch_size"].values() if e["batch_size"] != cached["batch_size"])]
    entries += [entry for variants in results["P4_missing_modality"].values() for entry in variants.values()]
    entries.append(results["P5_checkpointing_memory"])
    verdicts = list(results["goals_met"].values())
    assert sorted(verdicts) == sorted(entry["ratio"] <= entry["goal"] for entry in entries)
    assert results["P5_checkpointing_memory"]["meets_goal"] is verdicts[-1]


def test_quick_run_sanity_bounds(quick_run: Path):
    """Generous bounds only (tiny models, few rounds, a possibly busy machine): caching must beat recomputing,
    checkpointing must save memory, and a batch with one modality must not pay for the absent encoders."""
    results = json.loads((quick_run / "results.json").read_text())
    assert results["P3_cached_embeddings"]["ratio"] < 0.8
    assert results["P5_checkpointing_memory"]["ratio"] < 1.0
    for variants in results["P4_missing_modality"].values():
        for entry in variants.values():
            assert entry["ratio"] < 2.5, entry
    scaling = results["scaling"]
    for name in ("batch_size", "text_length", "image_size", "audio_samples", "modalities"):
        assert len(scaling[name]["time_s"]) == len(scaling[name]["x"]) >= 2, name
        assert all(b > 0 for b in scaling[name]["activation_bytes"]), name
    memory = scaling["batch_size"]["activation_bytes"]
    assert memory == sorted(memory), memory  # activation memory grows with the batch
    # --quick gives torch.compile no time budget: skipped, with the reason (never a silent "failed")
    assert results["inference"]["compile"] == {
        "status": "skipped",
        "reason": "no compile time budget in this mode (--quick)",
    }


def test_quick_run_writes_plots_and_table(quick_run: Path):
    for name in ("ratios.png", "scaling.png", "inference.png"):
        path = quick_run / name
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table = (quick_run / "results.md").read_text()
    assert "| P1 fusion overhead: concat |" in table and "P5 peak step memory" in table
