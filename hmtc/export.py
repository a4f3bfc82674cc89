"""Export a checkpoint's model to ONNX (optionally int8); :mod:`hmtc.runtime` scores the graphs.

The exported graph maps ``input_ids, attention_mask`` (both int64, batch × length, any size) to
the node logits, in the label index's column order: everything else (tokenizer, taxonomy,
decoding, thresholds) stays in the checkpoint folder, so an ONNX checkpoint decodes exactly as
the torch one does. Files, beside ``model.safetensors``:

    model.onnx          fp32 graph with weights
    model.int8.onnx     the same with int8 dynamic quantisation of the matrix multiplications

Each graph's metadata says whether its logits are path logits (``hmtc.path_scores``: "1" or "0"),
so the torch-free engine needs no model class to read them.

A model with windows (``model.windows``, texts longer than the encoder's positions) cuts its texts
outside the graph, where each text's length is known (:meth:`Windows.cut`); its graph maps
``window_ids, window_mask`` (R windows × W) and ``source, text_mask`` (B texts × T positions) to
the logits: the encoder reads the windows, each text takes its states back by ``source`` as
:meth:`Windows.join` does, and the head pools over ``text_mask``. A batch that fits one window
enters as its own windows (:meth:`Windows.whole`), so it scores as the torch model's plain path.

``onnx``, ``onnxscript`` and ``onnxruntime`` come with the ``onnx`` extra (``pip install hmtc[onnx]``).
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .batching import tokenize
from .errors import HmtcError
from .io import run_locked
from .loading import load_checkpoint, path_scores, window_feeds
from .models.batches import collate
from .runtime import FILES, PATH_SCORES, onnx_session, require


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


def export_onnx(folder: str | Path, int8: bool = True, opset: int = 17) -> list[Path]:
    """Write ``model.onnx`` (and ``model.int8.onnx``) into a checkpoint folder; returns the paths.

    Files are written aside and renamed into place, so a failed export leaves nothing behind.
    """
    onnx = require("onnx")
    require("onnxruntime")     # fail early, before the export, when the onnx extra is missing
    folder = Path(folder)
    with run_locked(folder.parent):        # a run's best/: not while another process writes the run
        return _export_onnx(folder, int8, opset, onnx)


def _export_onnx(folder: Path, int8: bool, opset: int, onnx) -> list[Path]:
    ckpt = load_checkpoint(folder)
    if not isinstance(ckpt.model, torch.nn.Module):
        raise HmtcError(f"nothing to export: a {ckpt.config.model.name} checkpoint has no neural model", folder)
    if getattr(ckpt.model, "config", None) is not None and getattr(ckpt.model.config, "head", "") == "label_token":
        raise HmtcError("the label-token head is not exportable yet (its input depends on the label set)", folder)
    if ckpt.model.text_prefix:
        raise HmtcError(f"a {ckpt.config.model.name} model reads its texts behind {ckpt.model.text_prefix!r}, "
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
        feeds = window_feeds(windows, *collate(tokenize(tokenizer, ["a short text", long], ckpt.model.max_length),
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
        _fuse(fp32, ckpt.model.encoder.backbone.config, path_scores(ckpt.config))
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


def _fuse(path: Path, config, paths: bool) -> None:
    """ONNX Runtime's transformer fusions in place (attention, bias+GELU, embeddings+LayerNorm);
    patterns that do not match are left as they are, so this is safe for any encoder.

    Residual + LayerNorm stays two operators: ONNX Runtime's fused SkipLayerNormalization ran
    slower on a CPU than Add + LayerNormalization (experiments/speed.md). ``paths``: the graph's
    ``hmtc.path_scores`` metadata, written here where the graph is saved anyway."""
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
    model.model.metadata_props.add(key=PATH_SCORES, value="1" if paths else "0")
    model.save_model_to_file(str(path))
