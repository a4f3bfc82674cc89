"""hmtc suggest: the uncertainty by hand, a queue that is deterministic, never repeats a text and
spreads out, random draws per seed, and Label Studio tasks and config that carry the taxonomy's ids."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hmtc.decode import decode
from hmtc.suggest import k_center, uncertainty
from hmtc.taxonomy import Taxonomy


def test_uncertainty_counts_only_decisions_under_predicted_parents():
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n    b1\n").compile()
    col = index.id_to_index
    z = np.full((2, index.n_nodes), -4.0)
    z[0, [col["a"], col["a1"]]] = [3.0, 0.1]      # a sure, a1 a coin flip under it
    z[1, [col["a"], col["b1"]]] = [3.0, 0.05]     # b1 a coin flip, but under a rejected b
    keep = decode(z, index, "top-down", 0.0)
    u, node, prob = uncertainty(z, keep, np.zeros(index.n_nodes), [1.0, 1.0], index)
    assert index.ids[node[0]] == "a1"
    assert index.ids[node[1]] == "a"              # never b1, a coin flip under a rejected b
    share = prob.mean(0)
    w = np.minimum(10.0, np.sqrt(share.max() / np.maximum(share, 0.5)))
    assert u[0] == pytest.approx(w[col["a1"]] * np.exp(-0.1))
    assert np.allclose(prob, 1 / (1 + np.exp(-z)))


def test_labelled_weights_follow_the_support():
    """weights = "labelled": w_j = min(10, sqrt(max n / max(n_j, 1))), so the same coin flip counts
    more at a node with fewer labelled texts, and a node no text carries is capped at 10."""
    index = Taxonomy.parse("ROOT\n  a\n    a1\n    a2\n  b\n").compile()
    col = index.id_to_index
    z = np.full((1, index.n_nodes), -4.0)
    z[0, [col["a"], col["a1"], col["a2"]]] = [3.0, 0.1, 0.2]
    keep = decode(z, index, "top-down", 0.0)
    support = np.zeros(index.n_nodes)
    support[[col["a"], col["a1"], col["a2"], col["b"]]] = [400, 100, 4, 0]
    u, node, _ = uncertainty(z, keep, np.zeros(index.n_nodes), None, index, support)
    assert index.ids[node[0]] == "a2" and u[0] == pytest.approx(10.0 * np.exp(-0.2))
    support[col["a2"]] = 100
    u, node, _ = uncertainty(z, keep, np.zeros(index.n_nodes), None, index, support)
    assert index.ids[node[0]] == "a1" and u[0] == pytest.approx(2.0 * np.exp(-0.1))


def test_k_center_spreads_and_never_picks_a_duplicate():
    reps = np.array([[0.0, 0], [0.0, 0], [0.01, 0], [5.0, 5], [5.0, 5.01]])
    u = np.array([1.0, 1.0, 0.9, 0.5, 0.5])
    assert k_center(u, reps, 3) == [0, 3, 2]
    assert k_center(u, reps, 10) == [0, 3, 2, 4]       # row 1 equals row 0: never picked


@pytest.fixture
def run(run_config, tmp_path):
    from hmtc.config import load_config
    from hmtc.train import Trainer
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''"])
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    return tmp_path / "r"


def test_suggest_queue_is_deterministic_distinct_and_label_studio_ready(run, tmp_path, invoke):
    from conftest import make_texts
    rows = make_texts(60, seed=7)
    pool = tmp_path / "pool.jsonl"
    lines = [{"id": f"t{i}", "text": r["text"]} for i, r in enumerate(rows)]
    lines += [{"id": "dup", "text": rows[0]["text"]}, {"id": "blank", "text": "  "}]
    pool.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    out1, out2 = tmp_path / "q1.jsonl", tmp_path / "q2.jsonl"
    invoke("suggest", run, pool, "-k", 20, "-o", out1)
    invoke("suggest", run, pool, "-k", 20, "-o", out2)
    q = [json.loads(x) for x in out1.read_text(encoding="utf-8").splitlines()]
    assert out1.read_bytes() == out2.read_bytes() and len(q) == 20
    assert len({x["text"] for x in q}) == 20 and not any(x["id"] in ("dup", "blank") for x in q)
    assert all(lines[x["line"] - 1]["text"] == x["text"] for x in q)
    assert all(set(x.keys()) >= {"id", "text", "uncertainty", "node", "level", "prediction"} for x in q)
    r1, r2, r3 = (tmp_path / f"r{i}.jsonl" for i in range(3))
    invoke("suggest", run, pool, "-k", 20, "-o", r1, "--strategy", "random", "--seed", 1)
    invoke("suggest", run, pool, "-k", 20, "-o", r2, "--strategy", "random", "--seed", 1)
    invoke("suggest", run, pool, "-k", 20, "-o", r3, "--strategy", "random", "--seed", 2)
    assert r1.read_bytes() == r2.read_bytes() != r3.read_bytes()
    w1, w2 = tmp_path / "w1.jsonl", tmp_path / "w2.jsonl"
    invoke("suggest", run, pool, "-k", 20, "-o", w1, "--weights", "labelled")
    invoke("suggest", run, pool, "-k", 20, "-o", w2, "--weights", "labelled")
    w = [json.loads(x) for x in w1.read_text(encoding="utf-8").splitlines()]
    assert w1.read_bytes() == w2.read_bytes() and len({x["text"] for x in w}) == 20

    tasks, xml = tmp_path / "tasks.json", tmp_path / "ls.xml"
    invoke("suggest", run, pool, "-k", 5, "-o", tasks, "--format", "label-studio", "--label-config", xml)
    taxonomy = Taxonomy.load(run / "best" / "taxonomy.tax")
    root = ET.fromstring(xml.read_text(encoding="utf-8"))
    aliases = {c.get("alias"): c.get("value") for c in root.iter("Choice")}
    assert set(aliases) == set(taxonomy.compile().ids)
    assert all(aliases[n] == taxonomy.name(n) for n in aliases)
    for task in json.loads(tasks.read_text(encoding="utf-8")):
        assert task["data"]["text"] and task["data"]["id"].startswith("t")
        for res in task["predictions"][0]["result"]:
            for path in res["value"]["taxonomy"]:
                assert all(taxonomy.parents(b) == [a] for a, b in zip(path, path[1:]))


def test_suggest_refuses_odd_requests(run, tmp_path, invoke, monkeypatch):
    from hmtc.errors import HmtcError
    pool = tmp_path / "pool.txt"
    pool.write_text("\n  \n", encoding="utf-8")
    assert "holds no text" in invoke("suggest", run, pool, "-k", 3, "-o", tmp_path / "q.jsonl", code=2).output
    pool.write_text("cat\n", encoding="utf-8")
    assert "at least 1" in invoke("suggest", run, pool, "-k", 0, "-o", tmp_path / "q.jsonl", code=2).output
    assert "unknown strategy" in invoke("suggest", run, pool, "-k", 1, "-o", tmp_path / "q.jsonl", "--strategy",
                                        "greedy", code=2).output
    assert "unknown weights" in invoke("suggest", run, pool, "-k", 1, "-o", tmp_path / "q.jsonl", "--weights",
                                       "share", code=2).output
    assert "the pool file" in invoke("suggest", run, pool, "-k", 1, "-o", pool, code=2).output
    assert pool.read_text(encoding="utf-8") == "cat\n"
    import hmtc.suggest
    from hmtc.loading import load_checkpoint
    ckpt = load_checkpoint(run / "best")
    monkeypatch.setattr(hmtc.suggest, "read_support", lambda path: None)     # a run saved without it
    with pytest.raises(HmtcError, match="records none"):
        hmtc.suggest.suggest(ckpt, ["cat"], 1, weights="labelled")


def test_label_studio_export_reads_back_with_file_line_errors(run, tmp_path, invoke):
    """suggest -> Label Studio tasks -> annotated (the pre-annotation accepted) -> format
    "label-studio" reads the ids back; a malformed task is one error naming its line."""
    from hmtc.data import read_label_studio
    from hmtc.errors import DataError
    pool = tmp_path / "pool.txt"
    pool.write_text("cat meow here\noak leaf tree\nrose petal and a puppy\n", encoding="utf-8")
    tasks = tmp_path / "tasks.json"
    invoke("suggest", run, pool, "-k", 3, "-o", tasks, "--format", "label-studio")
    exported = json.loads(tasks.read_text(encoding="utf-8"))
    for t in exported:
        t["annotations"] = [{"was_cancelled": True, "result": []},
                            {"result": t["predictions"][0]["result"]
                             + [{"type": "choices", "from_name": "c", "to_name": "text", "value": {"choices": ["plant"]}}]}]
    exported.append({"data": {"text": "no annotation yet"}})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported, ensure_ascii=False, indent=2), encoding="utf-8")
    ex = read_label_studio(path, on_error="skip")
    assert ex.skipped_reasons == {"unlabelled": 1} and len(ex) == 3
    for text, labels, t in zip(ex.texts, ex.labels, exported):
        deepest = [q[-1] for r in t["predictions"][0]["result"] for q in r["value"]["taxonomy"]]
        assert text == t["data"]["text"] and labels == deepest + ["plant"]
    with pytest.raises(DataError, match=r"export\.json:\d+: the task has no annotation"):
        read_label_studio(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = [i for i, x in enumerate(lines) if '"text": "no annotation yet"' in x][0]
    lines[bad] = lines[bad].replace('"text"', '"body"')
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_label_studio(path)
    start = max(i for i, x in enumerate(lines[:bad]) if x.strip() == "{") + 1
    assert f"export.json:{start}:" in str(e.value) and "no string 'text'" in str(e.value)
    path.write_text('{"data": {}}', encoding="utf-8")
    with pytest.raises(DataError, match="a JSON list of tasks"):
        read_label_studio(path)


def test_train_on_a_label_studio_export_then_queue_from_the_run(tiny_encoder, tmp_path, invoke):
    """The README's loop: a Label Studio export as a dataset -> hmtc train -> hmtc suggest."""
    from conftest import TAXONOMY, make_texts, tiny_config_text
    taxonomy = Taxonomy.parse(TAXONOMY)
    data = tmp_path / "ls"
    data.mkdir()
    for split, n, seed in (("train", 96, 1), ("test", 32, 2)):
        tasks = [{"data": {"text": r["text"]}, "annotations": [{"result": [
            {"type": "taxonomy", "from_name": "taxonomy", "to_name": "text",
             "value": {"taxonomy": [[*taxonomy.parents(lab), lab] for lab in r["labels"]]}}]}]}
            for r in make_texts(n, seed)]
        (data / f"{split}.json").write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    (data / "tiny.tax").write_text(TAXONOMY, encoding="utf-8")
    card = data / "export.toml"
    card.write_text('name = "ls"\nformat = "label-studio"\ntaxonomy = "tiny.tax"\n\n[splits]\n'
                    'train = "train.json"\ntest = "test.json"\n', encoding="utf-8")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(tiny_config_text(card, tiny_encoder, tmp_path), encoding="utf-8")
    invoke("train", cfg, "--quiet", "--out", tmp_path / "run", "--set", "train.epochs=1")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["leaf_micro_f1"] >= 0
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(r["text"] + "\n" for r in make_texts(20, 9)), encoding="utf-8")
    invoke("suggest", tmp_path / "run", pool, "-k", 5, "-o", tmp_path / "q.json", "--format", "label-studio")
    assert len(json.loads((tmp_path / "q.json").read_text(encoding="utf-8"))) == 5
