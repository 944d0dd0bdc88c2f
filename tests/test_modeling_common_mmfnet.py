"""Transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) on `MMFNetModel` and
`MMFNetForSequenceClassification`, as transformers' models run them, with tiny ViT / BERT / Wav2Vec2 encoders.

The test files come from the sdist of the installed transformers (see tests/transformers_common.py); without them
(no PyPI) the whole module is skipped with the reason. Every fusion type gets the full mixin. A skipped common test
carries its reason below; each holds for a composite of three encoders, as in transformers' CLIP tests.
"""

import copy
import inspect
import json
import unittest

import pytest
import torch
from conftest import tiny_wav2vec2
from transformers import BertConfig, ViTConfig
from transformers_common import CommonTestsUnavailable, load_common_tests

import modeling_mmfnet as mm

try:
    test_modeling_common, test_configuration_common = load_common_tests()
except CommonTestsUnavailable as error:
    pytest.skip(f"transformers' common tests are unavailable: {error}", allow_module_level=True)

ModelTesterMixin = test_modeling_common.ModelTesterMixin
ConfigTester = test_configuration_common.ConfigTester
floats_tensor, ids_tensor = test_modeling_common.floats_tensor, test_modeling_common.ids_tensor


class MMFNetModelTester:
    """Tiny three-modality MMFNet: ViT (16×16 images), BERT (7 tokens), Wav2Vec2 (800 samples), 2 layers each."""

    def __init__(self, parent: unittest.TestCase, fusion_type: str, batch_size: int = 2) -> None:
        self.parent = parent
        self.fusion_type = fusion_type
        self.batch_size = batch_size
        self.num_hidden_layers = 2  # of every encoder
        self.hidden_size = 32
        self.num_attention_heads = 2
        self.seq_length = 7
        self.vocab_size = 99
        self.image_size = 16
        self.num_labels = 3
        self.audio_length = 800
        self.is_training = True

    def get_config(self) -> mm.MMFNetConfig:
        encoder = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
        )
        return mm.MMFNetConfig(
            vision_config=ViTConfig(**encoder, image_size=self.image_size, patch_size=4, num_channels=3),
            text_config=BertConfig(**encoder, vocab_size=self.vocab_size, max_position_embeddings=32),
            audio_config=tiny_wav2vec2(**encoder),
            fusion_type=self.fusion_type,
            fusion_dim=32,
            fusion_hidden_dim=37,
            fusion_heads=2,
            tensor_fusion_dim=4,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[mm.MMFNetConfig, dict[str, torch.Tensor]]:
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, -2:] = 0  # a padded row: the masks must reach the encoders and the pooling
        inputs = {
            "pixel_values": floats_tensor([self.batch_size, 3, self.image_size, self.image_size]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_values": floats_tensor([self.batch_size, self.audio_length]),
        }
        return self.get_config(), inputs


class MMFNetCommonTests(ModelTesterMixin):
    """`ModelTesterMixin` for MMFNet; subclassed once per fusion type below."""

    fusion_type = "concat"
    all_model_classes = (mm.MMFNetModel, mm.MMFNetForSequenceClassification)
    _is_composite = True
    test_resize_embeddings = True
    test_torch_exportable = False  # not in the sdist (ExportTesterMixin); tests/test_export.py covers torch.export
    test_mismatched_shapes = True
    test_missing_keys = True
    test_can_init_all_missing_weights_before_2023 = True  # the file has no copyright year: run the check anyway

    # the eager-vs-SDPA test feeds the main input (`pixel_values`), these, and its own text `attention_mask`
    additional_model_inputs = ["input_ids", "input_values"]

    def setUp(self) -> None:
        self.model_tester = MMFNetModelTester(self, self.fusion_type)
        # the text sub-config as MMFNetConfig writes it to JSON: `ConfigTester` compares the JSON with its inputs
        text = json.loads(self.model_tester.get_config().to_json_string())["text_config"]
        self.config_tester = ConfigTester(
            self,
            config_class=mm.MMFNetConfig,
            has_text_modality=False,
            text_config=text,
            fusion_type=self.fusion_type,
            fusion_dim=32,
            fusion_heads=2,
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        # transformers' label lookup keys on its own class names; MMFNet's head takes single-label class ids
        if return_labels and model_class is mm.MMFNetForSequenceClassification:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs_dict

    def test_config(self) -> None:
        # `MMFNetConfig()` has no modality, which the config refuses (tested below), hence no init without params
        self.config_tester.run_common_tests(can_init_without_params=False)

    # ---- skipped common tests: each reason holds for a composite of three encoders (as in CLIP's tests) ----
    @unittest.skip(reason="Hidden states are the encoders': tested through `{modality}_model_output` below")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="Attentions are the encoders': tested through `{modality}_model_output` below")
    def test_attention_outputs(self):
        pass

    @unittest.skip(reason="Retain_grad of hidden states / attentions is tested in the encoders' own model tests")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="MMFNet takes no `inputs_embeds`: precomputed inputs are pooled `{modality}_embeds`")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="MMFNet takes no `inputs_embeds`: precomputed inputs are pooled `{modality}_embeds`")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(
        reason="Its failure message subtracts output tensors, which torch refuses for the bool `modality_mask`; the "
        "same tuple-vs-dict check runs in test_tuple_outputs_equal_dict_outputs below"
    )
    def test_model_outputs_equivalence(self):
        pass

    # transformers skips base models in its training tests by looking them up in its own model mapping, which
    # cannot list MMFNet: MMFNetModel returns no loss, so these run on the head (which trains every encoder)
    def test_training(self) -> None:
        self.all_model_classes = (mm.MMFNetForSequenceClassification,)
        super().test_training()

    def check_training_gradient_checkpointing(self, gradient_checkpointing_kwargs=None) -> None:
        self.all_model_classes = (mm.MMFNetForSequenceClassification,)
        super().check_training_gradient_checkpointing(gradient_checkpointing_kwargs)

    @test_modeling_common.parameterized.expand(test_modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    def test_eager_matches_sdpa_inference(
        self, name, dtype, padding_side, use_attention_mask, output_attentions, enable_kernels
    ):
        # Run on the head only: the test compares a base model's `hidden_states[-1]`, which MMFNetModel's output
        # keeps per encoder (`{modality}_model_output`); the head's logits depend on every encoder's attention.
        self.all_model_classes = (mm.MMFNetForSequenceClassification,)
        test_modeling_common._test_eager_matches_sdpa_inference(
            self, name, dtype, padding_side, use_attention_mask, output_attentions, enable_kernels
        )

    # ---- what the skipped tests would check, in MMFNet's form ----
    def test_tuple_outputs_equal_dict_outputs(self) -> None:
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()

        def flatten(value):
            if isinstance(value, dict):
                value = tuple(value.values())
            if isinstance(value, (list, tuple)):
                return [leaf for item in value for leaf in flatten(item)]
            return [value]

        for model_class in self.all_model_classes:
            model = model_class(copy.deepcopy(config)).eval()
            for extra in ({}, {"output_hidden_states": True}, {"output_attentions": True}):
                labeled = self._prepare_for_class(inputs, model_class, return_labels=True)
                with torch.no_grad():
                    as_tuple = model(**labeled, **extra, return_dict=False)
                    as_dict = model(**labeled, **extra, return_dict=True)
                self.assertIsInstance(as_tuple, tuple)
                expected = flatten(as_dict.to_tuple())
                got = flatten(as_tuple)
                self.assertEqual(len(got), len(expected), (model_class.__name__, extra))
                self.assertGreater(len(got), 3 + bool(extra) * 3, (model_class.__name__, extra))  # nested outputs too
                for tuple_value, dict_value in zip(got, expected, strict=True):
                    self.assertTrue(torch.equal(tuple_value, dict_value), (model_class.__name__, extra))

    def test_encoder_attentions_and_hidden_states_come_back(self) -> None:
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        tester = self.model_tester
        for model_class in self.all_model_classes:
            model = model_class._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
            with torch.no_grad():
                outputs = model(**inputs, output_attentions=True, output_hidden_states=True)
                tuple_outputs = model(**inputs, output_attentions=True, output_hidden_states=True, return_dict=False)
            self.assertIsInstance(tuple_outputs, tuple)
            for modality, tokens in (("vision", 17), ("text", tester.seq_length), ("audio", 38)):
                encoder_output = getattr(outputs, f"{modality}_model_output")
                self.assertEqual(len(encoder_output.attentions), tester.num_hidden_layers, modality)
                self.assertEqual(len(encoder_output.hidden_states), tester.num_hidden_layers + 1, modality)
                self.assertEqual(
                    list(encoder_output.attentions[0].shape),
                    [tester.batch_size, tester.num_attention_heads, tokens, tokens],
                    modality,
                )
                self.assertEqual(
                    list(encoder_output.hidden_states[-1].shape), [tester.batch_size, tokens, tester.hidden_size]
                )
            with torch.no_grad():
                plain = model(**inputs)
            self.assertIsNone(plain.text_model_output.attentions)
            self.assertIsNone(plain.text_model_output.hidden_states)


FUSION_CASES = {}
for _fusion_type in mm.FUSION_TYPES:
    _name = f"MMFNetCommonTest_{_fusion_type}"
    FUSION_CASES[_name] = type(_name, (MMFNetCommonTests, unittest.TestCase), {"fusion_type": _fusion_type})
globals().update(FUSION_CASES)


def test_config_without_modalities_is_refused():
    """Why the ConfigTester above runs with `can_init_without_params=False`."""
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises(StrictDataclassClassValidationError, match="needs at least one of `vision_config`"):
        mm.MMFNetConfig()


def test_one_forward_signature():
    """The inputs are written once: every forward and `get_modality_embeddings` list them in the same order."""
    for function in (
        mm.MMFNetModel.forward,
        mm.MMFNetForSequenceClassification.forward,
        mm.MMFNetModel.get_modality_embeddings,
    ):
        names = list(inspect.signature(function).parameters)
        assert names[1 : 1 + len(mm.MMFNET_INPUT_NAMES)] == list(mm.MMFNET_INPUT_NAMES), function.__qualname__
    head = list(inspect.signature(mm.MMFNetForSequenceClassification.forward).parameters)
    assert head[1 + len(mm.MMFNET_INPUT_NAMES) :] == ["labels", "kwargs"]
    assert mm.MMFNetModel.main_input_name == mm.MMFNET_INPUT_NAMES[0] == "pixel_values"
    assert mm.MMFNetForClassification is mm.MMFNetForSequenceClassification
