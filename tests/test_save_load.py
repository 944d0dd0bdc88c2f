"""save_pretrained / from_pretrained, the Auto classes, and loading as remote code without the package."""

import json

import pytest
import torch
from conftest import (
    BLOCK_PACKAGE,
    SHIPPED_CODE_FILES,
    clean_env,
    random_inputs,
    three_modality_config,
    tiny_bert,
    tiny_conv,
)
from hub_server import run_client
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

import modeling_mmfnet as mm

CODE_FILES = SHIPPED_CODE_FILES


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-looking three-modality classifier (ViT + seed CNN audio + BERT) saved to disk, with references."""
    torch.manual_seed(0)
    config = three_modality_config("transformer", num_labels=4)
    config = mm.MMFNetConfig(
        vision_config=config.vision_config, text_config=tiny_bert(), audio_config=tiny_conv(),
        fusion_type="transformer", fusion_dim=32, fusion_hidden_dim=64, num_labels=4,
        id2label={i: f"class_{i}" for i in range(4)}, label2id={f"class_{i}": i for i in range(4)},
    )  # fmt: skip
    model = mm.MMFNetForClassification(config).eval()
    folder = tmp_path_factory.mktemp("saved") / "mmfnet"
    model.save_pretrained(folder)
    inputs = random_inputs(3, modalities=("vision", "text"))
    inputs["input_features"] = torch.randn(3, 16, 20)
    inputs["modality_mask"] = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        out = model(**inputs)
    torch.save({"inputs": inputs, "logits": out.logits, "fused": out.fused_embeds}, folder.parent / "reference.pt")
    return folder, model, inputs, out


def test_saved_folder_carries_code_and_auto_map(saved):
    folder, *_ = saved
    files = {p.name for p in folder.iterdir()}
    assert files >= CODE_FILES and "model.safetensors" in files and "config.json" in files
    assert not any(name.endswith(".bin") for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mmfnet" and config["audio_config"]["model_type"] == "mmfnet_conv"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mmfnet.MMFNetConfig",
        "AutoModel": "modeling_mmfnet.MMFNetModel",
        "AutoModelForSequenceClassification": "modeling_mmfnet.MMFNetForSequenceClassification",
    }


def test_from_pretrained_and_auto_classes_reproduce_outputs(saved):
    folder, model, inputs, reference = saved
    reloaded = mm.MMFNetForClassification.from_pretrained(folder)
    auto_head = AutoModelForSequenceClassification.from_pretrained(folder)
    base = AutoModel.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    assert isinstance(auto_head, mm.MMFNetForClassification) and isinstance(base, mm.MMFNetModel)
    assert isinstance(config.audio_config, mm.MMFNetConvConfig) and config.id2label[2] == "class_2"
    assert {**config.to_dict(), "_name_or_path": ""} == model.config.to_dict()
    with torch.no_grad():
        for candidate in (reloaded, auto_head):
            torch.testing.assert_close(candidate(**inputs).logits, reference.logits, rtol=0, atol=0)
        torch.testing.assert_close(base(**inputs).fused_embeds, reference.fused_embeds, rtol=0, atol=0)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_remote_code_without_the_package(saved, tmp_path):
    """A process where `modeling_mmfnet` cannot be imported loads the folder's own code and reproduces outputs."""
    folder, *_ = saved
    code = (
        BLOCK_PACKAGE
        + """
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

path = V["folder"]
ref = torch.load(V["reference"])
try:
    AutoModel.from_pretrained(path)
    refused = False
except ValueError as error:
    refused = "trust_remote_code" in str(error)
config = AutoConfig.from_pretrained(path, trust_remote_code=True)
head = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)
base = AutoModel.from_pretrained(path, trust_remote_code=True)
with torch.no_grad():
    logits = head(**ref["inputs"]).logits
    fused = base(**ref["inputs"]).fused_embeds
RESULT = {
    "refused_without_trust": refused,
    "modules": [type(o).__module__ for o in (config, head, base, head.mmfnet.audio_model)],
    "classes": [type(o).__name__ for o in (config, config.audio_config, head, base)],
    "logits_equal": bool(torch.equal(logits, ref["logits"])),
    "fused_equal": bool(torch.equal(fused, ref["fused"])),
}
"""
    )
    result = run_client(
        code,
        clean_env(tmp_path / "hf_home"),
        tmp_path,
        folder=str(folder),
        reference=str(folder.parent / "reference.pt"),
    )
    assert result["refused_without_trust"]
    assert all(module.startswith("transformers_modules.") for module in result["modules"]), result["modules"]
    assert result["classes"] == ["MMFNetConfig", "MMFNetConvConfig", "MMFNetForSequenceClassification", "MMFNetModel"]
    assert result["logits_equal"] and result["fused_equal"]


def test_corrupt_checkpoint_gives_a_clear_error(saved, tmp_path):
    folder, *_ = saved
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folder.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=r"Cannot read the weights of .*broken.*corrupt or truncated"):
        mm.MMFNetForClassification.from_pretrained(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(Exception, match=r"(?i)json|config"):
        mm.MMFNetForClassification.from_pretrained(broken)


def test_config_round_trip_and_validation(tmp_path):
    config = mm.MMFNetConfig(
        text_config=tiny_bert().to_dict(), audio_config=tiny_conv().to_dict(), fusion_type="gated"
    )
    assert config.modalities == ("text", "audio") and isinstance(config.audio_config, mm.MMFNetConvConfig)
    config.save_pretrained(tmp_path)
    again = mm.MMFNetConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict() and again.vision_config is None
