"""MMFNet: fuse pretrained vision, text and audio encoders into one HuggingFace-native model.

Importing the package registers its classes with the transformers Auto classes and marks them for
`register_for_auto_class`, so a saved checkpoint carries the code to load it anywhere with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .balance_mmfnet import ogm_coefficients
from .caching_mmfnet import MMFNetEmbeddingCollator, cache_modality_embeddings
from .card_mmfnet import generate_model_card, install_hooks, update_model_card, write_model_card
from .configuration_mmfnet import (
    FUSION_TYPES,
    MODALITIES,
    MODALITY_BALANCES,
    POOLING_TYPES,
    MMFNetConfig,
    MMFNetConvConfig,
)
from .modeling_mmfnet import (
    EMBEDS_INPUT_NAMES,
    ENCODER_INPUT_NAMES,
    MMFNET_INPUT_NAMES,
    MMFNetClassifierOutput,
    MMFNetForClassification,
    MMFNetForSequenceClassification,
    MMFNetModel,
    MMFNetModelOutput,
    MMFNetPreTrainedModel,
)
from .modeling_mmfnet_conv import MMFNetConvModel
from .pipeline_mmfnet import TASK as PIPELINE_TASK
from .pipeline_mmfnet import MMFNetClassificationPipeline
from .processing_mmfnet import (
    MMFNetDataCollator,
    MMFNetProcessor,
    MMFNetSpectrogramExtractor,
    conv_image_processor,
    conv_spectrogram_extractor,
)

AutoConfig.register(MMFNetConfig.model_type, MMFNetConfig, exist_ok=True)
AutoConfig.register(MMFNetConvConfig.model_type, MMFNetConvConfig, exist_ok=True)
AutoModel.register(MMFNetConfig, MMFNetModel, exist_ok=True)
AutoModel.register(MMFNetConvConfig, MMFNetConvModel, exist_ok=True)
AutoModelForSequenceClassification.register(MMFNetConfig, MMFNetForSequenceClassification, exist_ok=True)
AutoProcessor.register(MMFNetConfig, MMFNetProcessor, exist_ok=True)

MMFNetConfig.register_for_auto_class()
MMFNetConvConfig.register_for_auto_class()
MMFNetModel.register_for_auto_class("AutoModel")
MMFNetConvModel.register_for_auto_class("AutoModel")
MMFNetForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
MMFNetProcessor.register_for_auto_class("AutoProcessor")
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK,
    pipeline_class=MMFNetClassificationPipeline,
    pt_model=AutoModelForSequenceClassification,
    type="multimodal",
)
install_hooks()  # MMFNet's model card on save_pretrained, push_to_hub and Trainer.push_to_hub

__all__ = [
    "EMBEDS_INPUT_NAMES",
    "ENCODER_INPUT_NAMES",
    "FUSION_TYPES",
    "MMFNET_INPUT_NAMES",
    "MODALITIES",
    "MODALITY_BALANCES",
    "POOLING_TYPES",
    "PIPELINE_TASK",
    "MMFNetClassificationPipeline",
    "MMFNetClassifierOutput",
    "MMFNetConfig",
    "MMFNetConvConfig",
    "MMFNetConvModel",
    "MMFNetDataCollator",
    "MMFNetEmbeddingCollator",
    "MMFNetForClassification",
    "MMFNetForSequenceClassification",
    "MMFNetModel",
    "MMFNetModelOutput",
    "MMFNetPreTrainedModel",
    "MMFNetProcessor",
    "MMFNetSpectrogramExtractor",
    "cache_modality_embeddings",
    "conv_image_processor",
    "conv_spectrogram_extractor",
    "generate_model_card",
    "ogm_coefficients",
    "update_model_card",
    "write_model_card",
]
