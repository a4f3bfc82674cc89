"""Export a checkpoint's model to ONNX (optionally int8) and score texts with ONNX Runtime.

The exported graph maps ``input_ids, attention_mask`` (both int64, batch × length, any size) to
the node logits, in the label index's column order: everything else (tokenizer, taxonomy,
decoding, thresholds) stays in the checkpoint folder, so an ONNX checkpoint decodes exactly as
the torch one does. Files, beside ``model.safetensors``:

    model.onnx          fp32 graph with weights
    model.int8.onnx     the same with int8 dynamic quantisation of the matrix multiplications

``onnx``, ``onnxscript`` and ``onnxruntime`` come with the ``onnx`` extra (``pip install hmtc[onnx]``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .errors import HmtcError

ENGINES = ("torch", "onnx", "onnx-int8")
FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
ONNX_BATCH = 16     # ONNX Runtime on a CPU runs small length-sorted batches fastest (hmtc bench)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise HmtcError(f"ONNX export/inference needs {module!r}: pip install 'hmtc[onnx]'") from None


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask).logits


def export_onnx(folder: str | Path, int8: bool = True, opset: int = 17) -> list[Path]:
    """Write ``model.onnx`` (and ``model.int8.onnx``) into a checkpoint folder; returns the paths.

    Files are written aside and renamed into place, so a failed export leaves nothing behind.
    """
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    folder = Path(folder)
    ckpt = load_checkpoint(folder)
    if ckpt.model is None:
        raise HmtcError("nothing to export: a tfidf checkpoint has no neural model", folder)
    if getattr(ckpt.model, "config", None) is not None and getattr(ckpt.model.config, "head", "") == "label_token":
        raise HmtcError("the label-token head is not exportable yet (its input depends on the label set)", folder)
    backbone = ckpt.model.encoder.backbone
    # the eager attention graph is the one ONNX Runtime fuses into its Attention kernel
    if hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation("eager")
    for m in ckpt.model.modules():     # MSML towers: convolutions as one (int8-able) matrix product
        if hasattr(m, "matmul_taps"):
            m.matmul_taps = True
    model = _Logits(ckpt.model.float().eval())
    pad = ckpt.tokenizer.pad_token_id or 0
    from .batching import collate, tokenize
    sample = collate(tokenize(ckpt.tokenizer, ["a short text", "a somewhat longer text to export"], 32), pad)
    out = [folder / FILES["onnx"]]
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = Path(tmp) / FILES["onnx"]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # tracer notes on shapes the graph keeps dynamic anyway
            torch.onnx.export(model, sample, str(fp32), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=opset, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                            "attention_mask": {0: "batch", 1: "length"},
                                            "logits": {0: "batch"}})
        _fuse(fp32, ckpt.model.encoder.backbone.config)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            # the matrix products only: int8 embeddings (Gather) would cost accuracy for no speed
            quantize_dynamic(str(fp32), str(Path(tmp) / FILES["onnx-int8"]), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "Attention"],
                             # fused ops (com.microsoft) hide output types from shape inference
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            out.append(folder / FILES["onnx-int8"])
        for path in out:    # each graph must load in ONNX Runtime before it replaces anything
            ort.InferenceSession(str(Path(tmp) / path.name), providers=["CPUExecutionProvider"])
            os.replace(Path(tmp) / path.name, path)
    return out


def _fuse(path: Path, config) -> None:
    """ONNX Runtime's transformer fusions in place (bias+GELU, residual+LayerNorm, ...); patterns
    that do not match are left as they are, so this is safe for any encoder."""
    from onnxruntime.transformers.optimizer import optimize_model
    heads = getattr(config, "num_attention_heads", 0)
    hidden = getattr(config, "hidden_size", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden)
    model.save_model_to_file(str(path))


class OnnxCheckpoint(Checkpoint):
    """A checkpoint whose scores come from an ONNX Runtime session (``model`` is None)."""

    session = None

    def scores(self, texts: list[str], batch_size: int | None = None, bf16: bool | None = None,
               progress=None) -> np.ndarray:
        from .batching import iterate, length_batches, tokenize
        ids = tokenize(self.tokenizer, texts, self.config["data"]["max_length"])
        batch_size = batch_size or ONNX_BATCH
        pad = self.tokenizer.pad_token_id or 0
        out = np.zeros((len(ids), self.index.n_nodes), dtype=np.float32)
        task = progress.add_task("predict (onnx)", total=len(ids), info="") if progress else None
        for b, x, mask, _ in iterate(ids, length_batches([len(t) for t in ids], batch_size, shuffle=False), pad):
            out[b] = self.session.run(["logits"], {"input_ids": x.numpy(), "attention_mask": mask.numpy()})[0]
            if progress:
                progress.advance(task, len(b))
        if progress and task is not None:
            progress.remove_task(task)
        return out


def load_for_inference(folder: str | Path, engine: str = "torch", threads: int = 0) -> Checkpoint:
    """A checkpoint scored by ``engine``: torch (the safetensors weights), onnx or onnx-int8
    (the exported graph; ``hmtc export`` writes it)."""
    folder = Path(folder)
    if engine not in ENGINES:
        raise HmtcError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "torch":
        return load_checkpoint(folder)
    ort = _require("onnxruntime")
    path = folder / FILES[engine]
    if not path.is_file():
        raise HmtcError(f"no {path.name}: run `hmtc export {folder}` first", path)
    base = load_checkpoint(folder, with_model=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ckpt = OnnxCheckpoint(None, base.tokenizer, base.taxonomy, base.index, base.config, base.decode, folder)
    ckpt.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return ckpt
