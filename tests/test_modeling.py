"""MMFNetModel / MMFNetForSequenceClassification: fusion catalogue, missing modalities, gradients, training."""

import itertools
import math

import pytest
import torch
from conftest import random_inputs, three_modality_config, tiny_bert, tiny_conv, tiny_vit, tiny_wav2vec2

import modeling_mmfnet as mm

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(mm.MODALITIES, r)]


def count_calls(model: mm.MMFNetModel) -> dict[str, list[int]]:
    """Record the batch size of every call of each encoder."""
    calls: dict[str, list[int]] = {m: [] for m in mm.MODALITIES}
    for modality in model.config.modalities:
        encoder = getattr(model, f"{modality}_model")
        encoder.register_forward_hook(
            lambda module, args, kwargs, output, m=modality: calls[m].append(output.last_hidden_state.shape[0]),
            with_kwargs=True,
        )
    return calls


@pytest.fixture(scope="module")
def models() -> dict[str, mm.MMFNetForClassification]:
    torch.manual_seed(0)
    return {ft: mm.MMFNetForClassification(three_modality_config(ft)).eval() for ft in mm.FUSION_TYPES}


@pytest.mark.parametrize("fusion_type", mm.FUSION_TYPES)
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
def test_fusion_over_modality_subsets(models, fusion_type, subset):
    """Any subset of modalities works; absent ones never run their encoder and cannot change the output."""
    model = models[fusion_type]
    calls = count_calls(model.mmfnet)
    inputs = random_inputs(4, modalities=subset)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (4, 5) and torch.isfinite(out.logits).all()
    assert out.fused_embeds.shape == (4, 32)
    expected_mask = torch.tensor([m in subset for m in mm.MODALITIES]).expand(4, -1)
    assert torch.equal(out.modality_mask, expected_mask)
    for modality in mm.MODALITIES:
        assert calls[modality] == ([4] if modality in subset else []), modality
    # the fused embedding of a subset equals that of all three modalities with the others masked out per sample
    full = random_inputs(4, modalities=mm.MODALITIES)
    for modality in subset:
        for key in mm.ENCODER_INPUT_NAMES[modality]:
            if key in inputs:
                full[key] = inputs[key]
    with torch.no_grad():
        masked = model(**full, modality_mask=expected_mask.clone())
    torch.testing.assert_close(masked.logits, out.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fusion_type", mm.FUSION_TYPES)
def test_per_sample_missing_is_ignored_not_zeros(models, fusion_type):
    """A sample's absent modality is not encoded, and its content cannot leak into the result."""
    model = models[fusion_type]
    calls = count_calls(model.mmfnet)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    inputs = random_inputs(4, seed=1)
    with torch.no_grad():
        out = model(**inputs, modality_mask=mask)
        # change every absent entry: nothing may move
        perturbed = random_inputs(4, seed=2)
        for index, modality in enumerate(mm.MODALITIES):
            for key in (k for k in mm.ENCODER_INPUT_NAMES[modality] if k in inputs):
                keep = mask[:, index].view(-1, *[1] * (inputs[key].dim() - 1))
                perturbed[key] = torch.where(keep, inputs[key], perturbed[key])
        again = model(**perturbed, modality_mask=mask)
        # each sample alone, given only its present modalities, gives the same logits
        for row in range(4):
            present = [m for i, m in enumerate(mm.MODALITIES) if mask[row, i]]
            single = {
                k: v[row : row + 1] for k, v in inputs.items() if any(k in mm.ENCODER_INPUT_NAMES[m] for m in present)
            }
            alone = model(**single)
            torch.testing.assert_close(alone.logits, out.logits[row : row + 1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again.logits, out.logits)
    assert calls["vision"][0] == 2 and calls["text"][0] == 2 and calls["audio"][0] == 3


def test_precomputed_embeddings_match_encoders(models):
    model = models["transformer"]
    inputs = random_inputs(3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        embeds = model.get_modality_embeddings(**inputs, modality_mask=mask)
        assert set(embeds) == {"vision_embeds", "text_embeds", "audio_embeds"}
        assert embeds["vision_embeds"].shape == (3, 32)
        assert torch.all(embeds["text_embeds"][1] == 0)
        from_embeds = model(**embeds, modality_mask=mask)
        from_inputs = model(**inputs, modality_mask=mask)
        no_audio = mask.clone()
        no_audio[:, 2] = False
        mixed = model(
            pixel_values=inputs["pixel_values"], text_embeds=embeds["text_embeds"], modality_mask=no_audio * 1
        )
    torch.testing.assert_close(from_embeds.logits, from_inputs.logits)
    assert mixed.logits.shape == (3, 5)


def test_encoder_families_and_pooling(encoder_dirs):
    """DistilBERT, AST, Whisper encoder and the seed CNN (no pooler) all pool; text mean pooling ignores padding."""
    torch.manual_seed(0)
    cases = [
        ("distilbert", "ast", {"input_values": torch.randn(2, 32, 16)}),
        ("bert", "whisper", {"input_features": torch.randn(2, 16, 40)}),
        ("bert", "conv", {"input_features": torch.randn(2, 16, 40)}),
    ]
    for text, audio, audio_inputs in cases:
        model = mm.MMFNetForClassification.from_encoders_pretrained(
            vision=encoder_dirs["conv"], text=encoder_dirs[text], audio=encoder_dirs[audio], num_labels=3,
            fusion_dim=16, fusion_hidden_dim=32, fusion_type="attention",
        )  # fmt: skip
        ids = torch.tensor([[7, 8, 9, 0, 0], [10, 11, 12, 13, 14]])
        mask = (ids != 0).long()
        out = model(pixel_values=torch.randn(2, 1, 8, 8), input_ids=ids, attention_mask=mask, **audio_inputs)
        assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all(), (text, audio)
        shorter = model(
            pixel_values=torch.randn(1, 1, 8, 8), input_ids=ids[:1, :3], **audio_inputs_first(audio_inputs)
        )
        assert shorter.logits.shape == (1, 3)
        with torch.no_grad():
            padded = model.get_modality_embeddings(input_ids=ids[:1], attention_mask=mask[:1])["text_embeds"]
            unpadded = model.get_modality_embeddings(input_ids=ids[:1, :3])["text_embeds"]
        torch.testing.assert_close(padded, unpadded, rtol=1e-4, atol=1e-5)


def audio_inputs_first(audio_inputs: dict) -> dict:
    return {k: v[:1] for k, v in audio_inputs.items()}


def test_conv_backbone_audio_mask_and_pooling_modes():
    torch.manual_seed(0)
    conv = mm.MMFNetConvModel(tiny_conv()).eval()
    features = torch.randn(1, 16, 40)
    mask = torch.zeros(1, 48, dtype=torch.long)
    mask[:, :40] = 1
    padded = torch.cat([features, torch.full((1, 16, 8), 5.0)], dim=-1)
    with torch.no_grad():
        short = conv(input_features=features)
        long = conv(input_features=padded, attention_mask=mask)
    assert long.token_mask.shape == long.last_hidden_state.shape[:2]
    assert long.token_mask.sum() < long.token_mask.numel()
    assert short.last_hidden_state.shape[-1] == 16
    for pooling in mm.POOLING_TYPES:
        config = mm.MMFNetConfig(audio_config=tiny_conv(), audio_pooling=pooling, fusion_dim=8, num_labels=2)
        model = mm.MMFNetForClassification(config).eval()
        out = model(input_features=features)
        assert torch.isfinite(out.logits).all(), pooling


def test_spectrograms_are_normalised_per_utterance_over_valid_frames():
    from modeling_mmfnet.modeling_mmfnet_conv import normalize_per_utterance

    torch.manual_seed(0)
    features = torch.randn(2, 8, 30) * 3 + 2
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, 20:] = 0
    normalised = normalize_per_utterance(features, mask)
    valid = normalised[1, :, :20]
    assert torch.allclose(valid.mean(-1), torch.zeros(8), atol=1e-5)
    assert torch.allclose(valid.var(-1, correction=0), torch.ones(8), atol=1e-3)
    assert (normalised[1, :, 20:] == 0).all()  # padding carries no signal
    assert torch.allclose(normalised[1, :, :20], normalize_per_utterance(features[1:, :, :20])[0], atol=1e-5)

    # a stationary background per mel bin (a constant log-mel offset, e.g. noise) does not change the encoding
    conv = mm.MMFNetConvModel(tiny_conv()).eval()
    offset = torch.randn(1, 16, 1) * 4
    spectrogram = torch.randn(1, 16, 40)
    with torch.no_grad():
        clean = conv(input_features=spectrogram).pooler_output
        shifted = conv(input_features=spectrogram + offset).pooler_output
        raw = mm.MMFNetConvModel(tiny_conv(spectrogram_normalization="none")).eval()
        raw.load_state_dict(conv.state_dict())
        raw_shifted = raw(input_features=spectrogram + offset).pooler_output
    assert torch.allclose(clean, shifted, atol=1e-4)
    assert not torch.allclose(raw(input_features=spectrogram).pooler_output, raw_shifted, atol=1e-2)
    with pytest.raises(ValueError, match="spectrogram_normalization"):
        mm.MMFNetConvConfig(spectrogram_normalization="global")


@pytest.mark.parametrize("fusion_type", mm.FUSION_TYPES)
def test_gradients_reach_every_trainable_parameter(fusion_type):
    torch.manual_seed(0)
    config = three_modality_config(
        fusion_type, aux_unimodal_weight=0.5, contrastive_weight=0.1, text_pooling="attention"
    )
    model = mm.MMFNetForClassification(config).train()
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    out = model(**random_inputs(4), modality_mask=mask, labels=torch.tensor([0, 1, 2, 3]))
    out.loss.backward()
    # the pooler of BERT/ViT is not used by mean pooling: it is the only part allowed to stay without gradient
    missing = [n for n, p in model.named_parameters() if p.grad is None and ".pooler." not in n]
    assert not missing, missing
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not torch.any(p.grad != 0)]
    # mask-aware fusions ignore absent modalities outright, so the missing embedding gets exactly zero gradient
    assert zero == ([] if fusion_type in ("concat", "gated") else ["mmfnet.missing_embeddings.weight"]), zero


def test_frozen_encoders_get_no_gradients_and_stay_in_eval():
    torch.manual_seed(0)
    model = mm.MMFNetForClassification(three_modality_config("gated", freeze_vision=True, freeze_audio=True)).train()
    assert not model.mmfnet.vision_model.training and model.mmfnet.text_model.training
    out = model(**random_inputs(3), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    for name, param in model.named_parameters():
        if name.startswith(("mmfnet.vision_model.", "mmfnet.audio_model.")):
            assert not param.requires_grad and param.grad is None, name
    assert model.mmfnet.text_model.embeddings.word_embeddings.weight.grad is not None
    assert model.mmfnet.vision_projection.dense.weight.grad is not None


def test_activation_checkpointing_same_loss_and_gradients():
    torch.manual_seed(0)
    model = mm.MMFNetForClassification(three_modality_config("transformer")).train()
    inputs = dict(random_inputs(3), labels=torch.tensor([0, 1, 2]))

    def loss_and_grads():
        torch.manual_seed(1)  # same encoder dropout masks in both runs
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads()
    model.activation_checkpointing_enable()
    assert model.mmfnet.text_model.encoder.layer[0].gradient_checkpointing
    assert model.mmfnet.fusion.layers[0].gradient_checkpointing
    ckpt_loss, ckpt_grads = loss_and_grads()
    torch.testing.assert_close(ckpt_loss, loss)
    assert grads.keys() == ckpt_grads.keys()
    for name in grads:
        torch.testing.assert_close(ckpt_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("fusion_type", ["concat", "gated", "tensor", "low_rank", "transformer"])
def test_training_learns_a_toy_task(fusion_type):
    """The label is (vision cue + audio cue) mod 2: only a model that fuses both modalities can fit it."""
    torch.manual_seed(0)
    config = mm.MMFNetConfig(
        vision_config=tiny_conv(), audio_config=tiny_conv(), fusion_type=fusion_type, fusion_dim=16,
        fusion_hidden_dim=32, tensor_fusion_dim=4, num_labels=2, dropout=0.0,
    )  # fmt: skip
    model = mm.MMFNetForClassification(config).train()
    a, b = torch.randint(0, 2, (64,)), torch.randint(0, 2, (64,))
    images = torch.randn(64, 1, 8, 8) * 0.1 + a.view(-1, 1, 1, 1).float()
    spectra = torch.randn(64, 16, 12) * 0.1 + b.view(-1, 1, 1).float()
    labels = (a + b) % 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        loss = model(pixel_values=images, input_features=spectra, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::20]
    accuracy = (model.eval()(pixel_values=images, input_features=spectra).logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.95


def test_problem_types():
    torch.manual_seed(0)
    inputs = random_inputs(4)
    multi = mm.MMFNetForSequenceClassification(three_modality_config(problem_type="multi_label_classification"))
    targets = torch.randint(0, 2, (4, 5)).float()
    out = multi.eval()(**inputs, labels=targets)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(out.loss, bce(out.logits, targets))
    regression = mm.MMFNetForSequenceClassification(three_modality_config(num_labels=1)).eval()
    targets = torch.randn(4)
    out = regression(**inputs, labels=targets)
    assert out.logits.shape == (4, 1)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), targets))
    single = mm.MMFNetForSequenceClassification(three_modality_config()).eval()
    labels = torch.tensor([0, -100, 2, 3])
    logits = single(**inputs).logits
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    torch.testing.assert_close(single(**inputs, labels=labels).loss, expected)


def test_problem_type_is_inferred_per_call_and_never_stored():
    """Float labels once (multi-label) must not turn the next call's integer labels into multi-label targets."""
    torch.manual_seed(0)
    inputs = random_inputs(4)
    model = mm.MMFNetForSequenceClassification(three_modality_config()).eval()
    assert model.config.problem_type is None
    multi_hot = torch.zeros(4, 5).scatter_(1, torch.tensor([[1], [0], [4], [2]]), 1.0)
    out = model(**inputs, labels=multi_hot)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(out.loss, bce(out.logits, multi_hot))
    assert model.config.problem_type is None
    labels = torch.tensor([1, 0, 4, 2])
    out = model(**inputs, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert model.config.problem_type is None


def test_contrastive_logit_scale_is_clamped():
    torch.manual_seed(0)
    model = mm.MMFNetForClassification(three_modality_config(contrastive_weight=1.0)).eval()
    assert math.isclose(model.logit_scale.item(), 2.6592, rel_tol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(20.0)  # exp(20) = 4.9e8 unclamped
    out = model(**random_inputs(4))
    loss = model._contrastive_loss(out.modality_embeds, out.modality_mask)
    normed = torch.nn.functional.normalize(out.modality_embeds, dim=-1)
    targets = torch.arange(4)
    expected = []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        logits = 100.0 * normed[:, i] @ normed[:, j].T
        ce = torch.nn.functional.cross_entropy
        expected.append((ce(logits, targets) + ce(logits.T, targets)) / 2)
    torch.testing.assert_close(loss, torch.stack(expected).mean())


def test_modality_dropout_keeps_one_modality():
    torch.manual_seed(0)
    model = mm.MMFNetModel(three_modality_config(modality_dropout=0.9)).train()
    out = model(**random_inputs(64))
    assert out.modality_mask.any(1).all()
    assert (~out.modality_mask).sum() > 64  # most entries were dropped
    assert model.eval()(**random_inputs(8)).modality_mask.all()


def test_new_parameters_are_initialised_when_built_from_encoders(encoder_dirs):
    """`from_encoders_pretrained` keeps the encoders' weights and initialises every new parameter sensibly."""
    from transformers import AutoModel

    model = mm.MMFNetForClassification.from_encoders_pretrained(
        vision=encoder_dirs["vit"], text=encoder_dirs["bert"], audio=encoder_dirs["wav2vec2"],
        fusion_type="transformer", num_labels=4, contrastive_weight=0.1, aux_unimodal_weight=0.1,
    )  # fmt: skip
    assert not model.training
    for modality, family in (("vision", "vit"), ("text", "bert"), ("audio", "wav2vec2")):
        saved = AutoModel.from_pretrained(encoder_dirs[family]).state_dict()
        state = getattr(model.mmfnet, f"{modality}_model").state_dict()
        # pooling is "mean": the encoder's own pooler is dropped (it would never get a gradient)
        unused_pooler = {key for key in saved if key.startswith("pooler.")}
        assert bool(unused_pooler) == (family != "wav2vec2"), family
        assert saved.keys() - unused_pooler == state.keys(), family
        for key in state:
            torch.testing.assert_close(state[key], saved[key], msg=f"{family}: {key}")
    encoder_prefixes = ("mmfnet.vision_model.", "mmfnet.text_model.", "mmfnet.audio_model.")
    for name, param in model.named_parameters():
        if name.startswith(encoder_prefixes):
            continue
        assert torch.isfinite(param).all(), name
        assert param.abs().max() < 10, (name, param.abs().max())
    assert model.mmfnet.missing_embeddings.weight.std() > 0.5
    assert math.isclose(model.logit_scale.item(), 2.6592, rel_tol=1e-5)


def test_sdpa_and_eager_attention_agree():
    torch.manual_seed(0)
    config = three_modality_config("attention")
    sdpa = mm.MMFNetForClassification(config).eval()
    eager = mm.MMFNetForClassification(three_modality_config("attention")).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert eager.mmfnet.text_model.config._attn_implementation == "eager"
    assert sdpa.mmfnet.text_model.config._attn_implementation == "sdpa"
    inputs = random_inputs(2)
    torch.testing.assert_close(sdpa(**inputs).logits, eager(**inputs).logits, rtol=1e-4, atol=1e-5)


def test_encoders_are_direct_children_and_no_split_modules_collected():
    model = mm.MMFNetModel(mm.MMFNetConfig(vision_config=tiny_vit(), text_config=tiny_bert()))
    children = dict(model.named_children())
    assert {"vision_model", "text_model"} <= set(children) and model.audio_model is None
    assert {"ViTLayer", "BertLayer", "MMFNetFusionTransformerLayer"} <= set(model._no_split_modules)
    assert mm.MMFNetModel(mm.MMFNetConfig(audio_config=tiny_wav2vec2())).config.modalities == ("audio",)


def test_unused_encoder_poolers_are_not_built_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    mean = mm.MMFNetModel(three_modality_config())
    assert mean.text_model.pooler is None and mean.vision_model.pooler is None
    assert not any(".pooler." in name for name in mean.state_dict())
    model = mm.MMFNetForSequenceClassification(three_modality_config(text_pooling="pooler")).train()
    assert isinstance(model.mmfnet.text_model.pooler, torch.nn.Module) and model.mmfnet.vision_model.pooler is None
    model(**random_inputs(2), labels=torch.tensor([0, 1])).loss.backward()
    # DDP with find_unused_parameters=False (the Trainer's choice under activation checkpointing) needs this
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_pooler_weights_of_a_checkpoint_load_as_expected_leftovers(tmp_path, encoder_dirs):
    """A checkpoint's encoder pooler, unused by the loading config, is dropped without a warning or a reload gap."""
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    loading_logger = logging.get_logger("transformers.modeling_utils")
    torch.manual_seed(0)
    saved = mm.MMFNetForSequenceClassification(three_modality_config(text_pooling="pooler", vision_pooling="pooler"))
    saved.save_pretrained(tmp_path / "with_pooler")
    with CaptureLogger(loading_logger) as captured:
        model, info = mm.MMFNetForSequenceClassification.from_pretrained(
            tmp_path / "with_pooler", text_pooling="mean", vision_pooling="mean", output_loading_info=True
        )
    assert "LOAD REPORT" not in captured.out and not info["unexpected_keys"] and not info["missing_keys"]
    assert model.mmfnet.text_model.pooler is None and model.mmfnet.vision_model.pooler is None
    reference = saved.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)
    # a pretrained encoder's own pooler (BERT and ViT checkpoints carry one): loaded, then dropped, silently
    with CaptureLogger(loading_logger) as captured:
        built = mm.MMFNetModel.from_encoders_pretrained(vision=encoder_dirs["vit"], text=encoder_dirs["bert"])
    assert "LOAD REPORT" not in captured.out and built.text_model.pooler is None
    # a real gap is refused: the pooler the config asks for is missing from the saved model above
    model.save_pretrained(tmp_path / "without_pooler")
    with pytest.raises(OSError, match=r"lacks 2 tensor\(s\).*text_model\.pooler\.dense"):
        mm.MMFNetForSequenceClassification.from_pretrained(tmp_path / "without_pooler", text_pooling="pooler")


def test_set_input_embeddings_keeps_the_text_vocabulary_in_step():
    torch.manual_seed(0)
    model = mm.MMFNetForSequenceClassification(three_modality_config()).eval()
    bigger = torch.nn.Embedding(40, 32)
    model.set_input_embeddings(bigger)
    assert model.get_input_embeddings() is bigger and model.mmfnet.text_model.embeddings.word_embeddings is bigger
    assert model.config.text_config.vocab_size == 40
    inputs = random_inputs(2)
    inputs["input_ids"][0, 1] = 39  # a token only the new embeddings know
    assert model(**inputs).logits.shape == (2, 5)
    resized = model.resize_token_embeddings(48)
    assert resized.num_embeddings == 48 and model.config.text_config.vocab_size == 48
    without_text = mm.MMFNetModel(mm.MMFNetConfig(vision_config=tiny_vit()))
    assert without_text.get_input_embeddings() is None
    with pytest.raises(ValueError, match="has no text encoder"):
        without_text.set_input_embeddings(bigger)
