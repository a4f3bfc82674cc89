"""Reports, comparisons and RESULTS.md: on real tiny runs and on hand-made matrices and records."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hmtc import report
from hmtc.cli import app as hmtc_app
from hmtc.cli.report import compare_command, report_command, results_command
from hmtc.report import bad_cases, sibling_confusions
from hmtc.taxonomy import Taxonomy

from conftest import TAXONOMY, tiny_config_text

runner = CliRunner()
app = typer.Typer()             # the commands under test, as the hmtc CLI registers them
app.command("report")(report_command)
app.command("compare")(compare_command)
app.command("results")(results_command)


def invoke(cli, *args):
    r = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_encoder, tiny_dataset):
    """Two trained and evaluated tiny runs (seeds 0 and 7), each with its report."""
    folder = tmp_path_factory.mktemp("report-runs")
    runs = []
    for name, seed in (("tiny-a", 0), ("tiny-b", 7)):
        cfg, run = folder / f"{name}.toml", folder / name
        cfg.write_text(tiny_config_text(tiny_dataset, tiny_encoder, folder, name), encoding="utf-8")
        invoke(hmtc_app, "train", cfg, "--quiet", "--out", run, "--set", f"train.seed={seed}")
        invoke(app, "report", run, "--top-bad", 5)
        runs.append(run)
    return runs


def test_report_writes_its_files(tiny_runs):
    run = tiny_runs[0]
    for name in ("report.md", "report.html", "bad_cases.jsonl", "report_files/f1_vs_train_frequency.png",
                 "report_files/score_histograms.png"):
        assert (run / name).is_file(), name
    md = (run / "report.md").read_text(encoding="utf-8")
    for needle in ("tiny-a", "hierarchical", "C-micro", "inconsistent samples", "Confusions between siblings",
                   "](report_files/f1_vs_train_frequency.png)", "](report_files/score_histograms.png)"):
        assert needle in md, needle
    cases = [json.loads(line) for line in (run / "bad_cases.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(cases) <= 5
    keys = [(-c["n_wrong"], -c["margin"]) for c in cases]
    assert keys == sorted(keys)
    for c in cases:
        assert c["text"] and c["n_wrong"] == len(c["missed"]) + len(c["spurious"]) > 0
        assert set(c["missed"]) <= set(c["scores"]) and set(c["spurious"]) <= set(c["scores"])
        assert all(0 <= s <= 1 for s in c["scores"].values())


def test_html_is_self_contained(tiny_runs):
    page = (tiny_runs[0] / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page and "url(" not in page


def test_per_label_tables_sorted_by_support_within_level(tiny_runs):
    md = (tiny_runs[0] / "report.md").read_text(encoding="utf-8")
    index = Taxonomy.parse(TAXONOMY).compile()
    for k, sl in enumerate(index.level_slices, 1):
        block = md.split(f"### Level {k} (")[1].split("\n\n")[1]
        rows = [line.strip("|").split("|") for line in block.splitlines()[2:]]
        assert sorted(r[0].strip() for r in rows) == sorted(index.ids[sl])
        support = [int(r[3]) for r in rows]
        assert support == sorted(support, reverse=True)


def test_sibling_confusions_hand_example():
    index = Taxonomy.parse(TAXONOMY).compile()
    col = index.id_to_index
    gold = index.indicator([["animal-cat"], ["plant-rose"], ["animal-cat", "plant-tree"], ["animal-dog"]])
    pred = index.indicator([["animal-dog"], ["animal-cat"], ["animal-cat", "animal-dog", "plant-rose"],
                            ["animal-dog"]])
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[col["animal-cat"], col["animal-dog"]] = 1    # row 0: cat missed, sibling dog predicted
    expected[col["plant"], col["animal"]] = 1             # row 1: level 1 under the root
    expected[col["plant-tree"], col["plant-rose"]] = 1    # row 2: dog is spurious but nothing missed beside it
    assert np.array_equal(sibling_confusions(gold, pred, index), expected)


def test_bad_cases_rank_by_wrong_nodes_then_margin():
    index = Taxonomy.parse(TAXONOMY).compile()
    gold = index.indicator([["animal-cat"]] * 4)
    pred = index.indicator([["animal-cat"], ["animal-dog"], ["animal-dog"], ["plant-rose"]])
    scores = np.where(pred, 1.0, -1.0)
    scores[2, index.id_to_index["animal-dog"]] = 5.0       # same errors as row 1, more confident
    cases = bad_cases(["a", "b", "c", "d"], scores, gold, pred, index, 0.0, k=10)
    assert [c["index"] for c in cases] == [3, 2, 1]
    assert cases[0]["gold"] == [["animal", "animal-cat"]] and cases[0]["pred"] == [["plant", "plant-rose"]]


def test_plot_labels_fall_back_to_ascii_without_a_cjk_font(monkeypatch):
    monkeypatch.setattr(report, "cjk_font", lambda: None)
    assert report._plot_text("地震", 3) == "#3"
    assert report._plot_text("cat", 3) == "cat"


def test_compare_writes_both_runs(tiny_runs, tmp_path):
    out = tmp_path / "compare.md"
    r = invoke(app, "compare", *tiny_runs, "--out", out)
    assert "tiny-a" in r.stdout and "tiny-b" in r.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("| run | model | micro F1 |") and "L2 mi / ma F1" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["tiny-a", "tiny-b"]


def test_compare_shows_a_seeds_folder_as_mean_and_std(tiny_runs, tmp_path):
    import shutil
    seeds = tmp_path / "set"
    for i, run in enumerate(tiny_runs):
        shutil.copytree(run, seeds / f"seed-{i}")
    a, b = (json.loads((Path(r) / "metrics.json").read_text())["test"]["micro_f1"] for r in tiny_runs)
    out = tmp_path / "compare.md"
    invoke(app, "compare", seeds, tiny_runs[0], "--out", out)
    row = out.read_text(encoding="utf-8").splitlines()[2]
    mean, sd = (a + b) / 2, abs(a - b) / 2 ** 0.5
    assert row.startswith("| set (n = 2) |") and f"| {mean:.4f} ± {sd:.4f} |" in row


def _record(name, dataset, model, micro, macro, levels, encoder="me5-small", epochs=4, leaf=None,
            classifier=None, seed=42, options=None, train=None):
    options = dict(options or {}) | ({"classifier": classifier} if classifier else {})
    leaf = leaf or (micro, macro)
    return {"name": name, "dataset": dataset, "model": model, "encoder": encoder, "seed": seed,
            "command": f"hmtc train experiments/{name}.toml", "git_commit": "0123456789abcdef-dirty",
            "train_seconds": 3725.0, "machine": {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 23.5},
            "metrics": {"micro_f1": micro, "macro_f1": macro, "leaf_micro_f1": leaf[0], "leaf_macro_f1": leaf[1],
                        "hier_f1": micro, "inconsistent_samples": 0.0,
                        "per_level": [{"level": k, "micro_f1": mi, "macro_f1": ma}
                                      for k, (mi, ma) in enumerate(levels, 1)]},
            "config": {"train": {"epochs": epochs, "seed": seed, **(train or {})},
                       "data": {"train_limit": 0, "max_length": 128, "dataset": dataset},
                       "model": {"name": model, "encoder": encoder, "options": options}}}


def _goal_rows(text):
    section = text.split("## Goals")[1].split("\n## ")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.strip().splitlines()[4:]]


def _write(recs, *records):
    for r in records:
        (recs / f"{r['name']}.json").write_text(json.dumps(r), encoding="utf-8")


def _seeds(name, dataset, model, leafs, levels=None, **kw):
    """Single records of one config, one per seed (as earlier stops wrote them)."""
    return [_record(name if s == 42 else f"{name}-s{s}", dataset, model, mi, ma,
                    levels or [(0.97, 0.96), (mi, ma)], leaf=(mi, ma), seed=s, **kw)
            for s, (mi, ma) in zip((42, 43, 44), leafs)]


def test_results_regenerate_identically_and_mark_goals(tmp_path):
    recs = tmp_path / "records"
    recs.mkdir()
    _write(recs,
           *_seeds("duee-msml", "duee", "msml", [(0.950, 0.940), (0.952, 0.942), (0.954, 0.944)]),
           *_seeds("duee-flat", "duee", "flat", [(0.946, 0.941), (0.946, 0.941), (0.946, 0.941)]),
           *_seeds("duee-msml-nogates", "duee", "msml", [(0.940, 0.93)] * 3, options={"gates": False}),
           *_seeds("duee-msml-rdrop", "duee", "msml", [(0.960, 0.95)] * 3, train={"rdrop_alpha": 1.0}),
           _record("duee-flat-long", "duee", "flat", 0.99, 0.99, [(0.99, 0.99)] * 2, epochs=20),   # other budget
           _record("goemotions-msml", "goemotions", "msml", 0.6, 0.55, [(0.72, 0.71), (0.65, 0.63), (0.55, 0.49)]))
    for name, dataset in (("duee-msml", "duee"), ("ng-flat", "20newsgroups")):    # configs beside the records
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\n[data]\ndataset = "{dataset}"\n'
                                               f'[model]\nname = "{name.split("-")[1]}"\n', encoding="utf-8")
    out = tmp_path / "RESULTS.md"
    invoke(app, "results", "--records", recs, "--out", out)
    first = out.read_bytes()
    invoke(app, "results", "--records", recs, "--out", out)
    assert out.read_bytes() == first
    text = first.decode("utf-8")
    assert text.startswith("# Results") and "Generated by `hmtc results" in text
    goals = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(text)}
    # means 0.952 / 0.942 vs 0.946 / 0.941: +0.60 / +0.10 points, n = 3; the rdrop variant is no default
    assert goals[("duee", "the default MSML (duee")][0] == "met"
    assert "+0.60 / +0.10 points, n = 3" in goals[("duee", "the default MSML (duee")][1]
    assert goals[("duee", "the default MSML leaf ")][0] == "missed"      # 3725 s per seed > 45 min
    assert goals[("duee", "moonshot: the default ")][0] == "missed"
    assert goals[("goemotions", "the default MSML is th")][0] == "not yet run"     # one seed
    assert goals[("goemotions", "the default MSML's mac")][0] == "missed"          # level 3: 0.49 < 0.503
    assert goals[("20newsgroups", "the default MSML above")][0] == "not yet run"
    row = next(line for line in text.splitlines() if line.startswith("| duee-msml · duee-msml-s43"))
    assert "| 3 | 0.9520 ± 0.0020 |" in row and "42, 43, 44" in row
    for col in ("`hmtc train experiments/duee-msml.toml`", "`0123456789ab-dirty`", "1h 02m", "AMD EPYC, 2 cores"):
        assert col in text
    same = text.split("### Same budget")[1]
    assert "| duee-msml-nogates · duee-msml-nogates-s43 · duee-msml-nogates-s44 | msml | gates=false | 3 |" in same
    assert "| -0.60 | -1.10 |" in same                                     # no gates vs flat
    toolbox = same.split("Recipe changes")[1]
    assert "train.rdrop_alpha=1.0" in toolbox and "| – | +1.40 / +0.90 |" in toolbox   # no flat with R-Drop
    not_run = text.split("## Configs not run yet")[1].split("\n## ")[0]
    assert "| `ng-flat.toml` | 20newsgroups | flat |" in not_run and "duee-msml.toml" not in not_run

    _write(recs, _record("goemotions-msml", "goemotions", "msml", 0.6, 0.55, [(0.72, 0.71), (0.65, 0.63), (0.55, 0.51)]),
           _record("ng-svm", "20newsgroups", "tfidf", 0.8, 0.8, [(0.9, 0.9), (0.8, 0.8)], classifier="svm"),
           _record("20ng-msml", "20newsgroups", "msml", 0.85, 0.85, [(0.91, 0.91), (0.81, 0.79)]))
    invoke(app, "results", "--records", recs, "--out", out)
    goals = {(r[0], r[1][:22]): r[2] for r in _goal_rows(out.read_text(encoding="utf-8"))}
    assert goals[("goemotions", "the default MSML's mac")] == "met"
    assert goals[("20newsgroups", "the default MSML above")] == "missed"    # level 2 macro 0.79 < 0.80


def test_results_read_mean_records(tmp_path):
    from hmtc.record import aggregate_records
    recs = tmp_path / "records"
    recs.mkdir()
    seeds = _seeds("x", "duee", "msml", [(0.95, 0.94), (0.96, 0.95), (0.97, 0.96)])
    _write(recs, aggregate_records(seeds) | {"name": "duee-msml", "config_name": "duee-msml",
                                             "command": "hmtc train experiments/duee-msml.toml --seeds 42,43,44"})
    text = (invoke(app, "results", "--records", recs, "--out", tmp_path / "R.md") and
            (tmp_path / "R.md").read_text(encoding="utf-8"))
    row = next(line for line in text.splitlines() if line.startswith("| duee-msml |"))
    assert "| 3 | 0.9600 ± 0.0100 |" in row and "--seeds 42,43,44" in row
