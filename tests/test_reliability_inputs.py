"""Issue 14, config and forward: each bad input of a table gets a clear error naming the argument, never a wrong
result. One tiny three-modality model (ViT, BERT, Wav2Vec2) serves every forward case."""

import pytest
import torch
from conftest import random_inputs, three_modality_config, tiny_bert, tiny_conv, tiny_vit, tiny_wav2vec2
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

import modeling_mmfnet as mm


@pytest.fixture(scope="module")
def model() -> mm.MMFNetForClassification:
    torch.manual_seed(0)
    return mm.MMFNetForClassification(three_modality_config("concat", text_pooling="max")).eval()


# ------------------------------------------------------------------------------------------------------- config
CONFIG_CASES = [
    ("typo", {"fusion_tpye": "gated"}, TypeError, r"unknown argument\(s\) `fusion_tpye` \(did you mean `fusion_type`"),
    # typed fields are checked by transformers' strict dataclass on assignment: its error names the field
    ("flag_string", {"freeze_text": "no"}, StrictDataclassError, r"'freeze_text' expected bool, got str"),
    ("flag_int", {"freeze_audio": 1}, StrictDataclassError, r"'freeze_audio' expected bool, got int"),
    ("check_flag", {"check_input_values": "yes"}, StrictDataclassError, r"'check_input_values' expected bool"),
    ("zero_labels", {"num_labels": 0}, ValueError, r"`num_labels` must be an int >= 1, got 0"),
    ("negative_labels", {"num_labels": -3}, ValueError, r"`num_labels` must be an int >= 1, got -3"),
    ("id2label_length", {"num_labels": 3, "id2label": {0: "a"}}, ValueError,
     r"`id2label` has 1 entries but `num_labels` is 3"),
    ("label2id_length", {"id2label": {0: "a", 1: "b"}, "label2id": {"a": 0}}, ValueError, r"`label2id` has 1 entries"),
    ("problem_type", {"problem_type": "classification"}, ValueError, r"`problem_type` must be one of \('regression'"),
    ("sub_config_no_type", {"audio_config": {"hidden_size": 32}}, ValueError,
     r"`audio_config` is a dict without `model_type`"),
    ("huge_tensor_fusion", {"fusion_type": "tensor", "tensor_fusion_dim": 4000}, ValueError,
     r"'tensor' fusion and heads would have about [\d,]+ parameters .*over the limit of 1,000,000,000"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "message"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config(kwargs, error, message):
    base = {"vision_config": tiny_vit(), "text_config": tiny_bert(), "audio_config": tiny_conv()}
    with pytest.raises(error, match=message):
        mm.MMFNetConfig(**{**base, **kwargs})


def test_conv_config_typo_and_accepted_transformers_keys(tmp_path):
    with pytest.raises(TypeError, match=r"`hidden_size` \(did you mean `hidden_sizes`"):
        mm.MMFNetConvConfig(hidden_size=[8, 8])
    # keys transformers itself passes or older checkpoints carry stay accepted, and every round trip works
    config = mm.MMFNetConfig(
        text_config=tiny_bert(), torch_dtype="float32", use_cache=False, tie_word_embeddings=False
    )
    assert config.dtype == torch.float32
    again = mm.MMFNetConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).to_dict()["fusion_type"] == "concat"
    # a saved config may be re-headed with `num_labels` (as in transformers): id2label follows
    assert mm.MMFNetConfig.from_pretrained(tmp_path, num_labels=7).id2label[6] == "LABEL_6"
    # transformers lets any attribute be set on a config and saved with it: such a checkpoint keeps loading
    config.layer_norm_eps = 1.0
    config.save_pretrained(tmp_path / "extra")
    assert mm.MMFNetConfig.from_pretrained(tmp_path / "extra").layer_norm_eps == 1.0
    with pytest.raises(TypeError, match=r"`layer_norm_eps`"):  # built by hand, the same key is a typo
        mm.MMFNetConfig(text_config=tiny_bert(), layer_norm_eps=1.0)


def test_parameter_estimate_matches_the_built_model():
    """The size limit rests on the estimate: it must count what the model builds (fusion and heads)."""
    for fusion_type in mm.FUSION_TYPES:
        config = three_modality_config(fusion_type, aux_unimodal_weight=0.5)
        model = mm.MMFNetForClassification(config)
        counted = ("mmfnet.fusion.", "classifier.", "unimodal_classifier.", "mmfnet.missing")
        built = sum(p.numel() for name, p in model.named_parameters() if name.startswith(counted))
        estimate = mm.configuration_mmfnet.estimate_fusion_parameters(config)
        assert abs(estimate - built) <= 0.05 * built, (fusion_type, estimate, built)


# ------------------------------------------------------------------------------------------------------ forward
def _with(**changes):
    def make(batch_size: int = 2) -> dict:
        inputs = random_inputs(batch_size)
        for key, value in changes.items():
            inputs[key] = value(inputs) if callable(value) else value
            if inputs[key] is None:
                del inputs[key]
        return inputs

    return make


def _nan_at(key: str, row: int = 1, value: float = float("nan")):
    def change(inputs):
        tensor = inputs[key].clone()
        tensor[row].view(-1)[0] = value
        return tensor

    return change


FORWARD_CASES = [
    ("uint8_pixels", _with(pixel_values=lambda i: (i["pixel_values"].abs() * 100).to(torch.uint8)), TypeError,
     r"`pixel_values` must be a floating-point tensor .*torch.uint8.*MMFNetProcessor"),
    ("pixels_wrong_channels", _with(pixel_values=torch.randn(2, 1, 16, 16)), ValueError,
     r"`pixel_values` has 1 channels but the vision encoder takes 3 \(vision_config.num_channels\)"),
    ("float_ids", _with(input_ids=lambda i: i["input_ids"].float()), TypeError,
     r"`input_ids` must be an integer tensor of token ids"),
    ("ids_over_vocab", _with(input_ids=lambda i: i["input_ids"].index_fill(1, torch.tensor([2]), 99)), ValueError,
     r"`input_ids` must be in \[0, 24\) \(vocab_size of the text encoder\); got \[99\] in rows \[0, 1\]"),
    ("negative_ids", _with(input_ids=_nan_at("input_ids", 1, -1)), ValueError,
     r"`input_ids` must be in \[0, 24\).*\[-1\] in rows \[1\]"),
    ("token_types", _with(token_type_ids=lambda i: torch.full_like(i["input_ids"], 3)), ValueError,
     r"`token_type_ids` must be in \[0, 2\) \(type_vocab_size"),
    ("too_long", _with(input_ids=torch.ones(2, 70, dtype=torch.long), attention_mask=None), ValueError,
     r"`input_ids` has 70 tokens but the text encoder has max_position_embeddings=64"),
    ("text_mask_values", _with(attention_mask=lambda i: i["attention_mask"] * 2), ValueError,
     r"`attention_mask` must hold only 0/1"),
    ("padding_only_row", _with(attention_mask=lambda i: i["attention_mask"].index_fill(0, torch.tensor([1]), 0)),
     ValueError, r"`attention_mask` marks no valid position in rows \[1\] of samples that have this modality"),
    ("modality_mask_float", _with(modality_mask=torch.tensor([[1.0, 0.3, 1.0], [1.0, 1.0, 1.0]])), TypeError,
     r"`modality_mask` must be a bool .*float32.*0.3 would be read as 'present'"),
    ("modality_mask_values", _with(modality_mask=torch.tensor([[1, 2, 1], [1, 1, 1]])), ValueError,
     r"`modality_mask` must hold only 0/1 .*got values \[2\]"),
    ("audio_mask_length", _with(audio_attention_mask=torch.ones(2, 400, dtype=torch.long)), ValueError,
     r"`audio_attention_mask` covers 400 positions but `input_values` \(2, 800\) has 800"),
    ("clip_too_short", _with(input_values=torch.randn(2, 30)), ValueError,
     r"`input_values` clips have 30 samples but .* needs at least 45 \(audio_config.conv_kernel / conv_stride\)"),
    ("nan_pixels", _with(pixel_values=_nan_at("pixel_values")), ValueError,
     r"`pixel_values` holds NaN or inf values \(rows \[1\]\)"),
    ("inf_audio", _with(input_values=_nan_at("input_values", 0, float("inf"))), ValueError,
     r"`input_values` holds NaN or inf values \(rows \[0\]\)"),
    ("nan_embeds", _with(pixel_values=None, vision_embeds=torch.tensor([[float("nan")] * 32, [0.0] * 32])), ValueError,
     r"`vision_embeds` holds NaN or inf values \(rows \[0\]\)"),
    ("int_embeds", _with(pixel_values=None, vision_embeds=torch.zeros(2, 32, dtype=torch.long)), TypeError,
     r"`vision_embeds` must be a floating-point tensor"),
    ("empty_batch", lambda: random_inputs(0), ValueError, r"The batch is empty \(batch size 0\)"),
    ("smaller_than_a_patch", _with(pixel_values=torch.randn(2, 3, 2, 2)), ValueError,
     r"`pixel_values` images of 2×2 are smaller than one patch .*patch_size=4"),
    ("audio_key_for_another_encoder", _with(input_values=None, input_features=torch.randn(2, 16, 10)), ValueError,
     r"`input_features` was given but the audio encoder \(wav2vec2\) takes `input_values`"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "error", "message"), [c[1:] for c in FORWARD_CASES], ids=[c[0] for c in FORWARD_CASES]
)
def test_bad_forward_input(model, make, error, message):
    with pytest.raises(error, match=message):
        model(**make())


def test_inputs_of_the_table_are_otherwise_valid(model):
    """The table's base batch runs, so each case fails only for the change it makes."""
    with torch.no_grad():
        assert torch.isfinite(model(**random_inputs(2)).logits).all()


def test_small_images_for_the_seed_cnn():
    narrow = mm.MMFNetConvConfig(hidden_sizes=[8, 8, 8])  # one channel per GroupNorm group
    conv = mm.MMFNetModel(mm.MMFNetConfig(vision_config=narrow, fusion_dim=16)).eval()
    with pytest.raises(ValueError, match=r"`pixel_values` of size 4×4 is too small for the seed CNN .* at least 5"):
        conv(pixel_values=torch.randn(1, 1, 4, 4))
    assert conv(pixel_values=torch.randn(1, 1, 5, 5)).fused_embeds.shape == (1, 16)


def test_absent_rows_may_be_all_padding(model):
    """Rows marked absent in `modality_mask` are padding by design (the processor fills them): no error."""
    inputs = random_inputs(2)
    inputs["attention_mask"][1] = 0
    with torch.no_grad():
        out = model(**inputs, modality_mask=torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool))
    assert torch.isfinite(out.logits).all()


def test_value_checks_can_be_turned_off():
    """`check_input_values=False` skips the data checks: NaN then flows through (the cost the flag saves)."""
    torch.manual_seed(0)
    unchecked = mm.MMFNetForClassification(three_modality_config(check_input_values=False)).eval()
    inputs = random_inputs(2)
    inputs["pixel_values"][1, 0, 0, 0] = float("nan")
    with torch.no_grad():
        logits = unchecked(**inputs).logits
    assert torch.isfinite(logits[0]).all() and not torch.isfinite(logits[1]).all()


# ------------------------------------------------------------------------------------------------------- labels
LABEL_CASES = [
    ("list", "single_label_classification", 5, [0, 1], TypeError, r"`labels` must be a torch.Tensor, got list"),
    ("scalar", "single_label_classification", 5, torch.tensor(1), ValueError, r"must have a batch dimension"),
    ("bool", "multi_label_classification", 5, torch.ones(2, 5, dtype=torch.bool), TypeError, r"got torch.bool"),
    ("class_out_of_range", "single_label_classification", 5, torch.tensor([0, 5]), ValueError, r"must be in \[0, 5\)"),
    ("multi_label_outside", "multi_label_classification", 5, torch.tensor([[0.0, 1, 2, 0, 0], [0, 0, 0, 0, -1]]),
     ValueError, r"multi-label `labels` must be targets in \[0, 1\].*\[-1.0, 2.0\] in rows \[0, 1\]"),
    ("multi_label_nan", "multi_label_classification", 5, torch.tensor([[0.0] * 5, [float("nan")] * 5]),
     ValueError, r"`labels` holds NaN or inf values \(rows \[1\]\)"),
    ("regression_shape", "regression", 2, torch.randn(2, 3), ValueError, r"regression expects `labels` of shape"),
    ("regression_inf", "regression", 1, torch.tensor([0.5, float("inf")]), ValueError, r"`labels` holds NaN or inf"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels", "error", "message"),
    [c[1:] for c in LABEL_CASES],
    ids=[c[0] for c in LABEL_CASES],
)
def test_bad_labels(problem_type, num_labels, labels, error, message):
    torch.manual_seed(0)
    config = mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim=16, num_labels=num_labels, problem_type=problem_type)
    head = mm.MMFNetForClassification(config).eval()
    with pytest.raises(error, match=message):
        head(**random_inputs(2, modalities=("text",)), labels=labels)


def test_wav2vec2_minimum_length_is_exact():
    """The refused length is the one the feature encoder really cannot take, and the next one works."""
    config = mm.MMFNetConfig(audio_config=tiny_wav2vec2(), fusion_dim=16)
    model = mm.MMFNetModel(config).eval()
    assert mm.validation_mmfnet.min_wav2vec2_samples(config.audio_config) == 45
    with torch.no_grad():
        assert model(input_values=torch.randn(1, 45)).fused_embeds.shape == (1, 16)
    with pytest.raises(ValueError, match="needs at least 45"):
        model(input_values=torch.randn(1, 44))


def test_finite_check_has_no_false_alarm_on_large_values(model):
    """The check is a float32 sum per tensor; finite values whose sum overflows are confirmed element-wise."""
    huge = torch.full((2, 32), 3e38)
    with torch.no_grad():
        assert model(text_embeds=huge).logits.shape == (2, 5)
    huge[1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`text_embeds` holds NaN or inf values \(rows \[1\]\)"):
        model(text_embeds=huge)


def test_float_class_ids_are_explained_and_the_problem_type_is_never_pinned():
    """Float class ids (B,) look like multi-label targets: the error says so; no call pins the problem type."""
    torch.manual_seed(0)
    head = mm.MMFNetForClassification(mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim=16, num_labels=3))
    inputs = random_inputs(2, modalities=("text",))
    with pytest.raises(ValueError, match=r"read as multi-label targets .*`labels.long\(\)`"):
        head(**inputs, labels=torch.tensor([1.0, 2.0]))
    assert head.config.problem_type is None
    assert head(**inputs, labels=torch.tensor([1, 2])).loss is not None
    assert head.config.problem_type is None


def test_half_precision_inputs_are_cast_to_the_encoders_dtype(model):
    inputs = random_inputs(2)
    with torch.no_grad():
        reference = model(**inputs).logits
        half = model(**{k: v.half() if v.is_floating_point() else v for k, v in inputs.items()}).logits
    torch.testing.assert_close(half, reference, rtol=1e-2, atol=1e-2)
