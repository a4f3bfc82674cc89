"""hmtc migrate, train.init_from and HierarchicalClassifier.update: every edit kind lands each
slice where the ids say, untouched nodes score bit for bit as before, a bad taxonomy or map is one
error with nothing written, and a migrated run fine-tunes and predicts its new nodes."""

from __future__ import annotations

from dataclasses import replace
import json

import numpy as np
import pytest
import torch

from hmtc.checkpoint import read_support
from hmtc.loading import load_checkpoint
from hmtc.migrate import migrate
from hmtc.taxonomy import Taxonomy
from hmtc.testing import TAXONOMY

EDITED = """ROOT
  animal
    animal-cat "kitty"
    animal-dog "dog"
      dog-puppy "puppy"
      dog-bark "bark"
    plant-tree "tree"
  plant
    plant-flower "flower"
    plant-oak "oak"
"""


def _texts():
    from conftest import make_texts
    return [r["text"] for r in make_texts(40, seed=9)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_encoder, tiny_dataset):
    from hmtc.config import load_config
    from hmtc.evaluate import evaluate_run
    from hmtc.testing import tiny_config_text
    from hmtc.train import Trainer
    tmp = tmp_path_factory.mktemp("migrate")
    cfg_path = tmp / "c.toml"
    cfg_path.write_text(tiny_config_text(tiny_dataset, tiny_encoder, tmp), encoding="utf-8")
    cfg = load_config(cfg_path, ["train.epochs=2", "train.record_dir=''", "decode.per_label=true"])
    Trainer(cfg, tmp / "r", quiet=True).fit()
    evaluate_run(tmp / "r", quiet=True)
    return tmp / "r"


def _slices(model, index, family):
    """{node id: its slice of ``family``} of a model over the compiled taxonomy ``index``."""
    sd, ids = model.state_dict(), index.ids
    out = {}
    for r in model.node_rows():
        if r.family == family:
            for k, col in enumerate(r.nodes):
                out[ids[col]] = sd[r.param].select(r.axis, k)
    return out


def test_training_stores_each_nodes_support(run):
    support = read_support(run / "best")
    ckpt = load_checkpoint(run / "best")
    assert support is not None and len(support) == ckpt.index.n_nodes
    y = json.loads((run / "best" / "labels.json").read_text(encoding="utf-8"))
    assert y["support"][ckpt.index.id_to_index["animal"]] >= y["support"][ckpt.index.id_to_index["animal-cat"]] > 0


def test_every_edit_kind_lands_where_the_ids_say(run, tmp_path):
    old = load_checkpoint(run / "best")
    new_tax = Taxonomy.parse(EDITED)
    m = migrate(old, new_tax, {"plant-rose": "plant-flower"})
    assert m.kinds == {"animal": "kept", "plant": "kept", "animal-cat": "kept", "animal-dog": "kept",
                       "dog-puppy": "split", "dog-bark": "split", "plant-tree": "moved",
                       "plant-flower": "renamed", "plant-oak": "new"}
    ni = new_tax.compile()
    w0, w1 = _slices(old.model, old.index, "classifier.weight"), _slices(m.model, ni, "classifier.weight")
    b0, b1 = _slices(old.model, old.index, "classifier.bias"), _slices(m.model, ni, "classifier.bias")
    for node in ("animal", "plant", "animal-cat", "animal-dog", "plant-tree"):
        assert torch.equal(w0[node], w1[node]) and torch.equal(b0[node], b1[node]), node
    assert torch.equal(w0["plant-rose"], w1["plant-flower"])          # a renamed id keeps its row
    assert "plant-rose" not in w1
    # a split leaf's children: the mean of its row and their name rows; its bias
    names = m.model.name_rows(new_tax.compile())
    for child in ("dog-puppy", "dog-bark"):
        assert torch.equal(b1[child], b0["animal-dog"])
        assert not torch.equal(w1[child], w0["animal-dog"])
    assert not torch.equal(w1["dog-puppy"], w1["dog-bark"])
    # a new node: its name's direction at the carried rows' mean norm, the carried biases' mean
    level3 = [r for r in m.model.node_rows() if r.param.endswith("weight") and "classifiers" in r.param]
    oak_param = next(r for r in level3 if new_tax.compile().id_to_index["plant-oak"] in r.nodes)
    k = list(oak_param.nodes).index(new_tax.compile().id_to_index["plant-oak"])
    direction = names[oak_param.param][k]
    assert torch.allclose(w1["plant-oak"] / w1["plant-oak"].norm(), direction / direction.norm(), atol=1e-5)
    # label feedback: level 1's columns carried; level 2, which fed nothing before, feeds nothing yet
    fb = _slices(m.model, ni, "feedback")
    assert torch.equal(_slices(old.model, old.index, "feedback")["animal"], fb["animal"])
    assert float(fb["plant-oak"].abs().sum()) == float(fb["animal-cat"].abs().sum()) == 0.0
    # thresholds follow the ids; the new node takes the global one
    col0, col1 = old.index.id_to_index, new_tax.compile().id_to_index
    t0, t1 = old.decode["per_label_thresholds"], m.decode["per_label_thresholds"]
    assert t1[col1["plant-flower"]] == t0[col0["plant-rose"]]
    assert t1[col1["dog-puppy"]] == t0[col0["animal-dog"]]
    assert t1[col1["plant-oak"]] == old.decode["threshold"]
    assert len(m.decode["temperatures"]) == 3
    assert any(line.startswith("~ animal-cat  name 'cat' -> 'kitty'") for line in m.changes)
    assert "~ plant-flower  renamed from plant-rose" in m.changes
    assert any(line.startswith("~ plant-tree  moved") for line in m.changes)


def test_a_new_node_with_examples_starts_from_them(run):
    """Imprinting: the new node's row points along the centred mean of the features its classifier
    sees for its examples (every example text centring), at the carried rows' mean norm; a new
    node without examples keeps its name; the migration says which."""
    from hmtc.models.label_init import example_directions
    old = load_checkpoint(run / "best")
    tax = Taxonomy.parse(EDITED)
    ni = tax.compile()
    texts = ["an oak in the park", "oak leaves and acorns", "a cat on the mat", "a tall tree"]
    labels = [["plant-oak"], ["plant-oak"], ["animal-cat"], ["plant-tree"]]
    m = migrate(old, tax, {"plant-rose": "plant-flower"}, examples=(texts, labels))
    plain = migrate(old, tax, {"plant-rose": "plant-flower"})
    oak, col = "plant-oak", ni.id_to_index["plant-oak"]
    row = next(r for r in m.model.node_rows() if r.family == "classifier.weight" and col in r.nodes)
    k = list(row.nodes).index(col)
    want = example_directions(plain.model, texts, ni.indicator(labels), {col})[row.param][k]
    got = _slices(m.model, ni, "classifier.weight")[oak]
    assert torch.allclose(got / got.norm(), want, atol=1e-5)
    assert not torch.allclose(got, _slices(plain.model, ni, "classifier.weight")[oak], atol=1e-3)
    # everything else is as without examples: kept rows and the split children
    for node in ("animal", "animal-cat", "plant-tree", "dog-puppy"):
        assert torch.equal(_slices(m.model, ni, "classifier.weight")[node],
                           _slices(plain.model, ni, "classifier.weight")[node]), node
    assert any(line.startswith("+ plant-oak  new under plant: from its 2 examples") for line in m.changes)
    assert any(line.startswith("+ plant-oak  new under plant: from its name") for line in plain.changes)


def test_merge_mixes_by_training_support(run):
    old = load_checkpoint(run / "best")
    tax = old.taxonomy.merge("plant-rose", "plant-tree")
    m = migrate(old, tax, {"plant-rose": "plant-tree"})
    assert m.kinds["plant-tree"] == "merged"
    support = read_support(run / "best")
    n_rose, n_tree = (int(support[old.index.id_to_index[x]]) for x in ("plant-rose", "plant-tree"))
    w0 = _slices(old.model, old.index, "classifier.weight")
    w1 = _slices(m.model, tax.compile(), "classifier.weight")
    want = (w0["plant-rose"].double() * n_rose + w0["plant-tree"].double() * n_tree) / (n_rose + n_tree)
    assert torch.allclose(w1["plant-tree"].double(), want, atol=1e-6)
    assert m.support[tax.compile().id_to_index["plant-tree"]] == n_rose + n_tree
    assert any(f"plant-rose ({n_rose} texts)" in line for line in m.changes)


def test_untouched_nodes_score_bit_for_bit(run, tmp_path, invoke):
    """Names changed, a node moved to another parent of its level, one added: every node the edit
    did not touch scores exactly as before."""
    edited = tmp_path / "e.tax"
    edited.write_text("ROOT\n  animal\n    animal-cat \"kitty\"\n    animal-dog \"dog\"\n    plant-rose \"rose\"\n"
                      "  plant\n    plant-tree \"tree\"\n    plant-oak \"oak\"\n", encoding="utf-8")
    r = invoke("migrate", run, edited, "-o", tmp_path / "r2")
    assert "+ plant-oak  new under plant: from its name" in r.output
    a, b = load_checkpoint(run / "best"), load_checkpoint(tmp_path / "r2" / "best")
    texts = _texts()
    sa, sb = a.scores(texts), b.scores(texts)
    for node in ("animal", "plant", "animal-cat", "animal-dog", "plant-tree"):
        assert np.array_equal(sa[:, a.index.id_to_index[node]], sb[:, b.index.id_to_index[node]]), node
    out = invoke("predict", tmp_path / "r2", "oak tree leaf").output
    assert "plant" in out


@pytest.mark.parametrize("tax, args, why", [
    (None, [], "file not found"),
    ("ROOT\n  animal\n   bad-indent\n", [], "e.tax:3"),
    (EDITED, ["--map", "nope=plant-oak"], "'nope' is not a node of the run's taxonomy"),
    (EDITED, ["--map", "plant-rose=nowhere"], "'nowhere' is not a node of the new taxonomy"),
    (EDITED, ["--map", "animal-cat=plant-oak"], "still in the new taxonomy"),
    (EDITED, ["--map", "plant-rose"], "write OLD=NEW"),
])
def test_a_bad_taxonomy_or_map_is_one_error_and_nothing_written(run, tmp_path, invoke, tax, args, why):
    path = tmp_path / "e.tax"
    if tax is not None:
        path.write_text(tax, encoding="utf-8")
    r = invoke("migrate", run, path, "-o", tmp_path / "out", *args, code=2)
    assert why in r.output and r.output.count("error:") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "e.tax"] == []


def test_migrate_refuses_an_existing_folder_and_a_model_that_cannot_follow(run, tmp_path, invoke):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x", encoding="utf-8")
    r = invoke("migrate", run, run / "best" / "taxonomy.tax", "-o", tmp_path / "taken", code=2)
    assert "exists" in r.output and (tmp_path / "taken" / "keep.txt").read_text(encoding="utf-8") == "x"


def test_migrate_examples_from_a_file(run, tmp_path, invoke):
    """--examples: new nodes start from the file's texts; a label the new taxonomy lacks is one
    error naming the line, with nothing written."""
    tax = tmp_path / "e.tax"
    tax.write_text(EDITED, encoding="utf-8")
    ex = tmp_path / "ex.jsonl"
    ex.write_text('{"text": "an oak", "labels": ["plant-oak"]}\n{"text": "oak acorn", "labels": ["plant-oak"]}\n'
                  '{"text": "a cat", "labels": ["animal-cat"]}\n', encoding="utf-8")
    r = invoke("migrate", run, tax, "--map", "plant-rose=plant-flower", "--examples", ex, "-o", tmp_path / "m")
    assert "+ plant-oak  new under plant: from its 2 examples" in r.output and (tmp_path / "m").is_dir()
    ex.write_text('{"text": "an oak", "labels": ["plant-oak"]}\n{"text": "x", "labels": ["plant-elm"]}\n',
                  encoding="utf-8")
    r = invoke("migrate", run, tax, "--map", "plant-rose=plant-flower", "--examples", ex, "-o", tmp_path / "m2", code=2)
    assert "ex.jsonl:2" in r.output and "plant-elm" in r.output and not (tmp_path / "m2").exists()


def test_init_from_starts_from_the_migrated_weights(run, tmp_path, invoke):
    edited = tmp_path / "e.tax"           # every label of the tiny dataset, one node more
    edited.write_text(TAXONOMY + "    plant-oak \"oak\"\n", encoding="utf-8")
    invoke("migrate", run, edited, "-o", tmp_path / "r2")
    cfg = json.loads((tmp_path / "r2" / "config.json").read_text(encoding="utf-8"))
    assert cfg["data"]["taxonomy"] == str((tmp_path / "r2" / "taxonomy.tax").resolve())
    common = ["--set", "train.epochs=1", "--set", "train.record_dir=''", "--no-eval"]
    r = invoke("train", run.parent / "c.toml", "--init", tmp_path / "r2", "--out", tmp_path / "bad", *common, code=2)
    assert "its taxonomy is not this run's" in r.output and not (tmp_path / "bad" / "best").exists()
    r = invoke("train", run.parent / "c.toml", "--init", tmp_path / "r2", "--out", tmp_path / "bad2", *common,
               "--set", f"data.taxonomy='{edited}'", "--set", "model.options.label_feedback=false", code=2)
    assert "its model differs from this run's in model.options" in r.output   # it trained with label feedback
    invoke("train", run.parent / "c.toml", "--init", tmp_path / "r2", "--out", tmp_path / "r3", *common,
           "--set", f"data.taxonomy='{edited}'", "--set", "train.lr=0.0", "--set", "train.head_lr=0.0", "--set", "train.ema=0.0")
    a, b = load_checkpoint(tmp_path / "r2" / "best"), load_checkpoint(tmp_path / "r3" / "best")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # what trains is the new run's choice: the lower layer and the embeddings held (their states
    # cached), the layer above and the head learn
    layers = len(a.model.encoder.blocks())
    invoke("train", run.parent / "c.toml", "--init", tmp_path / "r2", "--out", tmp_path / "r4", *common,
           "--set", f"data.taxonomy='{edited}'", "--set", "model.freeze_layers=1",
           "--set", "train.cache_frozen=true", "--set", "train.lr=0.01", "--set", "train.ema=0.0")
    sc = load_checkpoint(tmp_path / "r4" / "best").model.state_dict()
    held = [k for k in sa if k.startswith(("encoder.backbone.embeddings.", "encoder.backbone.encoder.layer.0."))]
    upper = [k for k in sa if k.startswith(f"encoder.backbone.encoder.layer.{layers - 1}.")]
    assert held and all(torch.equal(sa[k], sc[k]) for k in held)
    assert upper and any(not torch.equal(sa[k], sc[k]) for k in upper)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if not k.startswith("encoder."))
    r = invoke("train", run.parent / "c.toml", "--init", tmp_path / "r2", "--out", tmp_path / "bad3", *common,
               "--set", f"data.taxonomy='{edited}'", "--set", f"model.freeze_layers={layers + 1}", code=2)
    assert f"exceeds the encoder's {layers} layers" in r.output


def test_estimator_update_learns_a_new_leaf(tiny_encoder, tmp_path):
    from conftest import make_texts
    from hmtc import HierarchicalClassifier
    rows = make_texts(120, 1)
    old = [r for r in rows if "plant-rose" not in r["labels"]]
    full = Taxonomy.parse(TAXONOMY)
    clf = HierarchicalClassifier("msml", str(tiny_encoder), epochs=2, seed=1,
                                 config={"data": {"max_length": 32}, "train": {"lr": 1e-3}},
                                 taxonomy=full.remove("plant-rose"))
    clf.fit([r["text"] for r in old], [r["labels"] for r in old])
    assert "plant-rose" not in clf.classes_
    before = clf.predict_scores(["cat meow kitten"])
    clf.update([r["text"] for r in rows[:60]], [r["labels"] for r in rows[:60]], taxonomy=full, epochs=3)
    assert "plant-rose" in clf.classes_ and clf.migration_ == ["+ plant-rose  new under plant: from its name"]
    assert clf.config_.train.init_from
    assert not np.array_equal(before, clf.predict_scores(["cat meow kitten"])[:, :before.shape[1]])
    got = clf.predict(["rose petal thorn rose", "cat meow kitten"])
    assert "plant-rose" in got[0] and "animal-cat" in got[1]
    again = HierarchicalClassifier("msml", str(tiny_encoder), epochs=1, seed=1, config={"data": {"max_length": 32}},
                                   taxonomy=full.remove("plant-rose")).fit([r["text"] for r in old], [r["labels"] for r in old])
    again.update([r["text"] for r in rows[:60]], [r["labels"] for r in rows[:60]], taxonomy=full, epochs=1,
                 from_examples=True)
    assert again.migration_ == ["+ plant-rose  new under plant: from its 23 examples"]


def test_proto_prototypes_follow_and_new_nodes_start_from_their_passages(tiny_encoder, tiny_dataset, tmp_path):
    from hmtc.config import load_config
    from hmtc.testing import tiny_config_text
    from hmtc.train import Trainer
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(tiny_config_text(tiny_dataset, tiny_encoder, tmp_path), encoding="utf-8")
    cfg = load_config(cfg_path, ["train.epochs=1", "train.record_dir=''", "model.name='proto'", "model.layers=[-1]"])
    cfg = replace(cfg, model=replace(cfg.model, options={"query_prefix": "", "passage_prefix": ""}))
    Trainer(cfg, tmp_path / "p", quiet=True).fit()
    old = load_checkpoint(tmp_path / "p" / "best")
    tax = old.taxonomy.add("plant-oak", "plant", name="oak")
    m = migrate(old, tax)
    p0, p1 = _slices(old.model, old.index, "prototype"), _slices(m.model, tax.compile(), "prototype")
    assert all(torch.equal(p0[n], p1[n]) for n in p0)
    name = m.model.name_rows(tax.compile())["prototypes"][tax.compile().id_to_index["plant-oak"]]
    assert torch.allclose(p1["plant-oak"] / p1["plant-oak"].norm(), name, atol=1e-5)
