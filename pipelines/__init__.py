"""Pipelines shipped with swiftdit: the embedded moving-shapes text-to-video model and its loader."""

from swiftdit.pipelines.loading import EMBEDDED_MODEL_DIR, best_device, load_pipeline
from swiftdit.pipelines.pipeline_moving_shapes import MovingShapesPipeline
from swiftdit.pipelines.rolling import compile_for_streaming, stream_video

__all__ = ["EMBEDDED_MODEL_DIR", "MovingShapesPipeline", "best_device", "compile_for_streaming", "load_pipeline",
           "stream_video"]
