"""`torch.export` per present-modality subset, with a dynamic batch dimension: the exported program computes what
the eager model computes, for every fusion type, at batch sizes other than the one it was traced with."""

import itertools
from collections.abc import Callable

import pytest
import torch
from conftest import tiny_bert, tiny_conv
from torch.export import Dim

import modeling_mmfnet as mm

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(mm.MODALITIES, r)]


def make_inputs(batch_size: int, vocab_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.randn(batch_size, 1, 16, 16, generator=generator),
        "input_ids": torch.randint(5, vocab_size, (batch_size, 7), generator=generator),
        "attention_mask": torch.ones(batch_size, 7, dtype=torch.long),
        "input_features": torch.randn(batch_size, 32, 50, generator=generator),
    }


Inputs = dict[str, torch.Tensor]


def model_and_inputs(
    fusion_type: str, subset: tuple[str, ...]
) -> tuple[mm.MMFNetForClassification, list[str], Inputs, Callable[[int], Inputs]]:
    """A 3-modality model, the input names of `subset`, a batch-4 example to trace and a maker for other batches."""
    torch.manual_seed(0)
    config = mm.MMFNetConfig(
        vision_config=tiny_conv(), text_config=tiny_bert(), audio_config=tiny_conv(), fusion_type=fusion_type,
        fusion_dim=16, num_labels=3,
    )  # fmt: skip
    model = mm.MMFNetForClassification(config).eval()
    generator = torch.Generator().manual_seed(1)
    given = make_inputs(1, config.text_config.vocab_size, generator)
    names = [name for modality in subset for name in mm.ENCODER_INPUT_NAMES[modality] if name in given]

    def inputs(batch_size: int) -> Inputs:
        every = make_inputs(batch_size, config.text_config.vocab_size, generator)
        return {name: every[name] for name in names}

    return model, names, inputs(4), inputs


def export_and_compare(fusion_type: str, subset: tuple[str, ...]) -> None:
    model, names, traced, make = model_and_inputs(fusion_type, subset)
    batch = Dim("batch", min=1, max=512)
    program = torch.export.export(model, (), traced, dynamic_shapes={k: {0: batch} for k in traced}, strict=False)
    for batch_size in (4, 3, 1):
        inputs = make(batch_size)
        with torch.no_grad():
            expected = model(**inputs).logits
        exported = program.module()(**inputs).logits
        assert exported.shape == (batch_size, 3)
        torch.testing.assert_close(exported, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_export_every_modality_subset(subset):
    export_and_compare("transformer", subset)


@pytest.mark.parametrize("fusion_type", [f for f in mm.FUSION_TYPES if f != "transformer"])
def test_export_every_fusion_type(fusion_type):
    export_and_compare(fusion_type, mm.MODALITIES)


@pytest.mark.parametrize("subset", [("text",), mm.MODALITIES], ids=["text", "vision+text+audio"])
def test_onnx_export_runs_in_onnxruntime(subset, tmp_path):
    """ONNX through `torch.onnx.export(dynamo=True)`; onnxruntime at other batch sizes matches the eager model."""
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    model, names, traced, make = model_and_inputs("transformer", subset)
    batch = Dim("batch", min=1, max=512)
    path = tmp_path / "mmfnet.onnx"
    torch.onnx.export(model, (), str(path), kwargs=traced, dynamic_shapes={k: {0: batch} for k in traced},
                      input_names=names, output_names=["logits"], dynamo=True)  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    for batch_size in (3, 1):
        inputs = make(batch_size)
        (logits, *_) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        with torch.no_grad():
            expected = model(**inputs).logits
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-5)
