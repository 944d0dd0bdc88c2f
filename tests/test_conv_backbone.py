"""The conv backbone's options: normalisation, widths and depth, global pooling; the seed 3-block CNN by default."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import modeling_mmfnet as mm


def rgb_config(**kwargs) -> mm.MMFNetConvConfig:
    return mm.MMFNetConvConfig(num_channels=3, hidden_sizes=[8, 16, 16, 32], **kwargs)


@pytest.mark.parametrize("normalization", ["group", "batch", "none"])
@pytest.mark.parametrize("global_pooling", ["none", "average", "max"])
def test_shapes_of_every_option(normalization: str, global_pooling: str) -> None:
    torch.manual_seed(0)
    config = rgb_config(normalization=normalization, global_pooling=global_pooling, convs_per_block=2)
    model = mm.MMFNetConvModel(config).eval()
    out = model(pixel_values=torch.randn(3, 3, 32, 32), output_hidden_states=True)
    tokens = 1 if global_pooling != "none" else (32 // 2**4) ** 2
    assert out.last_hidden_state.shape == (3, tokens, 32) and out.pooler_output.shape == (3, 32)
    assert [h.shape[1] for h in out.hidden_states] == [16 * 16, 8 * 8, 4 * 4, 2 * 2]  # one per block (4 deep)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8  # depth = len(hidden_sizes) x convs_per_block
    norm_type = {"group": torch.nn.GroupNorm, "batch": torch.nn.BatchNorm2d, "none": None}[normalization]
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
    assert len(norms) == (0 if norm_type is None else 8) and all(isinstance(n, norm_type) for n in norms)


def test_global_pooling_reduces_the_token_map_over_valid_frames() -> None:
    torch.manual_seed(0)
    tokens_model = mm.MMFNetConvModel(mm.MMFNetConvConfig(num_channels=1, hidden_sizes=[8, 16])).eval()
    features, mask = torch.randn(2, 8, 40), torch.ones(2, 40, dtype=torch.long)
    mask[1, 24:] = 0
    reference = tokens_model(input_features=features, attention_mask=mask)
    valid = reference.token_mask.unsqueeze(-1)
    for pooling in ("average", "max"):
        pooled_model = mm.MMFNetConvModel(
            mm.MMFNetConvConfig(num_channels=1, hidden_sizes=[8, 16], global_pooling=pooling)
        ).eval()
        pooled_model.load_state_dict(tokens_model.state_dict())  # pooling adds no parameter
        out = pooled_model(input_features=features, attention_mask=mask)
        if pooling == "average":
            expected = (reference.last_hidden_state * valid).sum(1) / valid.sum(1)
        else:
            expected = reference.last_hidden_state.masked_fill(~valid, -1e9).amax(1)
        torch.testing.assert_close(out.last_hidden_state[:, 0], expected)
        torch.testing.assert_close(out.pooler_output, expected)
        assert out.token_mask.shape == (2, 1) and out.token_mask.all()


def test_batch_norm_statistics_round_trip_through_from_pretrained(tmp_path) -> None:
    torch.manual_seed(0)
    config = mm.MMFNetConfig(vision_config=rgb_config(normalization="batch", global_pooling="average"),
                             fusion_dim=16, num_labels=3)  # fmt: skip
    model = mm.MMFNetForClassification(config).train()
    model(pixel_values=torch.randn(8, 3, 16, 16) * 2 + 1)  # updates the running statistics
    assert model.mmfnet.vision_model.blocks[0].norm.num_batches_tracked.item() == 1
    model.save_pretrained(tmp_path)
    reloaded = mm.MMFNetForClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_config.normalization == "batch"
    inputs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=inputs).logits, model.eval()(pixel_values=inputs).logits)
        # evaluation uses the running statistics: a row's output does not depend on the rest of its batch
        torch.testing.assert_close(reloaded(pixel_values=inputs[:1]).logits, reloaded(pixel_values=inputs).logits[:1])


@pytest.mark.parametrize("normalization", ["batch", "group"])
def test_a_short_trainer_run_drives_the_loss_down(tmp_path, normalization: str) -> None:
    """A deeper RGB backbone (4 blocks x 2 convs, global average pooling) learns colour-and-position classes."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 4
    images = 0.5 * torch.randn(96, 3, 16, 16, generator=generator)
    for i, label in enumerate(labels.tolist()):  # class = (channel, half) of a bright square
        images[i, label % 3, 8 * (label // 2) : 8 * (label // 2) + 8, :8] += 1.5
    train = Dataset.from_dict({"pixel_values": images.numpy(), "labels": labels.numpy()}).with_format("torch")
    config = mm.MMFNetConfig(
        vision_config=rgb_config(normalization=normalization, convs_per_block=2, global_pooling="average"),
        fusion_dim=16, fusion_hidden_dim=32, num_labels=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = mm.MMFNetForClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=8, per_device_train_batch_size=16,
                             learning_rate=3e-3, logging_steps=6, save_strategy="no", report_to="none",
                             disable_tqdm=True, use_cpu=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < 0.3 * losses[0], losses
    model.eval()
    with torch.no_grad():
        accuracy = (model(pixel_values=images).logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.9


def test_backbone_options_are_checked() -> None:
    for field, value in (("normalization", "layer"), ("global_pooling", "mean"), ("convs_per_block", 0)):
        with pytest.raises(ValueError, match=field):
            mm.MMFNetConvConfig(**{field: value})
    default = mm.MMFNetConvConfig()  # the seed design's CNN: 3 blocks of one conv, GroupNorm, token map
    assert (default.hidden_sizes, default.normalization, default.convs_per_block, default.global_pooling) == (
        [32, 64, 128], "group", 1, "none")  # fmt: skip
