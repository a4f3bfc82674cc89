"""Throughput benchmarks: training samples/s and inference texts/s per model and precision on
DuEE-length inputs, peak memory, and the time of decoding + all metrics at scale.

Every figure carries the settings it was measured with.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import AutoConfig

from .batching import length_batches, tokenize
from .checkpoint import locate, save_checkpoint
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data.catalog import get_spec, load_dataset
from .decode import decode
from .encoders import resolve_encoder
from .errors import DataError
from .export import export_onnx
from .inference import cache_lower_states
from .loading import load_for_inference
from .metrics import evaluate
from .models import autocast, create_model
from .models.batches import collate, iterate_states
from .predict import predict_texts, read_texts
from .runtime import ONNX_BATCH, FastTokenizer
from .taxonomy import Taxonomy
from .train import EMA


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def flop_counter():
    """torch's FlopCounterMode (matrix products, convolutions, attention: 2 FLOP per
    multiply-add), taught the CPU flash-attention kernels that SDPA runs here."""
    def fwd(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd})


def gemm_rate(m: int, k: int, n: int, dtype: str, seconds: float = 1.0) -> float:
    """Sustained GMAC/s of one (m × k)·(k × n) matrix product on this machine, repeated for
    ``seconds``: ``fp32``, ``bf16`` (fp32 accumulation) or ``int8`` (``torch._int_mm``, int32
    accumulation, no (de)quantisation counted). An upper bound for the model's products of that
    shape: each figure below derived from it assumes every product runs this fast."""
    g = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
        b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=g)
        mm = torch._int_mm
    else:
        real = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        a, b = torch.randn(m, k, generator=g).to(real), torch.randn(k, n, generator=g).to(real)
        mm = torch.mm
    mm(a, b)                                                        # warm up
    reps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        mm(a, b)
        reps += 1
    return m * k * n * reps / elapsed / 1e9


def infer_gflops_per_text(model_name: str, encoder: str, texts: list[str], taxonomy: Taxonomy,
                          layers: int = 0, batch_size: int = 128, options: dict | None = None) -> tuple[float, float]:
    """Counted forward GFLOP per text of the model (``layers`` > 0: the encoder's lower
    ``layers`` layers; ``options``: its model options) over ``texts`` in length-sorted batches,
    and their tokens per text."""
    cfg = _config(model_name, encoder, False, 1, encoder_options={"num_hidden_layers": layers} if layers else None,
                  options=options)
    model = create_model(cfg, taxonomy.compile())
    ids = tokenize(model.tokenizer, texts, cfg.data.max_length)
    with flop_counter() as fc, torch.no_grad():
        model.score_ids(ids, batch_size)
    return fc.get_total_flops() / 1e9 / len(texts), sum(map(len, ids)) / len(texts)


def bench_inputs(dataset: str = "duee", n: int = 0) -> tuple[list[str], Taxonomy]:
    """The first ``n`` (0: all) training texts of ``dataset`` (a built-in name or a dataset
    ``.toml``) and its taxonomy. Without a data folder, DuEE (the default) is stood in for by
    texts of its length profile (11,958 for all, the size of its training split)."""
    try:
        ds = load_dataset(dataset, splits=["train"])
        return list(ds.splits["train"].texts[:n or None]), Taxonomy.load(ds.taxonomy_path)
    except DataError:
        if dataset != "duee":
            raise
    rng = np.random.default_rng(0)                      # no data folder: synthetic stand-ins
    base = "据报道今日某公司宣布裁员并发布新产品同时股价大幅下跌引发市场关注"
    texts = [(base * 4)[: int(rng.integers(15, 140))] for _ in range(n or 11_958)]
    return texts, Taxonomy.load(get_spec("duee").taxonomy)


def duee_texts(n: int = 0) -> list[str]:
    """The first ``n`` (0: all) DuEE training texts, or stand-ins (:func:`bench_inputs`)."""
    return bench_inputs("duee", n)[0]


def representative_batches(lengths, batch_size: int, steps: int, warmup: int = 3,
                           seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Warm-up then timed batches (and how many warm up) from the trainer's length buckets over
    all ``lengths``; the timed ones sit at evenly spaced quantiles of batch length, so a few steps
    see the tokens per text of a whole epoch (an epoch's first batches can be far shorter)."""
    batches = length_batches(lengths, batch_size, True, seed=seed, epoch=0)
    lengths = np.asarray(lengths)
    order = np.argsort([lengths[b].mean() for b in batches], kind="stable")
    steps = min(steps, len(order))
    timed = order[((np.arange(steps) + 0.5) * len(order) / steps).astype(int)]
    rest = np.setdiff1d(order, timed)
    warm = np.random.default_rng(seed).choice(rest, size=min(warmup, len(rest)), replace=False)
    timed = np.random.default_rng(seed + 1).permutation(timed)
    return [batches[i] for i in (*warm, *timed)], len(warm)


MAX_LENGTH = DataConfig().max_length       # tokens per text the settings are timed at: a default run's


def _config(model: str, encoder: str, bf16: bool, threads: int, freeze_layers: int = 0,
            encoder_options: dict | None = None, fast_dropout: bool = False, options: dict | None = None) -> RunConfig:
    return RunConfig(f"bench-{model}", data=DataConfig(max_length=MAX_LENGTH),
                     model=ModelConfig(name=model, encoder=encoder, freeze_layers=freeze_layers,
                                       encoder_options=encoder_options or {}, fast_dropout=fast_dropout,
                                       options=options or {}),
                     train=TrainConfig(bf16=bf16, threads=threads))


class _TrainSetting:
    """One training setting ready to time: model, AdamW, EMA and the representative batches
    (their frozen part cached when ``freeze_layers`` > 0), already warmed up."""

    def __init__(self, model_name: str, encoder: str, texts: list[str], taxonomy: Taxonomy, bf16: bool,
                 batch_size: int, steps: int, warmup: int, threads: int, freeze_layers: int,
                 encoder_options: dict | None, ema_decay: float, fast_dropout: bool, options: dict | None = None):
        torch.manual_seed(0)
        cfg = _config(model_name, encoder, bf16, threads, freeze_layers, encoder_options, fast_dropout, options)
        index = taxonomy.compile()
        self.model = create_model(cfg, index)
        tok = self.model.tokenizer
        self.pad_id, self.bf16, self.freeze_layers = tok.pad_token_id or 0, bf16, freeze_layers
        self.ids = tokenize(tok, texts, cfg.data.max_length)
        self.lengths = [len(x) for x in self.ids]
        batches, n_warm = representative_batches(self.lengths, batch_size, steps, warmup)
        self.warm, self.timed = batches[:n_warm], batches[n_warm:]
        self.y = index.closure(np.random.default_rng(0).random((len(self.ids), index.n_nodes)) < 2 / index.n_nodes)
        self.cache_s = 0.0
        if freeze_layers:
            self.model.encoder.check_split()
            used = np.concatenate(batches)
            t0 = time.perf_counter()
            states = cache_lower_states(self.model.encoder, [self.ids[i] for i in used], self.pad_id, 128, bf16,
                                        torch.device("cpu"), keep=torch.bfloat16 if bf16 else None)
            self.cache_s = (time.perf_counter() - t0) / len(used)
            self.cache = dict(zip(used.tolist(), states))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-5, fused=True)
        self.ema = EMA(self.params, ema_decay) if ema_decay else None
        self.model.train()
        for b in self.warm:
            self._step(b)

    def _inputs(self, b: np.ndarray) -> dict:
        """The model's keyword arguments for batch ``b`` (cached lower states when frozen)."""
        labels = torch.as_tensor(self.y[b], dtype=torch.float32)
        if self.freeze_layers:
            _, states, m, _ = next(iterate_states(self.cache, [b]))
            return dict(input_ids=None, attention_mask=m, lower_states=states, labels=labels)
        x, m = collate([self.ids[i] for i in b], self.pad_id)
        return dict(input_ids=x, attention_mask=m, labels=labels)

    def _step(self, b: np.ndarray) -> int:
        """One full step (forward, backward, clip, AdamW, EMA) on batch ``b``; returns its tokens."""
        inputs = self._inputs(b)
        with autocast(torch.device("cpu"), self.bf16):
            loss = self.model(**inputs).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if self.ema:
            self.ema.update()
        return int(inputs["attention_mask"].sum())

    def gflops_per_sample(self) -> tuple[float, float]:
        """Counted GFLOP per sample over the timed batches: a training step's forward + backward,
        and the one-off pass of the frozen lower layers that fills the cache (0 without one).
        The weights are left as they were (no optimizer step)."""
        n, cpu = sum(map(len, self.timed)), torch.device("cpu")
        with flop_counter() as fc:
            for b in self.timed:
                with autocast(cpu, self.bf16):
                    loss = self.model(**self._inputs(b)).loss
                loss.backward()
        self.opt.zero_grad(set_to_none=True)
        step = fc.get_total_flops() / 1e9 / n
        if not self.freeze_layers:
            return step, 0.0
        with flop_counter() as fc, torch.no_grad(), autocast(cpu, self.bf16):
            for b in self.timed:
                self.model.encoder.lower(*collate([self.ids[i] for i in b], self.pad_id))
        return step, fc.get_total_flops() / 1e9 / n

    def time_round(self) -> tuple[int, int, float]:
        """Samples, tokens and seconds of one pass over the timed batches."""
        t0, tokens = time.perf_counter(), 0
        for b in self.timed:
            tokens += self._step(b)
        return sum(map(len, self.timed)), tokens, time.perf_counter() - t0


def _turns(n: int, r: int) -> range:
    """The order of ``n`` settings in round ``r``: odd rounds reversed (ABBA), so a steady drift
    in the machine's speed cancels."""
    return range(n) if r % 2 == 0 else range(n - 1, -1, -1)


def train_throughputs(settings: list[dict], texts: list[str], taxonomy: Taxonomy, encoder: str,
                      bf16: bool, batch_size: int = 32, steps: int = 20, warmup: int = 3, threads: int = 0,
                      epochs: int = 6, ema_decay: float = 0.998, rounds: int = 1) -> list[dict]:
    """Samples/s of full training steps (forward, backward, clip, AdamW, EMA as in the DuEE
    recipe) for each of ``settings`` (dicts of ``model``, ``freeze_layers``, ``fast_dropout``,
    optional ``encoder_options`` and model ``options``), on batches of the trainer's length
    buckets that match the texts' length profile (see ``representative_batches``).

    The settings are timed in turn, ``rounds`` times over (every other round in reverse order),
    so that drifts in the machine's speed hit all of them alike; each result keeps its per-round
    rates (``round_samples_per_s``) and its rate over all rounds. With ``freeze_layers`` > 0 the
    frozen part's output is cached first (``train.cache_frozen``) and the steps run on the cache;
    ``effective_samples_per_s`` then charges the cache's one-off cost to an ``epochs``-epoch run:
    ``epochs / (cache s/sample + epochs * step s/sample)``.
    """
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    ready = [_TrainSetting(s["model"], encoder, texts, taxonomy, bf16, batch_size, steps, warmup, threads,
                           s.get("freeze_layers", 0), s.get("encoder_options"), ema_decay, s.get("fast_dropout", False),
                           s.get("options"))
             for s in settings]
    rounds_out = []
    for r in range(rounds):
        timed = {i: ready[i].time_round() for i in _turns(len(ready), r)}
        rounds_out.append([timed[i] for i in range(len(ready))])
    out = []
    for i, ts in enumerate(ready):
        n, tokens, dt = (sum(r[i][j] for r in rounds_out) for j in range(3))
        step_s = dt / n
        row = {"samples_per_s": round(n / dt, 2), "tokens_per_sample": round(tokens / n, 1),
               "data_tokens_per_sample": round(float(np.mean(ts.lengths)), 1), "samples": n,
               "seconds": round(dt, 2), "rounds": rounds,
               "round_samples_per_s": [round(r[i][0] / r[i][2], 2) for r in rounds_out],
               "peak_rss_mib": round(_peak_rss_mib())}
        if ts.freeze_layers:
            row["cache_ms_per_sample"] = round(1000 * ts.cache_s, 2)
            row["effective_samples_per_s"] = round(epochs / (ts.cache_s + epochs * step_s), 2)
        out.append(row)
    return out


def bench_checkpoint(model_name: str, encoder: str, taxonomy: Taxonomy, bf16: bool, threads: int,
                     folder: Path, engine: str = "torch", layers: int = 0, options: dict | None = None):
    """A checkpoint of an untrained model in ``folder`` (exported for ONNX engines), loaded for
    ``engine``: inference speed does not depend on the weights' values. ``layers`` > 0 keeps the
    encoder's lower ``layers`` layers only (``model.encoder_options.num_hidden_layers``);
    ``options`` are the model's options (``model.options``)."""
    cfg = _config(model_name, encoder, bf16, threads,
                  encoder_options={"num_hidden_layers": layers} if layers else None, options=options)
    torch.manual_seed(0)
    save_checkpoint(folder, create_model(cfg, taxonomy.compile()), taxonomy, cfg)
    if engine != "torch":
        export_onnx(folder, int8=engine == "onnx-int8")
    return load_for_inference(folder, engine, threads)


def time_scores(ckpt, texts: list[str], batch_size: int | None = None, bf16: bool | None = None) -> dict:
    """Texts/s of tokenisation + inference (length-sorted batches) of a loaded checkpoint, after
    a 64-text warm-up; ``None``: the checkpoint's own batch size and precision."""
    ckpt.scores(texts[:64], batch_size, bf16)
    t0 = time.perf_counter()
    ckpt.scores(texts, batch_size, bf16)
    dt = time.perf_counter() - t0
    tok = ckpt.scorer.tokenizer
    ids = tok.ids(texts) if isinstance(tok, FastTokenizer) else tokenize(tok, texts, ckpt.config.data.max_length)
    tokens = sum(map(len, ids))
    return {"texts_per_s": round(len(texts) / dt, 1), "texts": len(texts), "seconds": round(dt, 2),
            "tokens_per_text": round(tokens / len(texts), 1), "peak_rss_mib": round(_peak_rss_mib())}


def infer_throughput(model_name: str, encoder: str, texts: list[str], taxonomy: Taxonomy, bf16: bool,
                     batch_size: int = 128, threads: int = 0, engine: str = "torch", layers: int = 0,
                     options: dict | None = None) -> dict:
    """:func:`time_scores` of an untrained model with ``engine`` (torch: batches of ``batch_size``;
    ONNX: its own); ``layers`` > 0: the encoder's lower ``layers`` layers only."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = bench_checkpoint(model_name, encoder, taxonomy, bf16, threads, Path(tmp) / "ckpt", engine, layers,
                                options)
        return time_scores(ckpt, texts, batch_size if engine == "torch" else None, bf16)


def checkpoint_throughputs(settings: list[tuple[str | Path, str]], texts: list[str], threads: int = 0,
                           rounds: int = 1) -> list[dict]:
    """:func:`time_scores` of trained runs or checkpoint folders as ``hmtc predict`` scores them
    (their own batch size and precision; ``hmtc export`` them first for the ONNX engines), one
    per ``(target, engine)`` setting, each with its model name, encoder depth, precision and batch
    size.

    All are loaded first and timed in turn, ``rounds`` times over (every other round in reverse
    order), so that the machine's drifts hit them alike; each keeps its per-round rates
    (``round_texts_per_s``) and ``texts_per_s`` is its rate over all rounds.
    """
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    folders = [locate(target)[1] for target, _ in settings]
    loaded = [load_for_inference(folder, engine, threads) for folder, (_, engine) in zip(folders, settings)]
    timed: list[list[dict]] = [[] for _ in loaded]
    for r in range(rounds):
        for i in _turns(len(loaded), r):
            timed[i].append(time_scores(loaded[i], texts))
    out = []
    for (_, engine), folder, ckpt, rs in zip(settings, folders, loaded, timed):
        enc = json.loads((folder / "encoder" / "config.json").read_text(encoding="utf-8"))
        t = ckpt.config.train
        seconds = sum(len(texts) / x["texts_per_s"] for x in rs)      # unrounded, unlike x["seconds"]
        out.append(rs[-1] | {
            "texts_per_s": round(len(texts) * len(rs) / seconds, 1), "seconds": round(seconds, 2),
            "rounds": rounds, "round_texts_per_s": [x["texts_per_s"] for x in rs],
            "peak_rss_mib": round(_peak_rss_mib()),
            "model": ckpt.config.model.name, "encoder_layers": enc["num_hidden_layers"],
            "precision": {"torch": "bf16" if t.bf16 else "fp32", "onnx": "fp32", "onnx-int8": "int8"}[engine],
            "batch_size": t.eval_batch_size if engine == "torch" else ONNX_BATCH})
    return out


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def ceilings(recipes: list[dict], infer_layers: list[int], infer_models: list[str], texts: list[str],
             infer_texts: list[str], taxonomy: Taxonomy, encoder: str, train_precisions: list[str],
             infer_precisions: list[str], batch_size: int = 32, steps: int = 12, epochs: int = 6,
             infer_batch: int = 128, threads: int = 0, options: dict[str, dict] | None = None) -> list[dict]:
    """What this machine's matrix units allow at most: the sustained rate of the encoder's
    feed-forward product at the training and inference batch shapes (:func:`gemm_rate`), and for
    each training recipe (``recipes``: dicts of ``model``, ``freeze_layers``) and inference depth
    the rate reached if every counted FLOP (:func:`flop_counter`) ran that fast and all else —
    normalisation, activations, dropout, optimizer, tokenisation — took no time.

    A training ceiling counts a step's forward + backward per sample plus the frozen layers'
    one-off cache pass spread over ``epochs``. ``options`` maps model names to their model
    options. Returns figure rows as ``hmtc bench`` prints them.
    """

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    bert = AutoConfig.from_pretrained(resolve_encoder(encoder))
    h, i = bert.hidden_size, bert.intermediate_size
    rows: list[dict] = []
    options = options or {}

    def rate(m: int, dtype: str, shape: str) -> float:
        v = gemm_rate(m, h, i, dtype)
        rows.append({"figure": "gemm_gmacs_per_s", "value": round(v, 1),
                     "settings": {"dtype": dtype, "m": m, "k": h, "n": i, "shape": shape, "threads": threads}})
        return v

    counted = []
    for r in recipes:                   # one setting alive at a time
        ts = _TrainSetting(r["model"], encoder, texts, taxonomy, True, batch_size, steps, 0, threads,
                           r.get("freeze_layers", 0), None, 0.0, False, options.get(r["model"]))
        counted.append((r, *ts.gflops_per_sample(), float(np.mean(ts.lengths))))
        del ts
    if counted:
        tokens = counted[0][3]
        train_rate = {p: rate(round(batch_size * tokens), p, "training batch × feed-forward")
                      for p in train_precisions}
        for r, step, cache, _ in counted:
            for p, v in train_rate.items():
                rows.append({"figure": "train_ceiling_samples_per_s",
                             "value": round(2 * v / (step + cache / epochs), 1),
                             "settings": {"model": r["model"], "freeze_layers": r.get("freeze_layers", 0),
                                          "precision": p, "gflops_per_sample": _sig(step),
                                          "cache_gflops_per_sample": _sig(cache), "epochs": epochs,
                                          "tokens_per_sample": round(tokens, 1), "options": options.get(r["model"], {})}})
    per_text = {(m, n): infer_gflops_per_text(m, encoder, infer_texts, taxonomy, n, infer_batch, options.get(m))
                for m in infer_models for n in infer_layers}
    if per_text:
        tokens = next(iter(per_text.values()))[1]
        infer_rate = {p: rate(round(infer_batch * tokens), p, "inference batch × feed-forward")
                      for p in infer_precisions}
        for (m, n), (gflops, tok) in per_text.items():
            for p, v in infer_rate.items():
                rows.append({"figure": "infer_ceiling_texts_per_s", "value": round(2 * v / gflops, 1),
                             "settings": {"model": m, "encoder_layers": n or "all", "precision": p,
                                          "gflops_per_text": _sig(gflops), "tokens_per_text": round(tok, 1),
                                          "options": options.get(m, {})}})
    return rows


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def stream_predict_memory(model_name: str, encoder: str, texts: list[str], taxonomy: Taxonomy, n_texts: int,
                          engine: str = "torch", chunk: int = 2048, threads: int = 0, bf16: bool = False,
                          options: dict | None = None) -> dict:
    """``hmtc predict``'s path over a JSONL of ``n_texts`` lines (texts repeated): resident memory
    after the first chunk and at the end, and texts/s, so flat memory shows as a small growth."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        with open(src, "w", encoding="utf-8") as fh:
            for i in range(n_texts):
                fh.write(json.dumps({"text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
        ckpt = bench_checkpoint(model_name, encoder, taxonomy, bf16, threads, Path(tmp) / "ckpt", engine,
                                options=options)
        rss_first, n = None, 0
        t0 = time.perf_counter()
        with open(Path(tmp) / "out.jsonl", "w", encoding="utf-8") as out:
            for r in predict_texts(ckpt, read_texts(src), chunk=chunk, bf16=bf16):
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
                n += 1
                if n == chunk:
                    rss_first = _rss_mib()
        dt = time.perf_counter() - t0
        rss_end = _rss_mib()
    return {"texts": n, "texts_per_s": round(n / dt, 1), "rss_after_first_chunk_mib": round(rss_first or rss_end),
            "rss_end_mib": round(rss_end), "growth_mib": round(rss_end - (rss_first or rss_end), 1),
            "chunk": chunk}


def decode_metrics_time(n_samples: int = 100_000, branching: int = 10, seed: int = 0) -> dict:
    """Seconds to decode (best) and compute every metric for a synthetic 10x10x10 tree."""
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
