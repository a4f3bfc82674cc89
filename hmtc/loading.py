"""Loading a checkpoint to score with: its own model (torch, the safetensors weights) or its
exported graph (ONNX Runtime, :mod:`hmtc.runtime`), chosen by engine name (``ENGINES``)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from .checkpoint import Checkpoint, read_meta
from .errors import HmtcError
from .config import RunConfig
from .models import MODELS, Model, load_model
from .models.base import text_windows
from .models.encoder import Windows
from .registry import Registry
from .runtime import FILES, FastTokenizer, OnnxModel, onnx_session
from .taxonomy import TaxonomyIndex


def window_feeds(windows: Windows, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """The inputs of a graph with windows (:mod:`hmtc.export`) for a tokenised batch."""
    cut = windows.cut(input_ids, attention_mask) if input_ids.shape[1] > windows.length else \
        Windows.whole(input_ids, attention_mask)
    return {"window_ids": cut.inputs, "window_mask": cut.mask, "source": cut.source, "text_mask": cut.text_mask}


class WindowOnnxModel(OnnxModel):
    """:class:`~hmtc.runtime.OnnxModel` over a graph that reads windows: texts longer than one
    window are cut where each text's length is known (:meth:`Windows.cut`)."""

    def __init__(self, *args, windows: Windows, **kwargs):
        super().__init__(*args, **kwargs)
        self.windows = windows

    def feeds(self, input_ids: np.ndarray, mask: np.ndarray) -> dict:
        feeds = window_feeds(self.windows, torch.from_numpy(input_ids), torch.from_numpy(mask))
        return {k: v.numpy() for k, v in feeds.items()}


def _torch_engine(folder: Path, config: RunConfig, index: TaxonomyIndex, threads: int = 0) -> Model:
    """The checkpoint's own model, as its class (``MODELS``) loads it."""
    return load_model(folder, config, index)


def _onnx_engine(folder: Path, config: RunConfig, index: TaxonomyIndex, threads: int = 0,
                 engine: str = "onnx") -> OnnxModel:
    """The exported graph, with windows where it reads them."""
    path = Path(folder) / FILES[engine]
    if not path.is_file():
        raise HmtcError(f"no {path.name}: run `hmtc export {folder}` first", path)
    session = onnx_session(path)
    tokenizer = FastTokenizer(Path(folder) / "tokenizer", config.data.max_length)
    workers = threads or os.cpu_count() or 1
    if "source" not in {i.name for i in session.get_inputs()}:
        return OnnxModel(session, tokenizer, index.n_nodes, workers, path)
    windows = text_windows(AutoConfig.from_pretrained(Path(folder) / "encoder"),
                           AutoTokenizer.from_pretrained(Path(folder) / "tokenizer"), config.model,
                           config.data.max_length)
    if windows is None:
        raise HmtcError("the graph reads windows but the checkpoint's config has none (model.windows, "
                        "data.max_length); export it again", path)
    return WindowOnnxModel(session, tokenizer, index.n_nodes, workers, path, windows=windows)


# engine name -> loader(folder, config, index, threads) of the model that scores
ENGINES: Registry = Registry("engine")
ENGINES.register("torch")(_torch_engine)
for _name in FILES:
    ENGINES.register(_name)(functools.partial(_onnx_engine, engine=_name))


def path_scores(config: RunConfig) -> bool:
    """Whether the run's model scores path logits (:meth:`hmtc.models.base.Model.path_scores`)."""
    return MODELS.get(config.model.name).path_scores(config.model.options)


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """The checkpoint in ``folder``, its model loaded by the class its config names."""
    return load_for_inference(folder, "torch")


def load_for_inference(folder: str | Path, engine: str = "torch", threads: int = 0) -> Checkpoint:
    """A checkpoint scored by ``engine``: torch (the safetensors weights), onnx or onnx-int8
    (the exported graph; ``hmtc export`` writes it); ``threads``: ONNX batches run at once
    (0: one per core). :func:`hmtc.runtime.load_onnx` loads a graph without importing torch."""
    folder = Path(folder)
    load = ENGINES.get(engine)
    config, taxonomy, index, decode = read_meta(folder)
    scorer = load(folder, config, index, threads)
    return Checkpoint(scorer if engine == "torch" else None, taxonomy, index, config, decode, folder, scorer,
                      path_scores(config))
