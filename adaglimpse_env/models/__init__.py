"""The frozen model: elastic MAE, positional embeddings, task heads, factories and checkpoints."""

from adaglimpse_env.models.checkpoint import (
    CheckpointError,
    LoadedModel,
    load_model,
    save_model,
)
from adaglimpse_env.models.factory import MODEL_SIZES, create_model, model_config
from adaglimpse_env.models.heads import (
    TASKS,
    ClassificationHead,
    ReconstructionHead,
    SegmentationHead,
    TaskHead,
    create_task_head,
)
from adaglimpse_env.models.hub import CheckpointNotFoundError
from adaglimpse_env.models.mae import ElasticMAE, EncoderOutput, MAEConfig, attention_rollout

__all__ = [
    "MODEL_SIZES",
    "TASKS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ClassificationHead",
    "ElasticMAE",
    "EncoderOutput",
    "LoadedModel",
    "MAEConfig",
    "ReconstructionHead",
    "SegmentationHead",
    "TaskHead",
    "attention_rollout",
    "create_model",
    "create_task_head",
    "load_model",
    "model_config",
    "save_model",
]
