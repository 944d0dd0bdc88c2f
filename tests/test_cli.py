"""The `mmfnet` command line end to end on a tiny model: train, predict, push."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from hub_server import HubServer, hub_env, run_client
from hub_server import hub_server as hub_server  # noqa: F401 - the session fixture

import modeling_mmfnet as mm
from modeling_mmfnet import cli_mmfnet

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_token"


def mmfnet(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`mmfnet ARGS` as the installed script runs it (`modeling_mmfnet.cli_mmfnet:main`), in a fresh process."""
    code = "import sys; from modeling_mmfnet.cli_mmfnet import main; sys.exit(main())"
    env = dict(env) if env is not None else {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_script_is_declared() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[project.scripts]\nmmfnet = "modeling_mmfnet.cli_mmfnet:main"\n' in pyproject
    assert cli_mmfnet.main([]) == 2 and cli_mmfnet.main(["--help"]) == 0
    assert cli_mmfnet.main(["fly"]) == 2


def test_train_predict_push(
    hub_server: HubServer,  # noqa: F811
    encoder_dirs: dict[str, Path],
    tiny_dataset: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """`mmfnet train` a tiny model, `mmfnet predict` the test split (rows with missing modalities) to JSON lines
    equal to the model's own softmax, `mmfnet push` it to the local Hub with MMFNet's card."""
    out = tmp_path / "run"
    train = mmfnet(
        "train", "--dataset", str(tiny_dataset), "--output_dir", str(out), "--do_train", "--max_steps", "2",
        "--vision_encoder", "conv", "--text_encoder", str(encoder_dirs["bert"]), "--audio_encoder", "conv",
        "--conv_hidden_sizes", "8,16,16", "--fusion_dim", "16", "--fusion_hidden_dim", "32",
        "--per_device_train_batch_size", "8", "--save_strategy", "no", "--report_to", "none", "--use_cpu",
        "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--report_missing_modalities", "false",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-4000:]
    assert (out / "model.safetensors").is_file() and (out / "pipeline_mmfnet.py").is_file()
    assert "test_accuracy" in json.loads((out / "mmfnet_results.json").read_text())

    predictions = tmp_path / "preds" / "test.jsonl"
    status = cli_mmfnet.main([
        "predict", "--model", str(out), "--dataset", str(tiny_dataset), "--split", "test", "--output",
        str(predictions), "--batch_size", "3", "--top_k", "2", "--device", "cpu",
    ])  # fmt: skip
    assert status == 0
    assert "predict: 100%" in capfd.readouterr().err  # the progress bar
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    test = load_from_disk(str(tiny_dataset))["test"]
    assert [line["row"] for line in lines] == list(range(len(test)))
    assert [line["label"] for line in lines] == test["label"]

    model = mm.MMFNetForClassification.from_pretrained(out).eval()
    processor = mm.MMFNetProcessor.from_pretrained(out)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert any(row["image"] is None for row in test) and any(row["audio"] is None for row in test)
    for line, row in zip(lines, test, strict=True):
        inputs = processor(
            images=[row["image"]],
            text=[row["text"]],
            audio=[None if row["audio"] is None else np.asarray(row["audio"], dtype=np.float32)],
            sampling_rate=row["sampling_rate"],
        )
        with torch.no_grad():
            probabilities = model(**inputs).logits.softmax(-1)[0]
        best = probabilities.topk(2)
        assert [p["label"] for p in line["predictions"]] == [names[i] for i in best.indices.tolist()]
        np.testing.assert_allclose([p["score"] for p in line["predictions"]], best.values.tolist(), atol=1e-5)

    with pytest.raises(SystemExit) as exit_info:
        cli_mmfnet.main(["predict", "--model", str(out), "--dataset", str(tiny_dataset), "--split", "nope",
                         "--output", "x"])  # fmt: skip
    assert exit_info.value.code == 2 and "split 'nope' is not in" in capfd.readouterr().err

    env = hub_env(hub_server.endpoint, tmp_path / "hf", TOKEN)
    push = mmfnet("push", str(out), "--repo_id", "tester/from-cli", "--dataset", "tester/tiny", env=env, cwd=tmp_path)
    assert push.returncode == 0, push.stderr[-4000:]
    assert "published" in push.stdout
    card = run_client(
        "from huggingface_hub import ModelCard\nRESULT = ModelCard.load('tester/from-cli').content",
        env,
        tmp_path,
    )
    assert "<!-- mmfnet-card " in card and "datasets:\n- tester/tiny" in card
