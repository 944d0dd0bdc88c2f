"""MMFNet: fuse pretrained vision, text and audio encoders into one HuggingFace-native model.

Importing the package registers its classes with the transformers Auto classes and marks them for
`register_for_auto_class`, so a saved checkpoint carries the code to load it anywhere with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_mmfnet import FUSION_TYPES, MODALITIES, POOLING_TYPES, MMFNetConfig, MMFNetConvConfig
from .modeling_mmfnet import (
    MMFNetClassifierOutput,
    MMFNetForClassification,
    MMFNetModel,
    MMFNetModelOutput,
    MMFNetPreTrainedModel,
)
from .modeling_mmfnet_conv import MMFNetConvModel

AutoConfig.register(MMFNetConfig.model_type, MMFNetConfig, exist_ok=True)
AutoConfig.register(MMFNetConvConfig.model_type, MMFNetConvConfig, exist_ok=True)
AutoModel.register(MMFNetConfig, MMFNetModel, exist_ok=True)
AutoModel.register(MMFNetConvConfig, MMFNetConvModel, exist_ok=True)
AutoModelForSequenceClassification.register(MMFNetConfig, MMFNetForClassification, exist_ok=True)

MMFNetConfig.register_for_auto_class()
MMFNetConvConfig.register_for_auto_class()
MMFNetModel.register_for_auto_class("AutoModel")
MMFNetConvModel.register_for_auto_class("AutoModel")
MMFNetForClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "FUSION_TYPES",
    "MODALITIES",
    "POOLING_TYPES",
    "MMFNetClassifierOutput",
    "MMFNetConfig",
    "MMFNetConvConfig",
    "MMFNetConvModel",
    "MMFNetForClassification",
    "MMFNetModel",
    "MMFNetModelOutput",
    "MMFNetPreTrainedModel",
]
