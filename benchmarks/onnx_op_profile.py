"""Where an exported checkpoint's ONNX Runtime inference time goes, by operator type.

    python benchmarks/onnx_op_profile.py runs/duee-msml-try2 [--engine onnx-int8] [--texts 512]

Scores DuEE training texts (spread over the set; $HMTC_DATA) with ONNX Runtime's profiler on and
prints texts/s, then each operator type's share of the kernel time. The matrix-product share
bounds what any change outside the matrix products can gain.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

from hmtc.bench import duee_texts
from hmtc.checkpoint import locate
from hmtc.loading import load_for_inference
from hmtc.runtime import FILES, ONNX_BATCH, onnx_session

MATMUL_OPS = {"DynamicQuantizeMatMul", "QAttention", "MatMul", "MatMulInteger", "Attention", "Gemm",
              "FusedMatMul", "QGemm", "MatMulIntegerToFloat"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run or checkpoint folder with model.onnx / model.int8.onnx (hmtc export)")
    ap.add_argument("--engine", default="onnx-int8", choices=["onnx", "onnx-int8"])
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="batches run at once, one thread each (0: one per core)")
    args = ap.parse_args()

    import onnxruntime as ort
    _, folder = locate(args.run)
    texts = duee_texts()
    texts = texts[:: max(1, len(texts) // args.texts)][: args.texts]
    ckpt = load_for_inference(folder, args.engine, args.threads)
    opts = ort.SessionOptions()
    ckpt.scores(texts[:64])                                    # warm up without the profiler
    with tempfile.TemporaryDirectory() as tmp:             # the trace never lands in the working tree
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        ckpt.scorer.session = onnx_session(folder / FILES[args.engine], opts)
        t0 = time.perf_counter()
        ckpt.scores(texts)
        dt = time.perf_counter() - t0
        with open(ckpt.scorer.session.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    matmul = sum(v for k, v in per_op.items() if k in MATMUL_OPS)
    print(f"{args.engine}: {len(texts)} texts in {dt:.2f} s = {len(texts) / dt:.1f} texts/s "
          f"(batch {ONNX_BATCH}, {ckpt.scorer.workers} at once, profiler on); kernel time {total / 1e6:.2f} s")
    for op, us in per_op.most_common(12):
        print(f"  {op:28s} {us / 1e3:9.1f} ms  {100 * us / total:5.1f} %")
    print(f"matrix products (incl. fused attention): {100 * matmul / total:.1f} % of kernel time; "
          f"alone they cap this engine at {len(texts) * ckpt.scorer.workers / (matmul / 1e6):.0f} texts/s")


if __name__ == "__main__":
    main()
