"""Bad input gets a clear error naming the argument and what was expected."""

import pytest
import torch
from conftest import random_inputs, three_modality_config, tiny_bert, tiny_conv, tiny_vit
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

import modeling_mmfnet as mm


@pytest.fixture(scope="module")
def model() -> mm.MMFNetForClassification:
    torch.manual_seed(0)
    return mm.MMFNetForClassification(three_modality_config("transformer")).eval()


@pytest.fixture(scope="module")
def vision_text_model() -> mm.MMFNetForClassification:
    return mm.MMFNetForClassification(mm.MMFNetConfig(vision_config=tiny_vit(), text_config=tiny_bert(), num_labels=3))


def test_no_modality(model):
    with pytest.raises(ValueError, match=r"No modality was given.*pixel_values.*input_ids"):
        model()
    with pytest.raises(ValueError, match="No modality was given"):
        model(labels=torch.tensor([1]))


def test_input_for_a_modality_without_encoder(vision_text_model):
    with pytest.raises(ValueError, match=r"`input_values` was given but this MMFNet has no audio encoder"):
        vision_text_model(**random_inputs(2, modalities=("vision", "audio")))
    with pytest.raises(ValueError, match=r"`audio_embeds` was given but this MMFNet has no audio encoder"):
        vision_text_model(pixel_values=torch.randn(2, 3, 16, 16), audio_embeds=torch.randn(2, 32))


def test_mismatched_batch_sizes(model):
    inputs = random_inputs(3)
    inputs["input_values"] = inputs["input_values"][:2]
    with pytest.raises(ValueError, match=r"share the batch size.*'input_values': 2"):
        model(**inputs)
    with pytest.raises(ValueError, match=r"`labels` has batch size 2 but the inputs have 3"):
        model(**random_inputs(3), labels=torch.tensor([0, 1]))


def test_modality_mask_shape_and_empty_rows(model):
    inputs = random_inputs(2)
    with pytest.raises(ValueError, match=r"`modality_mask` must be a tensor of shape \(batch, 3\) = \(2, 3\)"):
        model(**inputs, modality_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`modality_mask` must be a tensor"):
        model(**inputs, modality_mask=[[1, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"`modality_mask` rows \[1\] have no modality present"):
        model(**inputs, modality_mask=torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`modality_mask` marks \['audio'\] present, but no input was given"):
        model(**random_inputs(2, modalities=("vision", "text")), modality_mask=torch.ones(2, 3, dtype=torch.bool))


def test_wrong_ranks(model):
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(batch, channels, height, width\)"):
        model(pixel_values=torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match=r"`input_ids` must have shape \(batch, sequence_length\)"):
        model(input_ids=torch.ones(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`attention_mask` \(2, 5\) must match `input_ids` \(2, 6\)"):
        model(input_ids=torch.ones(2, 6, dtype=torch.long), attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"`text_embeds` must have shape \(batch, 32\)"):
        model(text_embeds=torch.randn(2, 16))
    with pytest.raises(TypeError, match=r"`pixel_values` must be a torch.Tensor"):
        model(pixel_values=[[0.0]])
    with pytest.raises(ValueError, match=r"as `input_values` or as `input_features`, not both"):
        model(input_values=torch.randn(2, 800), input_features=torch.randn(2, 16, 10))
    with pytest.raises(ValueError, match=r"either `input_ids` or `text_embeds`"):
        model(input_ids=torch.ones(2, 4, dtype=torch.long), text_embeds=torch.randn(2, 32))
    conv = mm.MMFNetConvModel(tiny_conv())
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(batch, 1, height, width\)"):
        conv(pixel_values=torch.randn(2, 3, 8, 8))


def test_labels_incompatible_with_problem_type(model):
    inputs = random_inputs(2)
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 5\) \(num_labels\) or -100; got \[7\]"):
        model(**inputs, labels=torch.tensor([1, 7]))
    multi = mm.MMFNetForClassification(three_modality_config(problem_type="multi_label_classification"))
    with pytest.raises(
        ValueError, match=r"multi-label classification expects `labels` of shape \(batch, num_labels\)"
    ):
        multi(**inputs, labels=torch.tensor([1, 2]).float())
    regression = mm.MMFNetForClassification(three_modality_config(num_labels=2, problem_type="regression"))
    with pytest.raises(ValueError, match=r"regression expects `labels` of shape"):
        regression(**inputs, labels=torch.randn(2, 3))
    single = mm.MMFNetForClassification(three_modality_config(problem_type="single_label_classification"))
    with pytest.raises(ValueError, match=r"single-label classification expects integer `labels`"):
        single(**inputs, labels=torch.randn(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {},
            StrictDataclassClassValidationError,
            "needs at least one of `vision_config`, `text_config`, `audio_config`",
        ),
        (
            {"text_config": tiny_bert(), "fusion_type": "sum"},
            StrictDataclassFieldValidationError,
            r"'fusion_type' expected one of \('concat', .*got sum",
        ),
        (
            {"text_config": tiny_bert(), "text_pooling": "first"},
            StrictDataclassFieldValidationError,
            r"'text_pooling' expected one of \('mean', 'cls', 'max', 'pooler', 'attention'\), got first",
        ),
        (
            {"text_config": tiny_bert(), "fusion_dim": 0},
            StrictDataclassClassValidationError,
            r"`fusion_dim` must be an int >= 1",
        ),
        (
            {"text_config": tiny_bert(), "modality_dropout": 1.0},
            StrictDataclassClassValidationError,
            r"`modality_dropout` must be a number in \[0.0, 1.0\)",
        ),
        (
            {"text_config": tiny_bert(), "fusion_type": "transformer", "fusion_dim": 30},
            StrictDataclassClassValidationError,
            r"divisible by `fusion_heads`",
        ),
        ({"text_config": "bert"}, StrictDataclassFieldValidationError, r"'text_config' expected PreTrainedConfig"),
    ],
)
def test_invalid_config(kwargs, error, message):
    """Types and Literal choices are checked on assignment, structure by the `validate_*` hook; both name the field."""
    with pytest.raises(error, match=message):
        mm.MMFNetConfig(**kwargs)


def test_config_is_validated_again_when_edited_then_saved(tmp_path):
    config = mm.MMFNetConfig(text_config=tiny_bert(), fusion_type="transformer")
    with pytest.raises(StrictDataclassFieldValidationError, match="fusion_type"):
        config.fusion_type = "sum"
    config.fusion_heads = 3  # 256 is not divisible by 3: caught by the validation hook before anything is written
    with pytest.raises(StrictDataclassClassValidationError, match=r"`fusion_dim` \(256\) must be divisible"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_invalid_config_types_and_pooler_mode():
    with pytest.raises(Exception, match="fusion_dim"):
        mm.MMFNetConfig(text_config=tiny_bert(), fusion_dim="wide")
    model = mm.MMFNetModel(mm.MMFNetConfig(audio_config=tiny_conv(), audio_pooling="pooler"))
    assert model(input_features=torch.randn(1, 16, 8)).fused_embeds.shape == (1, 256)  # the seed CNN has a pooler
    distil = mm.MMFNetConfig(text_config={"model_type": "distilbert", "dim": 32, "n_layers": 1, "n_heads": 2,
                                          "hidden_dim": 64, "vocab_size": 30}, text_pooling="pooler")  # fmt: skip
    with pytest.raises(ValueError, match=r"`text_pooling='pooler'` but the text encoder returns no `pooler_output`"):
        mm.MMFNetModel(distil)(input_ids=torch.ones(1, 4, dtype=torch.long))


def test_from_encoders_pretrained_argument_errors(encoder_dirs):
    with pytest.raises(TypeError, match=r"`vision` must be a Hub id or path, a PreTrainedModel"):
        mm.MMFNetModel.from_encoders_pretrained(vision=42)
    with pytest.raises(ValueError, match=r"`encoder_kwargs` keys must be modalities"):
        mm.MMFNetModel.from_encoders_pretrained(text=encoder_dirs["bert"], encoder_kwargs={"txt": {}})
    with pytest.raises(ValueError, match="needs at least one of `vision`, `text`, `audio`"):
        mm.MMFNetModel.from_encoders_pretrained()
