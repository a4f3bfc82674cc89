"""Speed features keep results: cached frozen layers, exported/quantised inference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from hmtc.batching import tokenize
from hmtc.config import load_config
from hmtc.data.prepare import taxonomy_for
from hmtc.errors import ConfigError
from hmtc.models import create_model
from hmtc.models.batches import collate
from hmtc.train import Trainer

NO_DROPOUT = "model.encoder_options={ hidden_dropout_prob = 0.0, attention_probs_dropout_prob = 0.0 }"
TEXTS = ["cat", "dog bark puppy oak leaf tree rose petal the a is was here there", "oak leaf"]


def test_upper_of_lower_equals_the_full_encoder(run_config):
    cfg = load_config(run_config, ["model.freeze_layers=1"])      # layers = [-1, -2]: both above it
    model = create_model(cfg, taxonomy_for(cfg).compile())
    tok = model.tokenizer
    model.eval()
    ids, mask = collate(tokenize(tok, TEXTS, 32), 0)
    with torch.no_grad():
        full = model(ids, mask).logits
        split = model(None, mask, lower_states=model.encoder.lower(ids, mask)).logits
    assert torch.allclose(full, split, atol=1e-5)


def test_cached_run_trains_like_an_uncached_one(run_config, tmp_path):
    """Without dropout the frozen part is deterministic, so caching it changes nothing but speed."""
    base = ["train.epochs=2", "train.record_dir=''", "model.freeze_layers=1", NO_DROPOUT]
    plain = Trainer(load_config(run_config, base), tmp_path / "plain", quiet=True)
    plain.fit()
    cached = Trainer(load_config(run_config, base + ["train.cache_frozen=true"]), tmp_path / "cached", quiet=True)
    cached.fit()
    assert len(cached.cache_) == len(cached.data_.token_ids["train"])
    a = safetensors.torch.load_file(str(tmp_path / "plain" / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "cached" / "last" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    first = load_config(run_config, base)
    m0 = create_model(first, taxonomy_for(first).compile())
    init = m0.state_dict()
    frozen = [k for k in init if "layer.0." in k or "embeddings" in k]
    assert frozen and all(torch.equal(b[k], init[k]) for k in frozen)            # frozen stays put
    assert any(not torch.equal(b[k], init[k]) for k in b if "layer.1." in k)     # the rest trained


@pytest.mark.parametrize("overrides, message", [
    ([], "freeze_layers > 0"),
    (["model.freeze_layers=2"], "inside the 2 frozen layers"),
    (["model.freeze_layers=1", "model.name='flat'"], "label"),
])
def test_cache_config_errors(run_config, tmp_path, overrides, message):
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''", "train.cache_frozen=true", *overrides])
    if cfg.model.name == "flat":
        cfg = replace(cfg, model=replace(cfg.model, options={"head": "label_token"}))
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, tmp_path / "r", quiet=True).fit()


def straight_and_resumed(run_config, tmp_path, overrides: list[str]) -> tuple[dict, dict]:
    """Final weights of a 2-epoch run straight through and of one stopped after epoch 1 and resumed."""
    Trainer(load_config(run_config, overrides), tmp_path / "straight", quiet=True).fit()
    Trainer(load_config(run_config, overrides), tmp_path / "split", quiet=True, stop_after_epochs=1).fit()
    Trainer(load_config(run_config, overrides), tmp_path / "split", resume=True, quiet=True).fit()
    return tuple(safetensors.torch.load_file(str(tmp_path / run / "last" / "model.safetensors"))
                 for run in ("straight", "split"))


def test_cached_run_with_rdrop_and_resume(run_config, tmp_path):
    overrides = ["train.epochs=2", "train.record_dir=''", "model.freeze_layers=1", "train.cache_frozen=true",
                 "train.rdrop_alpha=1.0", "model.options.dropout=0.1"]
    a, b = straight_and_resumed(run_config, tmp_path, overrides)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(a[next(iter(a))].numpy()).all()


def test_onnx_export_scores_like_torch(run_config, tmp_path):
    pytest.importorskip("onnxruntime")
    from hmtc.loading import load_checkpoint
    from hmtc.export import export_onnx
    from hmtc.loading import load_for_inference
    from hmtc.runtime import onnx_session
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''"])
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    ckpt = tmp_path / "r" / "best"
    paths = export_onnx(ckpt)
    assert [p.name for p in paths] == ["model.onnx", "model.int8.onnx"]
    import onnx
    graphs = [onnx.load(str(p)) for p in paths]
    ops = [{n.op_type for n in g.graph.node} for g in graphs]
    # the towers' convolutions run as (int8) matrix products; residual + LayerNorm stay unfused
    assert all("Conv" not in o and "SkipLayerNormalization" not in o and "LayerNormalization" in o for o in ops)
    # int8 weights carry one scale per output column
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in graphs[1].graph.initializer if t.name.endswith("_scale"))
    # ... and ONNX Runtime's own optimisations do not fuse them back
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnx_session(paths[1], opts)
    assert "SkipLayerNormalization" not in {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}
    texts = TEXTS + ["rose " * 20]          # longer than the export's sample: dynamic length
    ref = load_checkpoint(ckpt).scores(texts)
    onnx = load_for_inference(ckpt, "onnx", threads=1).scores(texts, batch_size=2)
    assert onnx.shape == ref.shape and np.allclose(onnx, ref, atol=1e-4)
    # batches run two at once on one session: the same scores, in the texts' order
    two = load_for_inference(ckpt, "onnx", threads=2)
    assert two.scorer.workers == 2 and np.array_equal(two.scores(texts, batch_size=1),
                                               load_for_inference(ckpt, "onnx", threads=1).scores(texts, batch_size=1))
    int8 = load_for_inference(ckpt, "onnx-int8", threads=1).scores(texts)
    assert np.abs(int8 - ref).max() < 0.5 and np.corrcoef(int8.ravel(), ref.ravel())[0, 1] > 0.95
    # the CLI: eval keeps the torch results apart; predict decodes the onnx scores
    import json

    from typer.testing import CliRunner

    from hmtc.cli import app
    run = CliRunner()
    r = run.invoke(app, ["eval", str(tmp_path / "r"), "--engine", "onnx", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "metrics.onnx.json").is_file() and not (tmp_path / "r" / "metrics.json").exists()
    r = run.invoke(app, ["predict", str(tmp_path / "r"), "cat", "oak leaf", "--engine", "onnx-int8", "--threads", "1"],
                   catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [row["text"] for row in rows] == ["cat", "oak leaf"]
    r = run.invoke(app, ["predict", str(tmp_path / "r"), "cat", "--engine", "onnx-x"])
    assert r.exit_code != 0
    # the bench times the trained checkpoint itself with each engine
    r = run.invoke(app, ["bench", "--checkpoints", str(tmp_path / "r"), "--engines", "torch,onnx-int8", "--skip-train",
                         "--infer-layers", "", "--infer-texts", "40", "--stream-texts", "0", "--metrics-samples", "0",
                         "--threads", "1", "--rounds", "3", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))["figures"]
    assert [(f["settings"]["engine"], f["settings"]["precision"], f["settings"]["encoder_layers"]) for f in rows] == [
        ("torch", "bf16" if cfg.train.bf16 else "fp32", 2), ("onnx-int8", "int8", 2)]
    assert all(f["settings"]["checkpoint"] == str(tmp_path / "r") for f in rows)
    # the rate over three rounds: all texts over the summed time, the rounds' harmonic mean
    for f in rows:
        rates = f["settings"]["round_texts_per_s"]
        assert len(rates) == 3 and f["value"] == pytest.approx(3 / sum(1 / r for r in rates), rel=2e-3)


@pytest.mark.parametrize("kernels,conv_dim", [([3, 5, 7], None), ([1, 3], None), ([2, 4], None), ([3, 5, 7], 6)])
def test_tower_taps_as_one_matrix_product_equal_its_convolutions(kernels, conv_dim):
    from hmtc.models.msml import TextCNNTower
    torch.manual_seed(0)
    tower = TextCNNTower(16, kernels, 8, 12, 0.0, conv_dim).eval()
    assert all(c.in_channels == (conv_dim or 16) for c in tower.convs)
    states = torch.randn(3, 9, 16)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:], mask[2, 2:] = 0, 0
    ref = tower(states, mask)
    tower.matmul_taps = True
    assert torch.allclose(tower(states, mask), ref, atol=1e-6)


def test_fast_dropout_keeps_the_rate_scale_and_gradient():
    from hmtc.models.dropout import fast_dropout
    torch.manual_seed(0)
    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    out = fast_dropout(x, 0.1)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002           # ±3.5 sd of 1e6 Bernoulli draws
    assert torch.allclose(out[kept], torch.tensor(2.0 / (1 - 6554 / 65536)))
    assert abs(out.mean().item() - 2.0) < 0.01                     # unbiased, as torch's dropout
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    rows = kept.float().mean(1)
    assert rows.std() < 0.02 and kept.float().mean(0).std() < 0.02   # no stripes from the 4-way split
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x.detach(), 0.1), out.detach())   # seeded like torch's own
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))      # as torch: all dropped, no NaN


def test_fast_dropout_model_matches_in_eval_and_drops_attention_in_training(run_config):
    from hmtc.models.dropout import ATTENTION, FastDropout
    cfg = load_config(run_config)
    model = create_model(cfg, taxonomy_for(cfg).compile())
    tok = model.tokenizer
    cfg_fast = load_config(run_config, ["model.fast_dropout=true"])
    fast = create_model(cfg_fast, taxonomy_for(cfg).compile())
    fast.load_state_dict(model.state_dict())
    assert fast.encoder.backbone.config._attn_implementation == ATTENTION
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
    assert any(isinstance(m, FastDropout) for m in fast.modules())
    ids, mask = collate(tokenize(tok, TEXTS, 32), 0)                 # padded batch: the mask matters
    model.eval(), fast.eval()
    with torch.no_grad():
        assert torch.allclose(model(ids, mask).logits, fast(ids, mask).logits, atol=1e-5)
    # only attention dropout on: two training passes differ, so it is drawn (the eager path)
    only_attn = ["model.fast_dropout=true",
                 "model.encoder_options={ hidden_dropout_prob = 0.0, attention_probs_dropout_prob = 0.5 }"]
    c = load_config(run_config, only_attn)
    m = create_model(c, taxonomy_for(c).compile())
    m.train()
    with torch.no_grad():
        assert not torch.allclose(m(ids, mask).logits, m(ids, mask).logits)
    c = load_config(run_config, [only_attn[0], NO_DROPOUT])
    m = create_model(c, taxonomy_for(c).compile())
    assert m.encoder.backbone.config._attn_implementation == "sdpa"      # no attention dropout to draw
    m.train()
    with torch.no_grad():
        assert torch.allclose(m(ids, mask).logits, m(ids, mask).logits)


def test_fast_dropout_run_trains_resumes_and_loads(run_config, tmp_path):
    from hmtc.loading import load_checkpoint
    overrides = ["train.epochs=2", "train.record_dir=''", "model.fast_dropout=true", "model.options.dropout=0.1"]
    a, b = straight_and_resumed(run_config, tmp_path, overrides)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_checkpoint(tmp_path / "straight" / "best")      # a plain model: sdpa/eager, torch dropout
    assert ckpt.scores(TEXTS).shape == (len(TEXTS), ckpt.index.n_nodes)


def test_distillation_loss_values_and_gradient():
    from hmtc.losses import distillation_loss
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], requires_grad=True)
    t = torch.tensor([[1.0, 1.0, -0.5], [0.0, 2.0, -4.0]])
    for temp in (1.0, 2.0):
        p, q = torch.sigmoid(t / temp), torch.sigmoid(s.detach() / temp)
        by_hand = -(p * q.log() + (1 - p) * (1 - q).log()).sum(1).mean() * temp ** 2
        assert torch.allclose(distillation_loss(s, t, temp), by_hand, atol=1e-6)
    same = s.detach().clone().requires_grad_(True)
    distillation_loss(same, s.detach(), 2.0).backward()
    assert torch.allclose(same.grad, torch.zeros_like(same.grad), atol=1e-7)     # nothing to learn


def test_distilled_run_follows_its_teacher(run_config, tmp_path):
    base = ["train.epochs=3", "train.record_dir=''", NO_DROPOUT]
    # a teacher whose logits are not the gold labels: its weights never move (learning rates 0)
    Trainer(load_config(run_config, ["train.epochs=1", "train.record_dir=''", "train.lr=0.0", "train.head_lr=0.0"]),
            tmp_path / "teacher", quiet=True).fit()
    teacher = f"train.teacher='{tmp_path / 'teacher'}'"
    runs = {}
    for name, extra in (("plain", []), ("alpha0", [teacher, "train.distill_alpha=0.0"]),
                        ("alpha1", [teacher, "train.distill_alpha=1.0", "train.distill_temperature=2.0"])):
        tr = Trainer(load_config(run_config, base + extra), tmp_path / name, quiet=True)
        tr.fit()
        runs[name] = tr
    w = {k: safetensors.torch.load_file(str(tmp_path / k / "last" / "model.safetensors")) for k in runs}
    assert all(torch.equal(w["plain"][k], w["alpha0"][k]) for k in w["plain"])   # α = 0: the plain run
    target = runs["alpha1"].teacher_
    assert target.shape == (len(runs["alpha1"].data_.texts["train"]), runs["alpha1"].data_.index.n_nodes)
    from hmtc.loading import load_checkpoint
    texts = runs["alpha1"].data_.texts["train"]
    gap = {k: float(np.abs(load_checkpoint(tmp_path / k / "last").scores(texts) - target.numpy()).mean())
           for k in ("plain", "alpha1")}
    assert gap["alpha1"] < 0.5 * gap["plain"], gap


@pytest.mark.parametrize("extra, message", [
    (["train.rdrop_alpha=1.0"], "R-Drop"),
    (["train.distill_alpha=1.5"], "distill_alpha"),
    (["data.taxonomy='{other}'"], "nodes differ"),
])
def test_distillation_config_errors(run_config, tmp_path, extra, message):
    from conftest import TAXONOMY
    Trainer(load_config(run_config, ["train.epochs=1", "train.record_dir=''"]), tmp_path / "teacher", quiet=True).fit()
    other = tmp_path / "other.tax"
    other.write_text(TAXONOMY + "  fungus\n", encoding="utf-8")
    extra = [x.format(other=other) for x in extra]
    with pytest.raises(ConfigError, match=message):
        cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''",
                                       f"train.teacher='{tmp_path / 'teacher'}'", *extra])
        Trainer(cfg, tmp_path / "student", quiet=True).fit()


def test_bench_prints_every_figure(tiny_encoder, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from hmtc.cli import app
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr("hmtc.bench.MAX_LENGTH", 32)        # the tiny BERT has 64 positions
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--encoder", str(tiny_encoder), "--steps", "2", "--rounds", "2",
                                 "--freeze-layers", "0,1", "--dropout", "torch,fast",
                                 "--engines", "torch,onnx-int8", "--infer-layers", "0,1", "--train-texts", "400", "--infer-texts", "64", "--stream-texts", "300",
                                 "--metrics-samples", "500", "--threads", "1", "--json", "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    figures = json.loads(out.read_text())["figures"]
    names = [f["figure"] for f in figures]
    assert names.count("train_samples_per_s") == 8 and names.count("train_samples_per_s_effective") == 4
    assert names.count("msml_over_flat_time_per_sample") == 4
    train = [f for f in figures if f["figure"] == "train_samples_per_s"]
    assert {f["settings"]["dropout"] for f in train} == {"torch", "fast"}
    assert all(len(f["settings"]["round_samples_per_s"]) == 2 for f in train)
    ratios = [f for f in figures if f["figure"] == "msml_over_flat_time_per_sample"]
    rate = {(f["settings"]["model"], f["settings"]["dropout"], f["settings"]["freeze_layers"],
             f["settings"]["precision"]): f["value"] for f in train}
    for f in ratios:        # MSML's time per sample over flat's: flat's rate over MSML's
        s = f["settings"]
        key = (s["dropout"], s["freeze_layers"], s["precision"])
        assert f["value"] == pytest.approx(rate[("flat", *key)] / rate[("msml", *key)], rel=0.01)
    infer = [f for f in figures if f["figure"] == "infer_texts_per_s"]
    assert {(f["settings"]["engine"], f["settings"]["encoder_layers"]) for f in infer} == {
        ("torch", "all"), ("torch", 1), ("onnx-int8", "all"), ("onnx-int8", 1)}
    from hmtc.bench import bench_checkpoint
    from hmtc.taxonomy import Taxonomy
    tax = Taxonomy.load(Path(__file__).resolve().parents[1] / "taxonomies" / "duee.tax")
    shallow = bench_checkpoint("msml", str(tiny_encoder), tax, False, 1, tmp_path / "shallow", layers=1)
    assert len(shallow.model.encoder.backbone.encoder.layer) == 1
    stream = next(f for f in figures if f["figure"] == "predict_stream_rss_growth_mib")
    assert stream["settings"]["jsonl_lines"] == 300


def test_bench_reads_the_dataset_it_is_given(tiny_dataset, monkeypatch):
    """hmtc bench times any dataset's texts under its taxonomy; only DuEE has stand-ins."""
    from hmtc.bench import bench_inputs
    from hmtc.errors import DataError
    texts, tax = bench_inputs(str(tiny_dataset), 10)
    assert len(texts) == 10 and "plant-rose" in tax
    monkeypatch.setenv("HMTC_DATA", "/nonexistent")
    texts, tax = bench_inputs("duee", 50)
    assert len(texts) == 50 and len(tax.nodes) == 74                # DuEE's taxonomy, stand-in texts
    with pytest.raises(DataError):
        bench_inputs("goemotions", 10)


def test_bench_batches_follow_the_length_profile():
    import numpy as np

    from hmtc.bench import representative_batches
    rng = np.random.default_rng(3)
    lengths = np.clip(rng.lognormal(3.5, 0.6, 12_000).astype(int), 4, 128)     # long right tail
    batches, warm = representative_batches(lengths, 32, steps=20, warmup=3)
    assert warm == 3 and len(batches) == 23
    timed = np.concatenate(batches[warm:])
    assert abs(lengths[timed].mean() / lengths.mean() - 1) < 0.05
    again, _ = representative_batches(lengths, 32, steps=20, warmup=3)
    assert all((a == b).all() for a, b in zip(batches, again))


def test_flop_counter_counts_every_product_of_a_bert_layer(tiny_encoder):
    from transformers import AutoModel

    from hmtc.bench import flop_counter
    bert = AutoModel.from_pretrained(tiny_encoder, add_pooling_layer=False).eval()
    cfg = bert.config
    h, i, n_layers, t = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, 10
    ids = torch.randint(5, 20, (3, t))
    with flop_counter() as fc, torch.no_grad():
        bert(input_ids=ids, attention_mask=torch.ones_like(ids))
    # per layer and token: Q, K, V, output (4 h²) and the feed-forward (2 h i) products, plus the
    # attention scores and their weighted sum (2 t h); 2 FLOP per multiply-add
    assert fc.get_total_flops() == 2 * 3 * t * n_layers * (4 * h * h + 2 * h * i + 2 * t * h)


def test_gemm_rate_counts_multiply_adds_per_second(monkeypatch):
    import hmtc.bench as bench
    clock = iter(range(1000))                           # every reading 1 s after the last
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))   # bench's own clock only
    # start at 0; at 1 and 2 s a product each; at 3 s the 2.5 s are over: 2 products in 3 s
    assert bench.gemm_rate(64, 32, 48, "bf16", seconds=2.5) == pytest.approx(64 * 32 * 48 * 2 / 3 / 1e9)
    for dtype in ("fp32", "int8"):                      # each precision runs its own product
        assert bench.gemm_rate(64, 32, 48, dtype, seconds=1.5) == pytest.approx(64 * 32 * 48 / 2 / 1e9)
    with pytest.raises(KeyError):
        bench.gemm_rate(64, 32, 48, "fp8", seconds=0.05)


def test_ceilings_follow_the_counted_flops(tiny_encoder, monkeypatch):
    from hmtc.bench import ceilings, duee_texts
    from hmtc.taxonomy import Taxonomy
    monkeypatch.setattr("hmtc.bench.MAX_LENGTH", 32)        # the tiny BERT has 64 positions
    tax = Taxonomy.load(Path(__file__).resolve().parents[1] / "taxonomies" / "duee.tax")
    texts = duee_texts(200)
    rows = ceilings([{"model": "msml", "freeze_layers": 0}, {"model": "msml", "freeze_layers": 1}], [0, 1],
                    ["msml"], texts, texts[:64], tax, str(tiny_encoder), ["bf16"], ["bf16", "int8"],
                    batch_size=8, steps=2, epochs=6, threads=1)
    gemm = {(r["settings"]["shape"].split()[0], r["settings"]["dtype"]): r["value"]
            for r in rows if r["figure"] == "gemm_gmacs_per_s"}
    assert set(gemm) == {("training", "bf16"), ("inference", "bf16"), ("inference", "int8")}
    train = {r["settings"]["freeze_layers"]: r for r in rows if r["figure"] == "train_ceiling_samples_per_s"}
    assert train[0]["settings"]["cache_gflops_per_sample"] == 0 < train[1]["settings"]["cache_gflops_per_sample"]
    assert train[1]["settings"]["gflops_per_sample"] < train[0]["settings"]["gflops_per_sample"]
    infer = {(r["settings"]["encoder_layers"], r["settings"]["precision"]): r for r in rows
             if r["figure"] == "infer_ceiling_texts_per_s"}
    assert set(infer) == {("all", "bf16"), ("all", "int8"), (1, "bf16"), (1, "int8")}
    # a ceiling bounds what runs: the tiny model scored for real never beats it (units slip by 1e3)
    from hmtc.bench import infer_throughput
    measured = infer_throughput("msml", str(tiny_encoder), texts[:64], tax, True, batch_size=8, threads=1)
    assert measured["texts_per_s"] < infer[("all", "bf16")]["value"]
    assert infer[(1, "bf16")]["settings"]["gflops_per_text"] < infer[("all", "bf16")]["settings"]["gflops_per_text"]
    # a training step (all layers train) costs about three forward passes: forward, and the
    # backward's products for the inputs' and the weights' gradients
    ratio = train[0]["settings"]["gflops_per_sample"] / infer[("all", "bf16")]["settings"]["gflops_per_text"]
    assert 2.5 < ratio < 3.1


def test_bench_prints_ceilings_without_timing(tiny_encoder, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from hmtc.cli import app
    monkeypatch.setattr("hmtc.bench.MAX_LENGTH", 32)
    r = CliRunner().invoke(app, ["bench", "--encoder", str(tiny_encoder), "--skip-train", "--skip-infer", "--ceilings",
                                 "--models", "msml", "--freeze-layers", "0", "--infer-layers", "1",
                                 "--engines", "torch,onnx,onnx-int8", "--steps", "2", "--train-texts", "200",
                                 "--infer-texts", "32", "--stream-texts", "0", "--metrics-samples", "0",
                                 "--threads", "1", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    figures = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))["figures"]
    assert {f["figure"] for f in figures} == {"gemm_gmacs_per_s", "train_ceiling_samples_per_s", "infer_ceiling_texts_per_s"}
    assert {f["settings"]["precision"] for f in figures if f["figure"] == "infer_ceiling_texts_per_s"} == {"bf16", "fp32", "int8"}
    # --msml-options reach every MSML the bench builds: narrower convolutions count fewer FLOPs
    r = CliRunner().invoke(app, ["bench", "--encoder", str(tiny_encoder), "--skip-train", "--skip-infer", "--ceilings",
                                 "--models", "msml", "--freeze-layers", "0", "--infer-layers", "1", "--engines", "torch",
                                 "--steps", "2", "--train-texts", "200", "--infer-texts", "32", "--stream-texts", "0",
                                 "--metrics-samples", "0", "--threads", "1", "--json",
                                 "--msml-options", '{"conv_dim": 4}'], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    narrow = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))["figures"]

    def gflops(rows, figure, key):
        return next(f["settings"][key] for f in rows if f["figure"] == figure)
    assert gflops(narrow, "train_ceiling_samples_per_s", "gflops_per_sample") < \
        gflops(figures, "train_ceiling_samples_per_s", "gflops_per_sample")
    assert gflops(narrow, "infer_ceiling_texts_per_s", "gflops_per_text") < \
        gflops(figures, "infer_ceiling_texts_per_s", "gflops_per_text")
    assert gflops(narrow, "train_ceiling_samples_per_s", "options") == {"conv_dim": 4}
    r = CliRunner().invoke(app, ["bench", "--engines", "torch,onnx-x", "--skip-train", "--skip-infer"])
    assert r.exit_code != 0 and "onnx-x" in r.output
    r = CliRunner().invoke(app, ["bench", "--msml-options", "conv_dim=4", "--skip-train", "--skip-infer"])
    assert r.exit_code != 0 and "--msml-options" in r.output and "JSON" in r.output


@pytest.mark.parametrize("name, options", [("local", {"head": "mean", "loss": "bce"}),
                                           ("msml", {"conditional": True, "loss": "bce"})])
def test_path_probability_models_export_to_onnx(run_config, tmp_path, name, options):
    """The local classifier's and conditional MSML's path logits (expm1, per-level joins) export,
    and score a batch of another size than the traced one as torch does."""
    pytest.importorskip("onnxruntime")
    from hmtc.export import export_onnx
    from hmtc.loading import load_for_inference
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''"])
    cfg = replace(cfg, model=replace(cfg.model, name=name, options=(cfg.model.options if name == "msml" else {}) | options))
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    ckpt = tmp_path / "r" / "best"
    export_onnx(ckpt, int8=False)
    texts = ["cat meow here", "oak leaf tree today", "dog", "a tree"]
    ref = load_for_inference(ckpt, "torch").scores(texts)
    got = load_for_inference(ckpt, "onnx", threads=1).scores(texts, batch_size=3)
    assert got.shape == ref.shape and np.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("overrides", [["train.bf16=false"], ["train.bf16=true"],
                                       ["data.max_length=200", "model.windows=true", "model.window_length=8",
                                        "model.window_stride=3"]])
def test_cached_dev_pass_scores_as_the_uncached_one(run_config, tmp_path, overrides):
    """A cached run scores dev from the frozen part's states computed once: bitwise the scores of
    the full forward (so it picks the same best epoch), windows of long texts included."""
    from hmtc.loading import load_checkpoint
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''", "model.freeze_layers=1",
                                   "train.cache_frozen=true", *overrides])
    bf16 = cfg.train.bf16
    t = Trainer(cfg, tmp_path / "r", quiet=True)
    t.fit()
    order, states = t.dev_states_
    ids = t.data_.token_ids["dev"]
    assert len(states) == len(ids) > 1 and sorted(order.tolist()) == list(range(len(ids)))
    if cfg.model.windows:
        assert max(len(x) for x in ids) > 8
    model = load_checkpoint(tmp_path / "r" / "best").model
    full = model.score_ids(ids, cfg.train.eval_batch_size, bf16)
    from_states = model.score_states(states, cfg.train.eval_batch_size, bf16)
    assert np.array_equal(full[order], from_states)
