"""Time ``hmtc.metrics.evaluate`` (every metric, per-label list included) on synthetic data.

Taxonomy: a complete 10 x 10 x 10 tree, 1,110 nodes (10 + 100 + 1,000 leaves).
Gold: 1-3 distinct leaf paths per sample, closed under ancestors (3-9 nodes).
Predictions: gold with each node dropped with probability 0.1 (a dropped internal node
orphans its children) plus Poisson(0.7) random nodes per sample (mostly orphaned leaves).

    python benchmarks/bench_metrics.py [--samples 100000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import scipy.sparse as sp

from hmtc.metrics import as_csr, evaluate
from hmtc.taxonomy import Taxonomy, TaxonomyIndex


def make_index(fanout: int = 10) -> TaxonomyIndex:
    r = range(fanout)
    return Taxonomy.from_paths([f"{i}/{j}/{k}" for i in r for j in r for k in r], "/").compile()


def make_data(index: TaxonomyIndex, n: int, seed: int) -> tuple[sp.csr_array, sp.csr_array]:
    rng = np.random.default_rng(seed)
    leaves = np.flatnonzero(index.leaf_mask)
    k = rng.integers(1, 4, n)
    rows = np.repeat(np.arange(n), k)
    cols = rng.choice(leaves, len(rows))
    # Close under ancestors: in this tree every leaf has a parent and a grandparent.
    par = index.parent[cols]
    rows, cols = np.tile(rows, 3), np.concatenate([cols, par, index.parent[par]])
    gold = as_csr(sp.coo_array((np.ones(len(rows), bool), (rows, cols)), shape=(n, index.n_nodes)))
    keep = rng.random(gold.nnz) >= 0.1
    g_rows = np.repeat(np.arange(n), np.diff(gold.indptr))
    n_add = rng.poisson(0.7, n)
    p_rows = np.concatenate([g_rows[keep], np.repeat(np.arange(n), n_add)])
    p_cols = np.concatenate([gold.indices[keep], rng.integers(0, index.n_nodes, n_add.sum())])
    pred = as_csr(sp.coo_array((np.ones(len(p_rows), bool), (p_rows, p_cols)), shape=gold.shape))
    return gold, pred


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"best_s": min(times), "median_s": float(np.median(times))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    index = make_index()
    gold, pred = make_data(index, args.samples, args.seed)
    gold_d, pred_d = gold.toarray(), pred.toarray()
    res = evaluate(gold, pred, index)
    out = {
        "taxonomy": "complete 10x10x10 tree", "n_nodes": index.n_nodes,
        "n_samples": args.samples, "gold_nnz": int(gold.nnz), "pred_nnz": int(pred.nnz),
        "repeat": args.repeat, "cpus": os.cpu_count(), "python": platform.python_version(),
        "micro_f1": res["micro_f1"], "orphan_nodes": res["orphan_nodes"],
        "evaluate_sparse": timed(lambda: evaluate(gold, pred, index), args.repeat),
        "dense_to_csr": timed(lambda: as_csr(gold_d), args.repeat),
        "evaluate_dense": timed(lambda: evaluate(gold_d, pred_d, index), args.repeat),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"taxonomy: {out['taxonomy']}, {index.n_nodes} nodes; {args.samples} samples; "
          f"gold nnz {gold.nnz}, pred nnz {pred.nnz}; {out['cpus']} CPUs")
    print(f"(micro-F1 {res['micro_f1']:.4f}, orphan share {res['orphan_nodes']:.4f})")
    for key, what in (("evaluate_sparse", "evaluate, CSR inputs, all metrics + per-label"),
                      ("dense_to_csr", "dense bool -> CSR, one matrix"),
                      ("evaluate_dense", "evaluate, dense inputs (includes 2 conversions)")):
        print(f"{what:<50} best {out[key]['best_s']:.3f} s   median {out[key]['median_s']:.3f} s")


if __name__ == "__main__":
    main()
