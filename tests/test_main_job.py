"""The main job (`examples/run_benchmark.py`), scaled down: the whole pipeline end to end, as the README runs it.

It builds the AV-Digits data (espeak-ng / flite), fine-tunes every run with the Trainer, writes the report, and saves
the best fused model with its processor and card. The saved checkpoint must reproduce the reported test accuracy
from the raw test split (images, transcripts, waveforms) through `AutoProcessor` and the Auto head class.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForSequenceClassification, AutoProcessor

import modeling_mmfnet as mm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="the AV-Digits builder needs espeak-ng and flite (apt-get install espeak-ng flite)",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("main_job")
    data_dir, output_dir = work / "data", work / "report"
    command = [sys.executable, str(ROOT / "examples" / "run_benchmark.py"), "--quick", "true", "--fusion_types",
               "concat,transformer", "--data_dir", str(data_dir), "--output_dir", str(output_dir)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return data_dir, output_dir, json.loads((output_dir / "report.json").read_text())


def test_report_covers_every_run_and_target(quick_run: tuple[Path, Path, dict]) -> None:
    data_dir, output_dir, report = quick_run
    import run_benchmark

    args = run_benchmark.BenchmarkArguments(quick=True, data_dir=str(data_dir))
    splits_by_task = {task: load_from_disk(run_benchmark.data_folder(args, task)) for task in ("agree", "sum")}
    names = {run["name"] for run in report["runs"]}
    expected = {"agree-fused-concat", "agree-fused-transformer", "sum-fused", "sum-image-digit", "sum-audio-digit"}
    expected |= {f"agree-{m}-only" for m in mm.MODALITIES} | {f"agree-without-{m}" for m in mm.MODALITIES}
    expected |= {"sum-vision-only", "sum-audio-only"}
    assert names == expected
    for run in report["runs"]:
        data = splits_by_task[run["name"].split("-")[0]]
        for split in ("test", "test_real"):  # an accuracy over n samples is k / n: counted, not averaged per batch
            correct = run[f"{split}_accuracy"] * len(data[split])
            assert correct == pytest.approx(round(correct), abs=1e-6), (run["name"], split)
            assert 0 <= round(correct) <= len(data[split]), (run["name"], split)
        assert run["train_loss"] > 0
        if len(run["modalities"]) > 1:  # every fused model is also scored with each modality dropped
            assert {f"test_without_{m}_accuracy" for m in run["modalities"]} <= set(run)
        assert "test_real_accuracy" in run  # the human-speech split is evaluated

    summary = report["summary"]
    by_name = {run["name"]: run for run in report["runs"]}
    ceiling = by_name["sum-image-digit"]["test_accuracy"] * by_name["sum-audio-digit"]["test_accuracy"]
    assert summary["sum_ceiling"] == pytest.approx(ceiling)
    best = max((r for r in report["runs"] if r["name"].startswith("agree-fused-")), key=lambda r: r["test_accuracy"])
    singles = [by_name[f"agree-{m}-only"]["test_accuracy"] for m in mm.MODALITIES]
    assert len(summary["targets"]) == 6
    # the verdicts follow from the runs (recomputed here from the per-run accuracies)
    assert summary["targets"]["agree: fused >= best single + 3 points"] is (
        best["test_accuracy"] - max(singles) >= 0.03
    )
    assert summary["targets"]["agree: every single modality in [60%, 97%]"] is all(0.6 <= a <= 0.97 for a in singles)
    assert summary["targets"]["sum: fused >= 0.95 x (image digit x audio digit)"] is (
        by_name["sum-fused"]["test_accuracy"] >= 0.95 * ceiling
    )
    assert summary["agree_best_fusion_type"] == best["fusion_type"]
    assert report["meta"]["caching"]["speedup"] > 1  # cached text embeddings beat re-running MiniLM
    assert (output_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"| {best['fusion_type']} | {100 * best['test_accuracy']:.1f} |" in (output_dir / "report.md").read_text()


def test_saved_model_reproduces_reported_accuracy_from_raw_inputs(quick_run: tuple[Path, Path, dict]) -> None:
    import run_benchmark

    data_dir, output_dir, report = quick_run
    folder = output_dir / run_benchmark.MODEL_FOLDER
    reported = json.loads((folder / "mmfnet_results.json").read_text())
    card = (folder / "README.md").read_text()
    assert f"value: {reported['test_accuracy']}" in card and "fusion-" in card  # the card shows the run's numbers

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(model, mm.MMFNetForClassification) and isinstance(processor, mm.MMFNetProcessor)
    args = run_benchmark.BenchmarkArguments(quick=True, data_dir=str(data_dir))
    test = load_from_disk(run_benchmark.data_folder(args, "agree"))["test"]
    predictions = []
    for start in range(0, len(test), 64):
        rows = test[start : start + 64]
        inputs = processor(images=rows["image"], text=rows["text"], audio=rows["audio"],
                           sampling_rate=rows["sampling_rate"][0], return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            predictions.append(model(**inputs).logits.argmax(-1).numpy())
    accuracy = float((np.concatenate(predictions) == np.asarray(test["label"])).mean())
    assert accuracy == pytest.approx(reported["test_accuracy"], abs=1.5 / len(test))  # at most one sample flips
