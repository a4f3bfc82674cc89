"""Throughput benchmarks: training samples/s and inference texts/s per model and precision on
DuEE-length inputs, peak memory, and the time of decoding + all metrics at scale.

Every figure carries the settings it was measured with.
"""

from __future__ import annotations

import copy
import os
import resource
import time

import numpy as np
import torch

from .batching import collate, length_batches, tokenize
from .config import DEFAULTS
from .taxonomy import Taxonomy


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def duee_texts(n: int) -> list[str]:
    """DuEE training texts when $HMTC_DATA has them; else texts of the same length profile."""
    from .data.catalog import load_dataset
    from .errors import DataError
    try:
        texts = load_dataset("duee", splits=["train"]).splits["train"].texts
    except DataError:                                   # no data folder: synthetic stand-ins
        rng = np.random.default_rng(0)
        base = "据报道今日某公司宣布裁员并发布新产品同时股价大幅下跌引发市场关注"
        texts = [(base * 4)[: int(rng.integers(15, 140))] for _ in range(n)]
    return list(texts[:n])


def _config(model: str, encoder: str, bf16: bool, threads: int) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    cfg["name"] = f"bench-{model}"
    cfg["model"].update(name=model, encoder=encoder)
    cfg["train"].update(bf16=bf16, threads=threads)
    return cfg


def train_throughput(model_name: str, encoder: str, texts: list[str], taxonomy: Taxonomy, bf16: bool,
                     batch_size: int = 32, steps: int = 20, warmup: int = 3, threads: int = 0) -> dict:
    """Samples/s of full training steps (forward, backward, clip, AdamW) on bucketed batches."""
    from .train import autocast, build_model
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = _config(model_name, encoder, bf16, threads)
    index = taxonomy.compile()
    model, tok = build_model(cfg, index)
    ids = tokenize(tok, texts, cfg["data"]["max_length"])
    batches = length_batches([len(x) for x in ids], batch_size, True, seed=0, epoch=0)
    rng = np.random.default_rng(0)
    y = index.closure(rng.random((len(ids), index.n_nodes)) < 2 / index.n_nodes)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    model.train()
    dev = torch.device("cpu")
    n = tokens = 0
    for step, b in enumerate(batches[: warmup + steps]):
        if step == warmup:
            t0 = time.perf_counter()
        x, m = collate([ids[i] for i in b], tok.pad_token_id or 0)
        with autocast(dev, bf16):
            loss = model(x, m, labels=torch.as_tensor(y[b], dtype=torch.float32)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step >= warmup:
            n += len(b)
            tokens += int(m.sum())
    dt = time.perf_counter() - t0
    return {"samples_per_s": round(n / dt, 2), "tokens_per_sample": round(tokens / n, 1), "samples": n,
            "seconds": round(dt, 2), "peak_rss_mib": round(_peak_rss_mib())}


def infer_throughput(model_name: str, encoder: str, texts: list[str], taxonomy: Taxonomy, bf16: bool,
                     batch_size: int = 128, threads: int = 0) -> dict:
    """Texts/s of tokenisation + inference (length-sorted batches), untrained weights."""
    from .train import build_model, predict_scores
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cfg = _config(model_name, encoder, bf16, threads)
    model, tok = build_model(cfg, taxonomy.compile())
    model.eval()
    predict_scores(model, tokenize(tok, texts[:64], 128), tok.pad_token_id or 0, batch_size, bf16)  # warm up
    t0 = time.perf_counter()
    ids = tokenize(tok, texts, cfg["data"]["max_length"])
    predict_scores(model, ids, tok.pad_token_id or 0, batch_size, bf16)
    dt = time.perf_counter() - t0
    return {"texts_per_s": round(len(texts) / dt, 1), "texts": len(texts), "seconds": round(dt, 2),
            "peak_rss_mib": round(_peak_rss_mib())}


def decode_metrics_time(n_samples: int = 100_000, branching: int = 10, seed: int = 0) -> dict:
    """Seconds to decode (best) and compute every metric for a synthetic 10x10x10 tree."""
    from .decode import decode
    from .metrics import evaluate
    paths = [f"{a}.{b}.{c}" for a in range(branching) for b in range(branching) for c in range(branching)]
    index = Taxonomy.from_paths(paths, sep=".").compile()
    rng = np.random.default_rng(seed)
    leaves = np.flatnonzero(index.leaf_mask)
    gold = np.zeros((n_samples, index.n_nodes), dtype=bool)
    gold[np.arange(n_samples), rng.choice(leaves, n_samples)] = True
    gold = index.closure(gold)
    scores = (np.where(gold, 2.0, -2.0) + rng.normal(0, 1.5, gold.shape)).astype(np.float32)
    t0 = time.perf_counter()
    pred = decode(scores, index, "best", 0.0)
    t1 = time.perf_counter()
    evaluate(gold, pred, index)
    t2 = time.perf_counter()
    return {"decode_seconds": round(t1 - t0, 3), "metrics_seconds": round(t2 - t1, 3),
            "total_seconds": round(t2 - t0, 3), "samples": n_samples, "nodes": index.n_nodes}
