"""Modality balance (`modality_balance="ogm"` / `"ogm_ge"`): the gradient of each modality branch is scaled by the
OGM coefficient computed from the auxiliary unimodal heads; the fusion and heads are left alone."""

import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

import modeling_mmfnet as mm


def two_modality_model(balance: str, alpha: float = 0.5) -> mm.MMFNetForClassification:
    config = mm.MMFNetConfig(
        vision_config=mm.MMFNetConvConfig(num_channels=1, hidden_sizes=[8, 16]),
        audio_config=mm.MMFNetConvConfig(num_channels=1, hidden_sizes=[8, 16]),
        fusion_dim=16,
        fusion_hidden_dim=32,
        dropout=0.0,
        num_labels=4,
        aux_unimodal_weight=1.0,
        modality_balance=balance,
        modality_balance_alpha=alpha,
    )
    torch.manual_seed(0)
    return mm.MMFNetForClassification(config).train()


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(8) % 4
    pixels = torch.randn(8, 1, 8, 8, generator=generator)
    pixels[torch.arange(8), 0, labels, labels] += 6.0  # vision carries the label; audio is noise
    mask = torch.ones(8, 2, dtype=torch.bool)
    mask[7, 1] = False  # one sample without audio: excluded from the audio score and not modulated
    return dict(pixel_values=pixels, input_features=torch.randn(8, 8, 12, generator=generator), labels=labels,
                modality_mask=mask)  # fmt: skip


def gradients(model: mm.MMFNetForClassification) -> dict[str, torch.Tensor]:
    model.zero_grad()
    out = model(**batch())
    out.loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, out


def expected_coefficients(unimodal_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, alpha: float):
    """OGM's k_m written out by hand, per modality, from the paper's definition (two modalities)."""
    scores = []
    for m in range(2):
        rows = mask[:, m]
        probs = unimodal_logits[rows, m].softmax(-1)[torch.arange(int(rows.sum())), labels[rows]]
        scores.append(probs.mean().item())
    ratios = [scores[0] / scores[1], scores[1] / scores[0]]
    return [1 - math.tanh(alpha * r) if r > 1 else 1.0 for r in ratios]


def test_ogm_scales_each_branch_gradient_by_its_coefficient_and_leaves_fusion_alone():
    plain, plain_out = gradients(two_modality_model("none"))
    for alpha in (0.5, 2.0):
        modulated, out = gradients(two_modality_model("ogm", alpha))
        assert torch.equal(out.unimodal_logits, plain_out.unimodal_logits)  # same weights, same forward
        k = expected_coefficients(out.unimodal_logits.detach(), batch()["labels"], batch()["modality_mask"], alpha)
        assert min(k) < 0.9 and max(k) == 1.0  # one modality dominates the batch: the test is not vacuous
        torch.testing.assert_close(
            mm.ogm_coefficients(out.unimodal_logits, batch()["labels"], batch()["modality_mask"], alpha),
            torch.tensor(k),
        )
        for name, grad in plain.items():
            if name.startswith(("mmfnet.vision_model.", "mmfnet.vision_projection.")):
                torch.testing.assert_close(modulated[name], k[0] * grad, msg=name)
            elif name.startswith(("mmfnet.audio_model.", "mmfnet.audio_projection.")):
                torch.testing.assert_close(modulated[name], k[1] * grad, msg=name)
            else:  # fusion, heads, missing embeddings: the plain gradient
                torch.testing.assert_close(modulated[name], grad, msg=name)


def test_ogm_ge_adds_noise_to_every_branch_only_and_evaluation_is_untouched():
    plain, _ = gradients(two_modality_model("none"))
    noisy, out = gradients(two_modality_model("ogm_ge"))
    k = expected_coefficients(out.unimodal_logits.detach(), batch()["labels"], batch()["modality_mask"], 0.5)
    for name, grad in plain.items():
        if name.startswith(("mmfnet.vision_model.", "mmfnet.audio_model.")):
            scaled = (k[0] if ".vision_" in name else k[1]) * grad
            assert not torch.allclose(noisy[name], scaled), name  # noise reached the branch
        elif not name.startswith(("mmfnet.vision_projection.", "mmfnet.audio_projection.")):
            torch.testing.assert_close(noisy[name], grad, msg=name)
    model = two_modality_model("ogm_ge").eval()  # evaluation: no hook, same outputs as without balance
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).logits, two_modality_model("none").eval()(**batch()).logits)


def test_modality_balance_config_is_checked():
    """Bad choices name the field (strict-dataclass errors, as for every typed field of the config)."""
    conv = mm.MMFNetConvConfig(num_channels=1, hidden_sizes=[4])
    with pytest.raises(StrictDataclassError, match="modality_balance"):
        mm.MMFNetConfig(vision_config=conv, audio_config=conv, modality_balance="ogm-ge", aux_unimodal_weight=1.0)
    with pytest.raises(StrictDataclassError) as error:
        mm.MMFNetConfig(vision_config=conv, audio_config=conv, modality_balance="ogm")
    assert "aux_unimodal_weight" in str(error.value.__cause__)
    with pytest.raises(StrictDataclassError) as error:
        mm.MMFNetConfig(vision_config=conv, modality_balance="ogm", aux_unimodal_weight=1.0)
    assert "two modalities" in str(error.value.__cause__)
    with pytest.raises(StrictDataclassError) as error:
        mm.MMFNetConfig(vision_config=conv, audio_config=conv, modality_balance="ogm", aux_unimodal_weight=1.0,
                        modality_balance_alpha=-1.0)  # fmt: skip
    assert "modality_balance_alpha" in str(error.value.__cause__)
