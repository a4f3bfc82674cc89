"""Export a checkpoint's model to ONNX (optionally int8) and score texts with ONNX Runtime.

The exported graph maps ``input_ids, attention_mask`` (both int64, batch × length, any size) to
the node logits, in the label index's column order: everything else (tokenizer, taxonomy,
decoding, thresholds) stays in the checkpoint folder, so an ONNX checkpoint decodes exactly as
the torch one does. Files, beside ``model.safetensors``:

    model.onnx          fp32 graph with weights
    model.int8.onnx     the same with int8 dynamic quantisation of the matrix multiplications

A model with windows (``model.windows``, texts longer than the encoder's positions) cuts its texts
outside the graph, where each text's length is known (:meth:`Windows.cut`); its graph maps
``window_ids, window_mask`` (R windows × W) and ``source, text_mask`` (B texts × T positions) to
the logits: the encoder reads the windows, each text takes its states back by ``source`` as
:meth:`Windows.join` does, and the head pools over ``text_mask``. A batch that fits one window
enters as its own windows (:meth:`Windows.whole`), so it scores as the torch model's plain path.

``onnx``, ``onnxscript`` and ``onnxruntime`` come with the ``onnx`` extra (``pip install hmtc[onnx]``).
"""

from __future__ import annotations

import collections
import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from .batching import collate, iterate, length_batches, tokenize
from .checkpoint import Checkpoint, load_checkpoint, read_meta
from .errors import HmtcError
from .models import MODELS, Model
from .models.base import text_windows
from .models.encoder import Windows
from .registry import Registry
from .taxonomy import TaxonomyIndex

FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
ONNX_BATCH = 8      # small length-sorted batches, two at once, ran fastest (experiments/speed.md)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise HmtcError(f"ONNX export/inference needs {module!r}: pip install 'hmtc[onnx]'") from None


@functools.cache
def _register_expm1(opset: int) -> None:
    """ONNX has no expm1 (the path-probability logits of the local classifier and of conditional
    MSML use it): export it as x + x²/2 where |x| < 1e-4 (error below x³/6, under float32's
    rounding of x there) and exp(x) − 1 elsewhere, where the subtraction loses under 1e-3 of
    the result's relative precision."""
    def expm1(g, x):
        small = g.op("Less", g.op("Abs", x), g.op("Constant", value_t=torch.tensor(1e-4)))
        series = g.op("Add", x, g.op("Mul", g.op("Mul", x, x), g.op("Constant", value_t=torch.tensor(0.5))))
        return g.op("Where", small, series, g.op("Sub", g.op("Exp", x), g.op("Constant", value_t=torch.tensor(1.0))))
    torch.onnx.register_custom_op_symbolic("aten::expm1", expm1, opset)


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask).logits


class _WindowLogits(torch.nn.Module):
    """The graph of a model with windows (see the module docstring)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, window_ids: torch.Tensor, window_mask: torch.Tensor, source: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        states = self.model.encoder(window_ids, window_mask)                 # (R, W, d)
        joined = states.reshape(-1, states.shape[-1])[source]                # Windows.join: (B, T, d)
        return self.model.forward_states(joined, text_mask).logits


def _window_feeds(windows: Windows, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """The windowed graph's inputs for a tokenised batch."""
    cut = windows.cut(input_ids, attention_mask) if input_ids.shape[1] > windows.length else \
        Windows.whole(input_ids, attention_mask)
    return {"window_ids": cut.inputs, "window_mask": cut.mask, "source": cut.source, "text_mask": cut.text_mask}


def export_onnx(folder: str | Path, int8: bool = True, opset: int = 17) -> list[Path]:
    """Write ``model.onnx`` (and ``model.int8.onnx``) into a checkpoint folder; returns the paths.

    Files are written aside and renamed into place, so a failed export leaves nothing behind.
    """
    onnx = _require("onnx")
    _require("onnxruntime")     # fail early, before the export, when the onnx extra is missing
    folder = Path(folder)
    ckpt = load_checkpoint(folder)
    if not isinstance(ckpt.model, torch.nn.Module):
        raise HmtcError(f"nothing to export: a {ckpt.config['model']['name']} checkpoint has no neural model", folder)
    if getattr(ckpt.model, "config", None) is not None and getattr(ckpt.model.config, "head", "") == "label_token":
        raise HmtcError("the label-token head is not exportable yet (its input depends on the label set)", folder)
    if ckpt.model.text_prefix:
        raise HmtcError(f"a {ckpt.config['model']['name']} model reads its texts behind {ckpt.model.text_prefix!r}, "
                        "which the exported graph's engine does not add yet; predict with the torch engine", folder)
    backbone = ckpt.model.encoder.backbone
    # the eager attention graph is the one ONNX Runtime fuses into its Attention kernel
    if hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation("eager")
    for m in ckpt.model.modules():     # MSML towers: convolutions as one (int8-able) matrix product
        if hasattr(m, "matmul_taps"):
            m.matmul_taps = True
    tokenizer, windows = ckpt.model.tokenizer, ckpt.model.windows
    if windows is None:
        model = _Logits(ckpt.model.float().eval())
        sample = collate(tokenize(tokenizer, ["a short text", "a somewhat longer text to export"], 32),
                         tokenizer.pad_token_id or 0)
        names, axes = ["input_ids", "attention_mask"], {"input_ids": {0: "batch", 1: "length"},
                                                        "attention_mask": {0: "batch", 1: "length"}}
    else:       # a short text beside one of several windows: R ≠ B and T ≠ W while tracing
        model = _WindowLogits(ckpt.model.float().eval())
        long = " ".join(["text"] * ckpt.model.max_length)
        feeds = _window_feeds(windows, *collate(tokenize(tokenizer, ["a short text", long], ckpt.model.max_length),
                                                tokenizer.pad_token_id or 0))
        names, sample = list(feeds), tuple(feeds.values())
        axes = {"window_ids": {0: "windows", 1: "length"}, "window_mask": {0: "windows", 1: "length"},
                "source": {0: "batch", 1: "positions"}, "text_mask": {0: "batch", 1: "positions"}}
    out = [folder / FILES["onnx"]]
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = Path(tmp) / FILES["onnx"]
        _register_expm1(opset)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # tracer notes on shapes the graph keeps dynamic anyway
            torch.onnx.export(model, sample, str(fp32), input_names=names, output_names=["logits"],
                              opset_version=opset, dynamo=False, dynamic_axes=axes | {"logits": {0: "batch"}})
        _fuse(fp32, ckpt.model.encoder.backbone.config)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic     # the optional onnx extra
            # the matrix products only: int8 embeddings (Gather) would cost accuracy for no speed.
            # One weight scale per output column rounds the logits less than one per tensor, at
            # the same speed (experiments/speed.md)
            quantize_dynamic(str(fp32), str(Path(tmp) / FILES["onnx-int8"]), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "Attention"], per_channel=True,
                             # fused ops (com.microsoft) hide output types from shape inference
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            out.append(folder / FILES["onnx-int8"])
        for path in out:    # each graph must load in ONNX Runtime before it replaces anything
            onnx_session(Path(tmp) / path.name)
            os.replace(Path(tmp) / path.name, path)
    return out


def _fuse(path: Path, config) -> None:
    """ONNX Runtime's transformer fusions in place (attention, bias+GELU, embeddings+LayerNorm);
    patterns that do not match are left as they are, so this is safe for any encoder.

    Residual + LayerNorm stays two operators: ONNX Runtime's fused SkipLayerNormalization ran
    slower on a CPU than Add + LayerNormalization (experiments/speed.md)."""
    # the optional onnx extra, checked by export_onnx before it gets here
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
    heads = getattr(config, "num_attention_heads", 0)
    hidden = getattr(config, "hidden_size", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden,
                               optimization_options=options)
    model.save_model_to_file(str(path))


class OnnxModel(Model):
    """The model protocol over an exported graph (``engine`` onnx or onnx-int8): ONNX Runtime
    scores, the checkpoint's tokenizer reads.

    ``workers`` batches run at once, each on one thread of the same session (ONNX Runtime's
    ``run`` is thread-safe and releases the GIL): no barrier between cores after every operator,
    which ran faster on 2 cores than one run on 2 threads (experiments/speed.md).
    """

    def __init__(self, session, tokenizer, max_length: int, n_nodes: int, workers: int = 1, graph: Path | None = None,
                 windows: Windows | None = None):
        self.session, self.tokenizer, self.max_length = session, tokenizer, max_length
        self.n_nodes, self.workers, self.graph, self.windows = n_nodes, workers, graph, windows

    @classmethod
    def create(cls, config: dict, index: TaxonomyIndex) -> "OnnxModel":
        raise HmtcError("an ONNX engine comes from a trained checkpoint (hmtc export), it is not trained")

    def save(self, folder: Path) -> None:
        shutil.copyfile(self.graph, Path(folder) / self.graph.name)

    @classmethod
    def load(cls, folder: Path, config: dict, index: TaxonomyIndex, threads: int = 0,
             engine: str = "onnx") -> "OnnxModel":
        path = Path(folder) / FILES[engine]
        if not path.is_file():
            raise HmtcError(f"no {path.name}: run `hmtc export {folder}` first", path)
        tokenizer = AutoTokenizer.from_pretrained(Path(folder) / "tokenizer")
        session = onnx_session(path)
        windows = None
        if "source" in {i.name for i in session.get_inputs()}:      # exported with windows
            windows = text_windows(AutoConfig.from_pretrained(Path(folder) / "encoder"), tokenizer, config)
            if windows is None:
                raise HmtcError("the graph reads windows but the checkpoint's config has none (model.windows, "
                                "data.max_length); export it again", path)
        return cls(session, tokenizer, config["data"]["max_length"], index.n_nodes,
                   threads or os.cpu_count() or 1, path, windows)

    def scores(self, texts: Sequence[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        """Logits (len(texts), N); ``bf16`` does not apply (the graph is fp32 or int8)."""
        ids = tokenize(self.tokenizer, list(texts), self.max_length)
        batch_size = batch_size or ONNX_BATCH
        pad = self.tokenizer.pad_token_id or 0
        out = np.zeros((len(ids), self.n_nodes), dtype=np.float32)
        task = progress.add_task("predict (onnx)", total=len(ids), info="") if progress else None

        def run(batch):
            b, x, mask, _ = batch
            feeds = {"input_ids": x, "attention_mask": mask} if self.windows is None else \
                _window_feeds(self.windows, x, mask)
            return b, self.session.run(["logits"], {k: v.numpy() for k, v in feeds.items()})[0]

        batches = iterate(ids, length_batches([len(t) for t in ids], batch_size, shuffle=False), pad)
        with ThreadPoolExecutor(self.workers) as pool:
            for b, logits in _in_order(pool, run, batches, ahead=2 * self.workers):
                out[b] = logits
                if progress:
                    progress.advance(task, len(b))
        if progress and task is not None:
            progress.remove_task(task)
        return out


def _in_order(pool: ThreadPoolExecutor, fn, items, ahead: int):
    """``fn`` over ``items`` on ``pool``, results in order, at most ``ahead`` items in flight
    (so a long input is never materialised at once)."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def onnx_session(path: str | Path, opts=None):
    """An ONNX Runtime CPU session whose every ``run`` uses the calling thread only (``opts``:
    SessionOptions to start from, e.g. with profiling on). Its graph optimisations leave
    residual + LayerNorm unfused, as the export does (see :func:`_fuse`)."""
    ort = _require("onnxruntime")
    opts = opts or ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["SkipLayerNormFusion"])


def _torch_engine(folder: Path, config: dict, index: TaxonomyIndex, threads: int = 0) -> Model:
    """The checkpoint's own model, as its class (``MODELS``) loads it."""
    return MODELS.get(config["model"]["name"]).load(folder, config, index)


# engine name -> loader(folder, config, index, threads) of the model that scores
ENGINES: Registry = Registry("engine")
ENGINES.register("torch")(_torch_engine)
for _name in FILES:
    ENGINES.register(_name)(functools.partial(OnnxModel.load, engine=_name))


def load_for_inference(folder: str | Path, engine: str = "torch", threads: int = 0) -> Checkpoint:
    """A checkpoint scored by ``engine``: torch (the safetensors weights), onnx or onnx-int8
    (the exported graph; ``hmtc export`` writes it); ``threads``: ONNX batches run at once
    (0: one per core)."""
    folder = Path(folder)
    load = ENGINES.get(engine)
    config, taxonomy, index, decode = read_meta(folder)
    scorer = load(folder, config, index, threads)
    return Checkpoint(scorer if engine == "torch" else None, taxonomy, index, config, decode, folder, scorer)
