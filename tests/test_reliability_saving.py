"""Issue 14, saving and loading: saves are atomic (a process killed mid-save leaves the previous checkpoint
loadable), a file path is refused, and damaged or mismatched checkpoints give errors naming tensors and files."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import random_inputs, tiny_bert, write_tokenizer
from safetensors.torch import load_file, save_file

import modeling_mmfnet as mm

ROOT = Path(__file__).resolve().parents[1]


def small_head(num_labels: int = 3, **kwargs) -> mm.MMFNetForClassification:
    torch.manual_seed(0)
    config = mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim=16, fusion_hidden_dim=32, num_labels=num_labels,
                             **kwargs)  # fmt: skip
    return mm.MMFNetForClassification(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reliability") / "head"
    small_head().save_pretrained(folder)
    return folder


def damaged(saved: Path, tmp_path: Path, change) -> Path:
    """A copy of the checkpoint whose state dict went through `change`."""
    folder = tmp_path / "damaged"
    shutil.copytree(saved, folder)
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _nan_classifier(state):
    state["classifier.weight"] = state["classifier.weight"].clone()
    state["classifier.weight"][1, 2] = float("nan")


def _inf_projection(state):
    state["mmfnet.text_projection.dense.bias"] = torch.full_like(
        state["mmfnet.text_projection.dense.bias"], -torch.inf
    )


LOAD_CASES = [
    ("missing_head", lambda s: s.pop("classifier.weight"), {}, OSError,
     r"lacks 1 tensor\(s\) this model needs: \['classifier.weight'\]; they would be randomly initialised"),
    ("missing_encoder_tensor", lambda s: s.pop("mmfnet.text_model.embeddings.word_embeddings.weight"), {}, OSError,
     r"lacks 1 tensor\(s\).*mmfnet.text_model.embeddings.word_embeddings.weight"),
    ("nan_weights", _nan_classifier, {}, ValueError,
     r"holds NaN or inf values in 1 tensor\(s\): \['classifier.weight'\]"),
    ("inf_weights", _inf_projection, {}, ValueError, r"NaN or inf .*mmfnet.text_projection.dense.bias"),
    ("num_labels_override", lambda s: None, {"num_labels": 5}, ValueError,
     r"2 tensor\(s\) .* do not fit this config's shapes: classifier.bias: checkpoint \(3,\) vs model \(5,\); "
     r"classifier.weight: checkpoint \(3, 16\) vs model \(5, 16\).*`ignore_mismatched_sizes=True`"),
    ("fusion_dim_changed", lambda s: None, {"fusion_dim": 8}, ValueError,
     r"tensor\(s\) .* do not fit .*mmfnet.missing_embeddings.weight: checkpoint \(1, 16\) vs model \(1, 8\)"),
    ("wrong_shaped_tensor", lambda s: s.update({"classifier.bias": torch.zeros(4)}), {}, ValueError,
     r"classifier.bias: checkpoint \(4,\) vs model \(3,\).*ignore_mismatched_sizes=True"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"), [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES]
)
def test_bad_checkpoint(saved, tmp_path, change, kwargs, error, message):
    folder = damaged(saved, tmp_path, change)
    with pytest.raises(error, match=message):
        mm.MMFNetForClassification.from_pretrained(folder, **kwargs)


def test_folder_without_config_names_the_file(saved, tmp_path):
    folder = tmp_path / "no_config"
    shutil.copytree(saved, folder)
    (folder / "config.json").unlink()
    with pytest.raises(OSError, match=r"has no config.json \(looked for .*no_config/config.json'\)"):
        mm.MMFNetForClassification.from_pretrained(folder)


def test_wrong_paths_name_the_problem(saved, tmp_path):
    with pytest.raises(OSError, match=r"model.safetensors' is a file; `from_pretrained` takes the checkpoint folder"):
        mm.MMFNetForClassification.from_pretrained(saved / "model.safetensors")
    with pytest.raises(OSError, match=r"nope': no such checkpoint folder"):
        mm.MMFNetForClassification.from_pretrained(tmp_path / "nope")
    with pytest.raises(OSError, match=r"has no processor_config.json: it holds no MMFNetProcessor"):
        mm.MMFNetProcessor.from_pretrained(saved)  # a model folder without a processor


def test_legitimate_loads_still_work(saved, tmp_path):
    """Re-heading with `ignore_mismatched_sizes=True`, and a base checkpoint loaded as a head, keep working."""
    reheaded = mm.MMFNetForClassification.from_pretrained(saved, num_labels=5, ignore_mismatched_sizes=True)
    assert reheaded.classifier.out_features == 5 and reheaded.config.num_labels == 5
    model, info = mm.MMFNetForClassification.from_pretrained(saved, output_loading_info=True)
    assert info["missing_keys"] == set() and info["mismatched_keys"] == set()
    base = mm.MMFNetModel.from_pretrained(saved)
    base.save_pretrained(tmp_path / "base")
    head = mm.MMFNetForClassification.from_pretrained(tmp_path / "base")  # a new head on a base: allowed
    torch.testing.assert_close(head.mmfnet.missing_embeddings.weight, model.mmfnet.missing_embeddings.weight)


def test_save_to_a_file_path_raises(tmp_path, encoder_dirs):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"`save_directory` .*a_file' is an existing file"):
        small_head().save_pretrained(target)
    processor = mm.MMFNetProcessor(tokenizer=write_tokenizer(tmp_path / "tok"))
    with pytest.raises(NotADirectoryError, match=r"is an existing file"):
        processor.save_pretrained(target)
    with pytest.raises(IsADirectoryError, match=r"is a folder; expected a file path"):
        mm.saving_mmfnet.atomic_write_text(tmp_path, "text")
    assert target.read_text() == "not a folder"


def test_save_over_an_output_dir_keeps_other_files(tmp_path):
    """Saving into an existing folder (a Trainer output_dir) replaces the model's files, keeps the rest, and leaves
    no staging folder behind."""
    folder = tmp_path / "out"
    small_head().save_pretrained(folder)
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    newer = small_head(num_labels=3, fusion_type="gated")
    newer.save_pretrained(folder)
    assert (folder / "checkpoint-5" / "trainer_state.json").read_text() == "{}"
    assert not (folder / "model-00001-of-00002.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    reloaded = mm.MMFNetForClassification.from_pretrained(folder)
    assert reloaded.config.fusion_type == "gated"
    inputs = random_inputs(2, modalities=("text",))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, newer(**inputs).logits, rtol=0, atol=0)


KILL_CHILD = r"""
import sys, torch
sys.path.insert(0, sys.argv[2])
from conftest import tiny_bert, write_tokenizer
import modeling_mmfnet as mm
from pathlib import Path

folder = Path(sys.argv[1])
config = mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim=512, fusion_hidden_dim=4096, num_labels=3)
models = []
for seed in (0, 1):
    torch.manual_seed(seed)
    models.append(mm.MMFNetForClassification(config).eval())
processor = mm.MMFNetProcessor(tokenizer=write_tokenizer(folder.parent / "tokenizer"))
step = 0
while True:  # save alternately two models, the processor and the card, back to back, until killed
    model = models[step % 2]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    mm.write_model_card(folder, model)
    if step == 0:
        print("saved", flush=True)
    step += 1
"""


def test_kill_mid_save_keeps_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process while it saves (about 17 MB of weights, back to back): what is left always loads, and it is
    exactly one of the two models it was saving, with its processor and a complete card."""
    folder = tmp_path / "checkpoint"
    references = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim=512, fusion_hidden_dim=4096, num_labels=3)
        references[seed] = mm.MMFNetForClassification(config).state_dict()["classifier.weight"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    interrupted = 0
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(folder), str(ROOT / "tests")],
            stdout=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        assert child.stdout.readline().strip() == b"saved"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill while the weights are being written into a staging folder
            if any(tmp_path.glob(".checkpoint.saving-*/model.safetensors")):
                break
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.saving-")]
        interrupted += bool(leftovers)
        for leftover in leftovers:  # what a kill leaves: a staging folder beside the checkpoint, never inside it
            shutil.rmtree(leftover)
        loaded = mm.MMFNetForClassification.from_pretrained(folder)
        weight = loaded.state_dict()["classifier.weight"]
        assert any(torch.equal(weight, reference) for reference in references.values())
        assert mm.MMFNetProcessor.from_pretrained(folder).tokenizer is not None
        card = (folder / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: transformers") and card.rstrip().endswith("<!-- /mmfnet-card -->")
    assert interrupted >= 1, "no kill landed inside a save; the test did not exercise the atomic path"


def test_saved_files_keep_the_usual_permissions(tmp_path, encoder_dirs):
    """Staging in a temporary folder must not make the checkpoint private (tempfile creates 0o700 / 0o600)."""
    reference_dir, reference_file = tmp_path / "plain_dir", tmp_path / "plain_file"
    reference_dir.mkdir()
    reference_file.write_text("x")
    folder = tmp_path / "saved"
    model = small_head()
    model.save_pretrained(folder)
    mm.write_model_card(folder, model)
    assert folder.stat().st_mode & 0o777 == reference_dir.stat().st_mode & 0o777
    for name in ("config.json", "README.md"):  # (transformers itself writes model.safetensors as 0o600)
        assert (folder / name).stat().st_mode & 0o777 == reference_file.stat().st_mode & 0o777, name


def test_optional_head_parts_may_be_added_when_loading(saved):
    """Turning on auxiliary heads or the contrastive loss for further fine-tuning adds fresh tensors: allowed."""
    model = mm.MMFNetForClassification.from_pretrained(saved, aux_unimodal_weight=0.5, contrastive_weight=0.1)
    assert model.unimodal_classifier is not None and model.logit_scale is not None
    reference = mm.MMFNetForClassification.from_pretrained(saved)
    torch.testing.assert_close(model.classifier.weight, reference.classifier.weight, rtol=0, atol=0)


def test_missing_tensors_are_reported_instead_when_the_caller_asks_for_the_loading_info(saved, tmp_path):
    """`output_loading_info=True` hands `missing_keys` to the caller (as transformers' own tests expect)."""
    folder = damaged(saved, tmp_path, lambda state: [state.pop(k) for k in ("classifier.weight", "classifier.bias")])
    with pytest.raises(OSError, match=r"lacks 2 tensor\(s\)"):
        mm.MMFNetForClassification.from_pretrained(folder)
    model, info = mm.MMFNetForClassification.from_pretrained(folder, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert torch.isfinite(model.classifier.weight).all()
