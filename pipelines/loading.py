"""`load_pipeline`: the embedded model by default, any diffusers pipeline by path or Hub id."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from swiftdit.pipelines.pipeline_moving_shapes import MovingShapesPipeline

# The embedded model ships in the repository's assets/ folder, beside the package folders.
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "embedded_model"


def best_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _is_embedded_pipeline(path: Path) -> bool:
    index = path / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == MovingShapesPipeline.__name__


def load_pipeline(path_or_id: str | Path | None = None, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, **from_pretrained_kwargs) -> DiffusionPipeline:
    """Load a pipeline and move it to `device` (default: the best available one).

    With no argument this is the embedded moving-shapes model, read offline from assets/. A folder saved by
    `MovingShapesPipeline.save_pretrained` loads as that class; anything else goes through
    `DiffusionPipeline.from_pretrained(path_or_id, dtype=..., **from_pretrained_kwargs)`.
    """
    path = EMBEDDED_MODEL_DIR if path_or_id is None else Path(path_or_id)
    if path_or_id is None and not _is_embedded_pipeline(path):
        raise FileNotFoundError(f"the embedded model is missing: expected a saved pipeline in {path}")
    if _is_embedded_pipeline(path):
        pipe = MovingShapesPipeline.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                    **from_pretrained_kwargs)
    else:
        pipe = DiffusionPipeline.from_pretrained(str(path_or_id), dtype=dtype, **from_pretrained_kwargs)
    return pipe.to(best_device() if device is None else device)
