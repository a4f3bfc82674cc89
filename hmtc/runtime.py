"""Scoring an exported graph with ONNX Runtime, without torch or transformers.

``hmtc predict RUN "text" --engine onnx-int8`` starts in about the time ONNX Runtime takes to
read its graph: this module imports numpy, ``tokenizers`` and ``onnxruntime`` only, and the
checkpoint, taxonomy and decoding modules it meets on the way import no torch either
(benchmarks/cold_start.py measures it; tests/test_imports.py keeps it so).

The checkpoint's tokenizer is read by the ``tokenizers`` library from ``tokenizer/tokenizer.json``,
the file transformers' fast tokenizers save and read; with truncation at ``data.max_length`` it
gives the ids transformers gives (special tokens included, tested). Batches are length-sorted and
padded in numpy (:func:`hmtc.batching.pad`), as torch's batches are.

A graph states in its metadata whether its logits are path logits (``hmtc.path_scores``, the
models' :meth:`~hmtc.models.base.Model.path_scores`), which the label-class probabilities of
:mod:`hmtc.predict` need; a graph exported before the key is read as node logits.

A model with windows (``model.windows``) cuts its texts with torch (:class:`hmtc.models.encoder.Windows`):
:mod:`hmtc.loading` scores its graph with :class:`OnnxModel`'s window variant.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .batching import length_batches, pad
from .checkpoint import Checkpoint, read_meta
from .config import RunConfig
from .errors import HmtcError

FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
ONNX_BATCH = 8      # small length-sorted batches, two at once, ran fastest (experiments/speed.md)
PATH_SCORES = "hmtc.path_scores"    # graph metadata key: "1" when the logits are path logits


def require(module: str):
    """``module`` imported, or an error saying which extra brings it."""
    try:
        return __import__(module)
    except ImportError:
        raise HmtcError(f"ONNX export/inference needs {module!r}: pip install 'hmtc[onnx]'") from None


def onnx_session(path: str | Path, opts=None):
    """An ONNX Runtime CPU session whose every ``run`` uses the calling thread only (``opts``:
    SessionOptions to start from, e.g. with profiling on). Its graph optimisations leave
    residual + LayerNorm unfused, as the export does (:func:`hmtc.export._fuse`)."""
    ort = require("onnxruntime")
    opts = opts or ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["SkipLayerNormFusion"])


class FastTokenizer:
    """The checkpoint's tokenizer as ``tokenizers`` reads it: ids of texts truncated to
    ``max_length`` with the special tokens, and the padding id (``pad_token`` of
    tokenizer_config.json; 0 when it names none)."""

    def __init__(self, folder: Path, max_length: int):
        tokenizers = require("tokenizers")
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise HmtcError("no tokenizer.json (a slow-only tokenizer): predict with --engine torch", path)
        self.tok = tokenizers.Tokenizer.from_file(str(path))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length)
        cfg_path = folder / "tokenizer_config.json"
        pad = json.loads(cfg_path.read_text(encoding="utf-8")).get("pad_token") if cfg_path.is_file() else None
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token_id = (self.tok.token_to_id(pad) if isinstance(pad, str) else None) or 0

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=True)]


class OnnxModel:
    """An exported graph that scores like the checkpoint's model (``engine`` onnx or onnx-int8):
    ``scores`` as :meth:`hmtc.models.base.Model.scores`.

    ``workers`` batches run at once, each on one thread of the same session (ONNX Runtime's
    ``run`` is thread-safe and releases the GIL): no barrier between cores after every operator,
    which ran faster on 2 cores than one run on 2 threads (experiments/speed.md).
    """

    def __init__(self, session, tokenizer: FastTokenizer, n_nodes: int, workers: int = 1, graph: Path | None = None):
        self.session, self.tokenizer, self.n_nodes, self.workers, self.graph = session, tokenizer, n_nodes, workers, graph

    @classmethod
    def load(cls, folder: Path, config: RunConfig, n_nodes: int, threads: int = 0, engine: str = "onnx") -> "OnnxModel":
        path = Path(folder) / FILES[engine]
        if not path.is_file():
            raise HmtcError(f"no {path.name}: run `hmtc export {folder}` first", path)
        session = onnx_session(path)
        if "source" in {i.name for i in session.get_inputs()}:
            raise HmtcError("the graph reads windows, which torch cuts (hmtc.loading.load_for_inference)", path)
        return cls(session, FastTokenizer(Path(folder) / "tokenizer", config.data.max_length), n_nodes,
                   threads or os.cpu_count() or 1, path)

    @property
    def path_scores(self) -> bool:
        """Whether the graph's logits are path logits (its ``hmtc.path_scores`` metadata)."""
        return self.session.get_modelmeta().custom_metadata_map.get(PATH_SCORES) == "1"

    def feeds(self, input_ids: np.ndarray, mask: np.ndarray) -> dict:
        """The graph's inputs for a padded batch."""
        return {"input_ids": input_ids, "attention_mask": mask}

    def scores(self, texts: Sequence[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Logits (len(texts), N); ``bf16`` does not apply (the graph is fp32 or int8)."""
        ids = self.tokenizer.ids(texts)
        batch_size = batch_size or ONNX_BATCH
        out = np.zeros((len(ids), self.n_nodes), dtype=np.float32)
        task = progress.add_task("predict (onnx)", total=len(ids), info="") if progress else None

        def run(b):
            x, mask = pad([ids[i] for i in b], self.tokenizer.pad_token_id)
            return b, self.session.run(["logits"], self.feeds(x, mask))[0]

        batches = length_batches([len(t) for t in ids], batch_size, shuffle=False)
        with ThreadPoolExecutor(self.workers) as pool:
            for b, logits in in_order(pool, run, batches, ahead=2 * self.workers):
                out[b] = logits
                if progress:
                    progress.advance(task, len(b))
        if progress and task is not None:
            progress.remove_task(task)
        return out


def in_order(pool: ThreadPoolExecutor, fn, items, ahead: int):
    """``fn`` over ``items`` on ``pool``, results in order, at most ``ahead`` items in flight
    (so a long input is never materialised at once)."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def load_onnx(folder: str | Path, engine: str = "onnx-int8", threads: int = 0) -> Checkpoint:
    """A checkpoint scored by its exported graph (``engine``: onnx or onnx-int8), torch never
    imported; ``threads``: batches run at once (0: one per core). A graph with windows is an
    error here: :func:`hmtc.loading.load_for_inference` scores it."""
    if engine not in FILES:
        raise HmtcError(f"unknown ONNX engine {engine!r}; known: {', '.join(FILES)}")
    folder = Path(folder)
    config, taxonomy, index, decode = read_meta(folder)
    scorer = OnnxModel.load(folder, config, index.n_nodes, threads, engine)
    return Checkpoint(None, taxonomy, index, config, decode, folder, scorer, scorer.path_scores)
