"""The main job (`examples/run_benchmark.py`), scaled down: the whole pipeline end to end, as the README runs it.

It builds the AV-Digits data (espeak-ng / flite), fine-tunes every run with the Trainer, chooses the recipe on the
validation split, trains it with three seeds, scores the baselines, writes the report, and saves the selected fused
model with its processor and card. The saved checkpoint must reproduce the reported test accuracy from the raw test
split (images, transcripts, waveforms) through `AutoProcessor` and the Auto head class.
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
import run_benchmark  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="the AV-Digits builder needs espeak-ng and flite (apt-get install espeak-ng flite)",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, str]:
    work = tmp_path_factory.mktemp("main_job")
    data_dir, output_dir = work / "data", work / "report"
    command = [sys.executable, str(ROOT / "examples" / "run_benchmark.py"), "--quick", "true", "--fusion_types",
               "concat,transformer", "--data_dir", str(data_dir), "--output_dir", str(output_dir)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return data_dir, output_dir, json.loads((output_dir / "report.json").read_text()), completed.stdout


def fused_name(task: str, fusion_type: str, balance: str, seed: int = 0) -> str:
    return (
        f"{task}-fused-{fusion_type}" + (f"-{balance}" if balance != "none" else "") + (f"-seed{seed}" if seed else "")
    )


def test_report_covers_every_run_and_target(quick_run: tuple[Path, Path, dict, str]) -> None:
    data_dir, output_dir, report, _ = quick_run
    summary, by_name = report["summary"], {run["name"]: run for run in report["runs"]}
    fusion = summary["agree"]["fusion_type"]
    expected = {"agree-fused-concat", "agree-fused-transformer", "sum-fused-2ep", "sum-fused-5ep"}
    expected |= {"sum-image-digit", "sum-audio-digit"}
    expected |= {f"agree-{m}-only" for m in mm.MODALITIES} | {f"agree-without-{m}" for m in mm.MODALITIES}
    expected |= {"imbalanced-text-only", "imbalanced-without-vision", "imbalanced-without-audio"}
    expected |= {"sum-vision-only", "sum-audio-only"}
    for task in ("agree", "imbalanced"):
        expected |= {fused_name(task, fusion, b) for b in run_benchmark.BALANCE_OPTIONS}
        expected |= {fused_name(task, fusion, summary[task]["balance"], seed) for seed in (1, 2)}
    assert set(by_name) == expected and len(report["runs"]) == len(expected)
    args = run_benchmark.BenchmarkArguments(quick=True, data_dir=str(data_dir))
    splits_by_task = {task: load_from_disk(run_benchmark.data_folder(args, task)) for task in ("agree", "sum")}
    splits_by_task["imbalanced"] = splits_by_task["agree"]  # the same rows, other transcripts
    for run in report["runs"]:
        data = splits_by_task[run["task"]]
        for split in ("test", "test_real"):  # an accuracy over n samples is k / n: counted, not averaged per batch
            correct = run[f"{split}_accuracy"] * len(data[split])
            assert correct == pytest.approx(round(correct), abs=1e-6), (run["name"], split)
            assert 0 <= round(correct) <= len(data[split]), (run["name"], split)
        assert run["train_loss"] > 0
        if len(run["modalities"]) > 1:  # every multimodal model is also scored with each modality dropped
            assert {f"{s}_without_{m}_accuracy" for m in run["modalities"] for s in ("validation", "test")} <= set(run)
        assert "test_real_accuracy" in run  # the human-speech split is evaluated
    assert by_name[fused_name("agree", fusion, "ogm_ge")]["balance"] == "ogm_ge"

    # the recipe is chosen on validation: the fusion type, then the balance option, by the validation score
    for run in report["runs"]:
        if "validation_score" in run:
            keys = ["validation_accuracy"] + [f"validation_without_{m}_accuracy" for m in run["modalities"]]
            assert run["validation_score"] == pytest.approx(np.mean([run[k] for k in keys]))
    sweep = {f: by_name[f"agree-fused-{f}"]["validation_score"] for f in ("concat", "transformer")}
    assert fusion == max(sweep, key=sweep.get)
    for task in ("agree", "imbalanced"):
        s = summary[task]
        scores = {b: by_name[fused_name(task, fusion, b)]["validation_score"] for b in run_benchmark.BALANCE_OPTIONS}
        assert s["validation_scores"] == pytest.approx(scores) and s["balance"] == max(scores, key=scores.get)
        chosen = [by_name[fused_name(task, fusion, s["balance"], seed)]["test_accuracy"] for seed in (0, 1, 2)]
        assert s["fused_test_accuracy"]["mean"] == pytest.approx(np.mean(chosen))
        assert s["fused_test_accuracy"]["std"] == pytest.approx(np.std(chosen, ddof=1))
        assert set(s["baselines"]) == {
            "vision probe",
            "text probe",
            "audio probe",
            "concatenated probe",
            "late fusion",
        }
        assert all(b.get("C", 1.0) in (0.01, 0.1, 1.0, 10.0) for b in s["baselines"].values())
        assert s["best_baseline_accuracy"] == max(b["test_accuracy"] for b in s["baselines"].values())
    # the imbalanced variant shares agree's images and audio: its vision / audio models are agree's
    assert summary["imbalanced"]["single_accuracy"]["vision"] == by_name["agree-vision-only"]["test_accuracy"]
    assert summary["imbalanced"]["trained_without"]["text"] == by_name["agree-without-text"]["test_accuracy"]

    assert len(summary["targets"]) == 10 and all(isinstance(v, bool) for v in summary["targets"].values())
    ceiling = by_name["sum-image-digit"]["test_accuracy"] * by_name["sum-audio-digit"]["test_accuracy"]
    assert summary["sum"]["ceiling"] == pytest.approx(ceiling)
    # the sum fusion's budget (quick: 40 and 100 epochs scaled to 2 and 5) is chosen on validation, and the
    # single-modality sum models get the same budget
    sum_scores = {e: by_name[f"sum-fused-{e}ep"]["validation_accuracy"] for e in ("2", "5")}
    assert summary["sum"]["validation_accuracy"] == pytest.approx(sum_scores)
    assert f"{summary['sum']['fusion_epochs']:g}" == max(sum_scores, key=sum_scores.get)
    sum_fused = by_name[summary["sum"]["fused_run"]]
    assert sum_fused["epochs"] == summary["sum"]["fusion_epochs"] == by_name["sum-vision-only"]["epochs"]
    assert by_name["sum-fused-2ep"]["epochs"] == 2 and by_name["sum-fused-5ep"]["epochs"] == 5
    # the verdicts follow from the runs (recomputed here from the per-run accuracies)
    targets, agree = summary["targets"], summary["agree"]
    singles = [by_name[f"agree-{m}-only"]["test_accuracy"] for m in mm.MODALITIES]
    fused = {t: np.mean([by_name[fused_name(t, fusion, summary[t]["balance"], seed)]["test_accuracy"]
                         for seed in (0, 1, 2)]) for t in ("agree", "imbalanced")}  # fmt: skip
    assert targets["agree: fused >= best single + 3 points"] is bool(fused["agree"] >= max(singles) + 0.03)
    assert targets["agree: every single modality in [60%, 97%]"] is all(0.6 <= a <= 0.97 for a in singles)
    assert targets["agree: fused > best baseline"] is bool(fused["agree"] > agree["best_baseline_accuracy"])
    assert targets["sum: fused >= 0.95 x (image digit x audio digit)"] is (
        sum_fused["test_accuracy"] >= 0.95 * ceiling
    )
    assert report["meta"]["caching"]["speedup"] > 1  # cached text embeddings beat re-running MiniLM
    assert (output_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (output_dir / "report.md").read_text()
    assert f"| {fusion} | {100 * by_name['agree-fused-' + fusion]['validation_score']:.1f} |" in text


def test_output_is_one_line_per_run(quick_run: tuple[Path, Path, dict, str]) -> None:
    """No raw Trainer log dicts, no weight-loading bars: the run bar and one result line per run."""
    _, _, report, stdout = quick_run
    lines = [line for line in stdout.splitlines() if line.strip()]
    for run in report["runs"]:
        assert sum(line.startswith(f"{run['name']}: ") for line in lines) == 1, run["name"]
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert "train_runtime" not in stdout and "Loading weights" not in stdout and "targets met" in lines[-1]


def test_saved_model_reproduces_reported_accuracy_from_raw_inputs(quick_run: tuple[Path, Path, dict, str]) -> None:
    data_dir, output_dir, report, _ = quick_run
    folder = output_dir / run_benchmark.MODEL_FOLDER
    reported = json.loads((folder / "mmfnet_results.json").read_text())
    card = (folder / "README.md").read_text()
    assert f"value: {reported['test_accuracy']}" in card and "fusion-" in card  # the card shows the run's numbers
    chosen = report["summary"]["agree"]
    assert f"`{chosen['fusion_type']}` fusion, modality-balance option `{chosen['balance']}`" in card
    assert "`sentence-transformers/all-MiniLM-L6-v2`" in card  # the text encoder by its Hub id, not a local folder
    mm.write_model_card(folder)  # regenerating the card keeps the account of the training below it
    assert card.split("## How this model was trained")[1] in (folder / "README.md").read_text()

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


def test_unimodal_first_finetune_starts_from_the_unimodal_encoders(quick_run: tuple[Path, Path, dict, str]) -> None:
    """`unimodal_first_finetune`: the fused model starts from the encoders trained alone, and trains them too."""
    _, output_dir, _, _ = quick_run
    args = run_benchmark.BenchmarkArguments(quick=True, output_dir=str(output_dir))
    encoders = {m: str(output_dir / "encoders" / f"agree-{m}") for m in ("vision", "audio")}
    spec = run_benchmark.RunSpec("check", "agree", mm.MODALITIES)
    text_path = run_benchmark.default_text_encoder()
    model = run_benchmark.make_model(spec, args, text_path, 10, encoders=encoders, freeze_encoders=False)
    frozen = run_benchmark.make_model(spec, args, text_path, 10, encoders=encoders)
    for modality, path in encoders.items():
        trained_alone = mm.MMFNetConvModel.from_pretrained(path).state_dict()
        encoder = getattr(model.mmfnet, f"{modality}_model")
        assert all(torch.equal(value, trained_alone[key]) for key, value in encoder.state_dict().items())
        assert all(p.requires_grad for p in encoder.parameters())
        assert not any(p.requires_grad for p in getattr(frozen.mmfnet, f"{modality}_model").parameters())
    assert not any(p.requires_grad for p in model.mmfnet.text_model.parameters())  # MiniLM stays frozen
