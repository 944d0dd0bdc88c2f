"""Model card generation (`generate_model_card`) and the checks of `examples/publish.py`, without a Hub."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import SHIPPED_CODE_FILES, tiny_bert, tiny_conv, tiny_wav2vec2
from huggingface_hub import ModelCard

import modeling_mmfnet as mm
from modeling_mmfnet import card_mmfnet

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = SHIPPED_CODE_FILES


def make_model(**kwargs) -> mm.MMFNetForClassification:
    text, audio = tiny_bert(), tiny_wav2vec2()
    text._name_or_path = "google-bert/bert-base-uncased"  # as if loaded from the Hub
    audio._name_or_path = str(ROOT)  # a local path: not a Hub id
    defaults = dict(fusion_dim=16, fusion_hidden_dim=32, num_labels=3, fusion_type="low_rank", freeze_text=True)
    config = mm.MMFNetConfig(vision_config=tiny_conv(), text_config=text, audio_config=audio, **(defaults | kwargs))
    torch.manual_seed(0)
    return mm.MMFNetForClassification(config)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, mm.MMFNetForClassification]:
    folder = tmp_path_factory.mktemp("card") / "run"
    model = make_model(id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})
    model.save_pretrained(folder)
    results = {
        "train_loss": 0.4321,
        "train_runtime": 12.5,
        "train_samples_per_second": 80.0,
        "train_epoch": 3.0,
        "test_accuracy": 0.8125,
        "test_loss": 0.5,
        "test_runtime": 0.25,
        "test_samples_per_second": 64.0,
        "test_without_audio_accuracy": 0.6875,
        "test_clean_accuracy": 0.9,
        "epoch": 3.0,
    }
    (folder / "mmfnet_results.json").write_text(json.dumps(results))
    return folder, model


def test_template_ships_with_the_package(tmp_path: Path) -> None:
    """The top-level model_card.md is the packaged template, and a (non-editable) wheel carries it."""
    top_level = (ROOT / "model_card.md").read_text(encoding="utf-8")
    assert card_mmfnet.default_template() == top_level, "copy model_card.md to modeling_mmfnet/model_card.md"
    assert top_level.startswith("---\n$card_data\n---\n")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "modeling_mmfnet", source / "modeling_mmfnet", ignore=shutil.ignore_patterns("__py*"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run([*command, "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("modeling_mmfnet/model_card.md").decode("utf-8") == top_level


def test_card_from_a_saved_folder(saved: tuple[Path, mm.MMFNetForClassification]) -> None:
    folder, model = saved
    card = mm.generate_model_card(folder, repo_id="me/mmfnet-demo", datasets=["me/pets", "/data/local-pets"])
    data = ModelCard(card).data
    assert data.library_name == "transformers" and data.license == "apache-2.0" and data.model_name == "mmfnet-demo"
    assert data.base_model == ["google-bert/bert-base-uncased"]  # the local audio path is not a Hub id
    assert data.datasets == ["me/pets"]
    assert {"mmfnet", "fusion-low_rank", "vision", "text", "audio", "custom_code"} <= set(data.tags)
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in data.eval_results}
    assert results == {
        ("test", "test accuracy (all modalities)"): 0.8125,
        ("test", "test loss (all modalities)"): 0.5,
        ("test", "test accuracy (without audio)"): 0.6875,
        ("test_clean", "test_clean accuracy (all modalities)"): 0.9,
    }
    assert {(r.dataset_name, r.dataset_type) for r in data.eval_results} == {("me/pets", "me/pets")}
    assert data.metrics == ["accuracy", "loss"]
    # what the run did not produce is not there; throughput and runtime are not evaluation metrics
    body = ModelCard(card).text
    reported = card.split("\n---\n")[0] + body[body.index("## Evaluation") : body.index("## Usage")]
    assert not re.search(r"(?i)\bf1\b|mse|mae|precision|recall", reported)
    assert "0.25" not in reported and "64" not in reported
    assert "| test | without audio | accuracy | 0.6875 |" in body
    assert "- training loss (mean over the run): 0.4321" in body and "- epochs: 3" in body
    assert f"- Parameters: {sum(p.numel() for p in model.parameters()):,}" in body
    assert "`low_rank`" in body and "**vision**, **text** and **audio**" in body
    assert "| text | `google-bert/bert-base-uncased` (`bert`) | mean | yes |" in body
    assert "| vision | seed CNN (`mmfnet_conv`, channels 8-16-16), trained from scratch | mean | no |" in body
    assert "(batch, 3)" in body and "`[1; 0]`" in body and "modality_dropout=0" in body
    assert "3 classes (`cat`, `dog`, `bird`)" in body
    assert 'AutoModelForSequenceClassification.from_pretrained("me/mmfnet-demo").eval()' in body
    assert 'from_pretrained("me/mmfnet-demo", trust_remote_code=True)' in body
    assert "images=[image], text=[" in body and "sampling_rate=processor.feature_extractor.sampling_rate" in body
    assert "No processor was saved" in body  # this folder has only the model
    assert "## Limitations" in body and "seed CNN trained from scratch" in body


def test_card_never_invents_numbers(saved: tuple[Path, mm.MMFNetForClassification], tmp_path: Path) -> None:
    """No metrics: no model-index and no results; the Trainer's all_results.json is read when it is the only one."""
    folder, model = saved
    card = mm.generate_model_card(model, repo_id="me/untrained")
    assert ModelCard(card).data.eval_results is None and "model-index" not in card
    assert "No evaluation results were recorded" in card and "No training or cost metrics were recorded" in card
    assert "No evaluation is recorded for this checkpoint" in card

    trainer_folder = tmp_path / "trainer"
    shutil.copytree(folder, trainer_folder, ignore=shutil.ignore_patterns("mmfnet_results.json"))
    all_results = {"eval_accuracy": 0.75, "eval_macro_f1": 0.7, "eval_runtime": 1.0, "epoch": 2.0, "note": "x"}
    (trainer_folder / "all_results.json").write_text(json.dumps(all_results))
    path = mm.write_model_card(trainer_folder, model, repo_id="me/trainer")
    data = ModelCard.load(path).data
    assert path == trainer_folder / "README.md"
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in data.eval_results} == {
        ("accuracy", 0.75, "eval"),
        ("f1", 0.7, "eval"),
    }
    assert [r.metric_args for r in data.eval_results] == [None, {"average": "macro"}]

    explicit = mm.generate_model_card(trainer_folder, {"test_mse": 0.125, "test_mae": float("nan"), "ok": True})
    assert [(r.metric_type, r.metric_value) for r in ModelCard(explicit).data.eval_results] == [("mse", 0.125)]


def test_card_for_other_heads(tmp_path: Path) -> None:
    base = mm.MMFNetModel(make_model().config)
    base.save_pretrained(tmp_path / "base")
    card = mm.generate_model_card(tmp_path / "base", repo_id="me/base")
    assert 'AutoModel.from_pretrained("me/base", trust_remote_code=True)' in card and "fused_embeds" in card
    regression = mm.generate_model_card(make_model(num_labels=1).config, {"test_mse": 0.5})
    assert "**regression**" in regression and "predictions = model(**inputs).logits" in regression
    multi = make_model(num_labels=4, problem_type="multi_label_classification")
    assert "logits.sigmoid()" in mm.generate_model_card(multi)
    with pytest.raises(TypeError, match="Expected an MMFNet"):
        mm.generate_model_card(tiny_bert())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mm.generate_model_card(tmp_path)


def test_custom_template(saved: tuple[Path, mm.MMFNetForClassification], tmp_path: Path) -> None:
    folder, _ = saved
    template = tmp_path / "card.md"
    template.write_text("---\n$card_data\n---\n# $model_name: $fusion_type over $modalities_text\n")
    card = mm.generate_model_card(folder, repo_id="me/x", template=template)
    assert card.endswith("# x: low_rank over **vision**, **text** and **audio**\n")
    template.write_text("$card_data $no_such_field")
    with pytest.raises(ValueError, match=r"unknown placeholder \$no_such_field"):
        mm.generate_model_card(folder, template=template)


def test_card_code_is_not_shipped(saved: tuple[Path, mm.MMFNetForClassification], tmp_path: Path) -> None:
    """The files a checkpoint carries for trust_remote_code neither include nor import the package-only modules
    (card, publishing, command line); the card reaches them only through the hook the package installs."""
    _, model = saved
    model.save_pretrained(tmp_path)
    shipped = {p.name for p in tmp_path.glob("*.py")}
    assert shipped == SHIPPED
    for name in [*SHIPPED, "processing_mmfnet.py"]:
        text = (ROOT / "modeling_mmfnet" / name).read_text()
        assert not re.search(r"card_mmfnet|publishing_mmfnet|cli_mmfnet|caching_mmfnet", text), name
    assert isinstance(mm.MMFNetPreTrainedModel.model_card_hook, card_mmfnet.ModelCardHook)
    assert mm.MMFNetProcessor.model_card_hook is mm.MMFNetPreTrainedModel.model_card_hook


def load_publish() -> ModuleType:
    spec = importlib.util.spec_from_file_location("publish", ROOT / "examples" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_refuses_folders_that_cannot_load_from_the_hub(
    saved: tuple[Path, mm.MMFNetForClassification], tmp_path: Path
) -> None:
    publish = load_publish()
    folder, _ = saved
    good = tmp_path / "good"
    shutil.copytree(folder, good)
    for name in ("training_args.bin", "optimizer.pt", "README.md", ".hidden"):
        (good / name).write_bytes(b"x")
    (good / "checkpoint-10").mkdir()
    (good / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    assert [p.name for p in publish.check_checkpoint(good)] == sorted(
        ["config.json", "model.safetensors", "mmfnet_results.json", *SHIPPED]
    )
    with pytest.raises(ValueError, match="has no config.json"):
        publish.check_checkpoint(tmp_path / "nothing")

    def broken(name: str, edit) -> Path:
        target = tmp_path / name
        shutil.copytree(folder, target)
        edit(target)
        return target

    def drop_auto_map(target: Path) -> None:
        config = json.loads((target / "config.json").read_text())
        del config["auto_map"]
        (target / "config.json").write_text(json.dumps(config))

    def bin_weights(target: Path) -> None:
        (target / "model.safetensors").rename(target / "pytorch_model.bin")

    with pytest.raises(ValueError, match="has no `auto_map`.*Re-save it"):
        publish.check_checkpoint(broken("no_map", drop_auto_map))
    with pytest.raises(ValueError, match=r"code files \['fusion_mmfnet.py'\] are missing"):
        publish.check_checkpoint(broken("no_code", lambda t: (t / "fusion_mmfnet.py").unlink()))
    with pytest.raises(ValueError, match="no model.safetensors: only safetensors"):
        publish.check_checkpoint(broken("bin", bin_weights))
    with pytest.raises(SystemExit) as exit_info:
        publish.main([str(tmp_path / "no_map"), "--repo_id", "me/x"])
    assert exit_info.value.code == 2


HAND_WRITTEN = """---
license: mit
language: en
tags:
- my-tag
---

# My model

Notes written by hand.
"""


def test_card_update_rules(saved: tuple[Path, mm.MMFNetForClassification]) -> None:
    """Placeholder cards are replaced; a hand-written card keeps its text and metadata with MMFNet's section
    appended; a second update regenerates only that section (text after it stays); `replace=True` replaces."""
    folder, model = saved
    new = mm.generate_model_card(folder, repo_id="me/demo")
    generic = "---\nlibrary_name: transformers\n---\n\nThis model card has been automatically generated.\n"
    assert mm.update_model_card(generic, new) == new and mm.update_model_card(None, new) == new

    updated = mm.update_model_card(HAND_WRITTEN, new)
    card = ModelCard(updated)
    assert card.text.index("Notes written by hand.") < card.text.index("<!-- mmfnet-card ")
    assert card.data.license == "mit" and card.data.language == "en"
    assert card.data.tags[0] == "my-tag" and "mmfnet" in card.data.tags
    assert card.data.pipeline_tag == "image-classification" and card.data.eval_results
    assert mm.update_model_card(updated, new) == updated  # idempotent: the section is replaced, not appended

    edited = updated + "\n## Added later\n\nKept too.\n"
    regenerated = mm.update_model_card(edited, mm.generate_model_card(model, {"test_accuracy": 0.5}))
    assert regenerated.count("<!-- mmfnet-card ") == 1 and regenerated.endswith("## Added later\n\nKept too.\n")
    assert "Notes written by hand." in regenerated and "| test | all modalities | accuracy | 0.5 |" in regenerated
    assert mm.update_model_card(edited, new, replace=True) == new

    # what the card was generated from travels in it: an update without metrics keeps the known ones
    assert card_mmfnet.card_state(new)["metrics"] == card_mmfnet.read_results(folder)
    kept = card_mmfnet.refresh_model_card(model.config, new)
    assert {r.metric_value for r in ModelCard(kept).data.eval_results} == {
        r.metric_value for r in ModelCard(new).data.eval_results
    }
    assert f"Parameters: {sum(p.numel() for p in model.parameters()):,}" in kept  # a config alone cannot tell


def test_pipeline_tag_and_intended_use() -> None:
    three = make_model()
    text_only = mm.MMFNetConfig(text_config=tiny_bert(), num_labels=2)
    assert ModelCard(mm.generate_model_card(three)).data.pipeline_tag == "image-classification"
    assert ModelCard(mm.generate_model_card(text_only)).data.pipeline_tag == "text-classification"
    base = mm.MMFNetModel(mm.MMFNetConfig(vision_config=tiny_conv()))
    assert ModelCard(mm.generate_model_card(base)).data.pipeline_tag == "image-feature-extraction"
    assert ModelCard(mm.generate_model_card(three, pipeline_tag="audio-classification")).data.pipeline_tag == (
        "audio-classification"
    )
    card = mm.generate_model_card(three, datasets=["me/pets"], repo_id="me/demo")
    intended = card[card.index("## Intended use") : card.index("## Evaluation")]
    assert "any subset of vision, text and audio" in intended and "`me/pets`" in intended
    assert 'pipeline(model="me/demo", trust_remote_code=True)' in card
    assert '{"image": "photo.png", "text": "some text", "audio": "clip.wav"}' in card
    assert "pipeline(" not in mm.generate_model_card(base)  # no head, no classification pipeline


def test_encoder_sources_are_recorded(encoder_dirs: dict[str, Path], tmp_path: Path) -> None:
    """`from_encoders_pretrained` records where each encoder came from; a Hub id given for a local copy wins and
    becomes the card's `base_model`; the fields survive save and load."""
    model = mm.MMFNetForClassification.from_encoders_pretrained(
        text=str(encoder_dirs["bert"]), audio=str(encoder_dirs["wav2vec2"]), num_labels=2, fusion_dim=16,
        text_encoder_name="google-bert/bert-base-uncased",
    )  # fmt: skip
    assert model.config.text_encoder_name == "google-bert/bert-base-uncased"
    assert (
        model.config.audio_encoder_name == str(encoder_dirs["wav2vec2"]) and model.config.vision_encoder_name is None
    )
    model.save_pretrained(tmp_path)
    loaded = mm.MMFNetConfig.from_pretrained(tmp_path)
    assert loaded.text_encoder_name == "google-bert/bert-base-uncased"
    card = ModelCard((tmp_path / "README.md").read_text())
    assert card.data.base_model == ["google-bert/bert-base-uncased"]
    assert "| audio | `wav2vec2` from a local folder `wav2vec2` | mean | no |" in card.text
