"""Reports, comparisons and RESULTS.md: on real tiny runs and on hand-made matrices and records."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hmtc import report
from hmtc.cli import app as hmtc_app
from hmtc.cli.report import compare_command, report_command, results_command
from hmtc.report import bad_cases, fitted_limits, probability_text, sibling_confusions
from hmtc.taxonomy import Taxonomy

from conftest import TAXONOMY, tiny_config_text

GOALS = Path(__file__).resolve().parents[1] / "experiments" / "goals.toml"   # the project's goals, as data
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
                 "report_files/score_histograms.png", "report_files/reliability.png"):
        assert (run / name).is_file(), name
    md = (run / "report.md").read_text(encoding="utf-8")
    for needle in ("tiny-a", "hierarchical", "C-micro", "inconsistent samples", "Confusions between siblings",
                   "](report_files/f1_vs_train_frequency.png)", "](report_files/score_histograms.png)",
                   "](report_files/reliability.png)"):
        assert needle in md, needle
    cal = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["calibration"]
    assert f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after one temperature per level" in md
    cases = [json.loads(line) for line in (run / "bad_cases.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(cases) <= 5
    keys = [(-c["n_wrong"], -c["margin"]) for c in cases]
    assert keys == sorted(keys)
    for c in cases:
        assert c["text"] and c["n_wrong"] == len(c["missed"]) + len(c["spurious"]) > 0
        scored = {s["id"] for s in c["scores"]}
        assert set(c["missed_ids"]) <= scored and set(c["spurious_ids"]) <= scored
        assert all(0 <= s["score"] <= 1 for s in c["scores"])


def test_html_is_self_contained(tiny_runs):
    page = (tiny_runs[0] / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3          # F1 by frequency, score histograms, reliability
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
    assert cases[0]["gold_ids"] == [["animal", "animal-cat"]] and cases[0]["pred_ids"] == [["plant", "plant-rose"]]


def test_bad_cases_show_display_names_and_keep_ids():
    index = Taxonomy.parse(TAXONOMY).compile()             # animal-cat "cat", ...; level 1 has no names
    gold = index.indicator([["animal-cat", "plant-tree"]])
    pred = index.indicator([["animal-dog", "plant-tree"]])
    scores = np.where(pred, 2.0, -2.0)
    [case] = bad_cases(["x"], scores, gold, pred, index, 0.0, k=5)
    assert case["gold"] == [["animal", "cat"], ["plant", "tree"]]
    assert case["gold_ids"] == [["animal", "animal-cat"], ["plant", "plant-tree"]]
    assert case["pred"] == [["animal", "dog"], ["plant", "tree"]]
    assert case["pred_ids"] == [["animal", "animal-dog"], ["plant", "plant-tree"]]
    assert (case["missed"], case["missed_ids"]) == (["cat"], ["animal-cat"])
    assert (case["spurious"], case["spurious_ids"]) == (["dog"], ["animal-dog"])
    assert case["scores"] == [{"id": i, "name": n, "score": s} for i, n, s in (
        ("animal", "animal", 0.8808), ("plant", "plant", 0.8808), ("animal-cat", "cat", 0.1192),
        ("animal-dog", "dog", 0.8808), ("plant-tree", "tree", 0.8808))]


def test_report_bad_case_table_shows_display_names(tiny_runs):
    md = (tiny_runs[0] / "report.md").read_text(encoding="utf-8")
    rows = [line.strip("|").split(" | ") for line in md.split("## Worst errors")[1].strip().splitlines()[4:]]
    cases = [json.loads(line) for line in (tiny_runs[0] / "bad_cases.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and len(rows) == min(10, len(cases))
    for row, case in zip(rows, cases):
        assert row[2] == "; ".join(" > ".join(p) for p in case["gold"])
        assert row[3] == ("; ".join(" > ".join(p) for p in case["pred"]) or "–")
        assert not re.search(r"animal-|plant-", row[2] + row[3])      # every leaf id has a display name


def _crowded(n=40):
    """Per-label rows and training counts: many weak labels at nearly the same frequency and F1."""
    per_label = [{"id": f"l{j}", "name": f"weak label {j}", "level": 1 + j % 2, "f1": 0.30 + 0.002 * j,
                  "support": 5} for j in range(n)] + [{"id": "ok", "name": "ok", "level": 1, "f1": 0.9, "support": 50}]
    return per_label, np.array([10 + j % 4 for j in range(n)] + [400])


def test_f1_plot_labels_overlap_neither_each_other_nor_points():
    per_label, freq = _crowded()
    with report._figure(8, 5) as fig:
        ax = report.draw_f1_vs_frequency(fig, per_label, freq, annotate=12)
        report._png(fig)                                  # as the report renders it
        renderer = fig.canvas.get_renderer()
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        xy = np.vstack([c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections])
        frame = ax.get_window_extent(renderer)
        named = ax.transData.transform([(freq[j], per_label[j]["f1"]) for j in range(12)])
    assert [t.get_text() for t in ax.texts] == [f"weak label {j}" for j in range(12)]
    # crowded: each named point has another closer than a label is tall, so fixed offsets would collide
    gaps = np.hypot(*(named[:, None] - named[None]).transpose(2, 0, 1)) + np.diag(np.full(12, np.inf))
    assert (gaps.min(1) < min(b.height for b in labels)).all()
    pairs = list(itertools.combinations(range(len(labels)), 2))
    assert not [(a, b) for a, b in pairs if labels[a].overlaps(labels[b])]
    r = np.sqrt(report.MARKER_SIZE) / 2 * fig.dpi / 72
    for box in labels:
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
        near_x = np.clip(xy[:, 0], box.x0, box.x1)
        near_y = np.clip(xy[:, 1], box.y0, box.y1)
        assert np.hypot(xy[:, 0] - near_x, xy[:, 1] - near_y).min() > r      # no marker under a label


def test_f1_axis_fits_the_data():
    def ylim(f1):
        per_label = [{"id": f"l{j}", "name": f"l{j}", "level": 1, "f1": f, "support": 3} for j, f in enumerate(f1)]
        with report._figure(8, 5) as fig:
            return report.draw_f1_vs_frequency(fig, per_label, np.arange(len(f1)) * 7).get_ylim()

    lo, hi = ylim([0.55, 0.62, 0.7, 0.8])
    assert 0.52 < lo < 0.55 and 0.8 < hi < 0.83              # the data and a small margin, not 0..1
    assert ylim([0.0, 0.4, 1.0]) == (0.0, 1.0)               # clipped to F1's range
    lo, hi = ylim([0.95, 0.95])
    assert lo < 0.95 and hi <= 1.0 and hi - lo >= 0.05        # equal values still get a readable span
    assert fitted_limits(np.array([0.2, 0.7]), margin=0.1) == pytest.approx((0.15, 0.75))


def test_probability_text():
    assert probability_text(0.0) == "0.5000 (logit 0)"
    assert probability_text(-2.0) == "0.1192 (logit -2)"
    assert probability_text(np.float32(1.5)) == "0.8176 (logit 1.5)"


def test_report_shows_thresholds_as_probabilities(tiny_runs):
    m = json.loads((tiny_runs[0] / "metrics.json").read_text(encoding="utf-8"))
    t = m["decode"]["threshold"]
    md = (tiny_runs[0] / "report.md").read_text(encoding="utf-8")
    shown = probability_text(t)
    assert f"| decoding | {m['decode']['method']}, threshold {shown} |" in md
    assert f"threshold {shown} as a probability." in md
    assert f"threshold {t:g} " not in md


def test_report_shows_per_label_thresholds_as_probabilities(tiny_runs, tmp_path):
    run = tmp_path / "per-label"
    shutil.copytree(tiny_runs[0], run)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    index = Taxonomy.load(run / "best" / "taxonomy.tax").compile()
    logits = np.linspace(-2.0, 1.0, index.n_nodes)
    metrics["decode"]["per_label_thresholds"] = logits.tolist()
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    files = report.write_report(run, top_bad=5)
    md = files["md"].read_text(encoding="utf-8")
    assert f"; per-label thresholds {1 / (1 + np.exp(2.0)):.4f}–{1 / (1 + np.exp(-1.0)):.4f} |" in md
    for k, sl in enumerate(index.level_slices, 1):
        block = md.split(f"### Level {k} (")[1].split("\n\n")[1]
        lines = block.splitlines()
        assert lines[0].endswith("| F1 | threshold |")
        shown = {r.strip("|").split("|")[0].strip(): float(r.strip("|").split("|")[-1]) for r in lines[2:]}
        assert shown == {index.ids[j]: round(1 / (1 + np.exp(-logits[j])), 4) for j in range(sl.start, sl.stop)}
    outputs = {name: path.read_bytes() for name, path in files.items()}
    assert {name: path.read_bytes() for name, path in report.write_report(run, top_bad=5).items()} == outputs


def test_plot_labels_fall_back_to_ascii_without_a_cjk_font(monkeypatch):
    monkeypatch.setattr(report, "cjk_font", lambda: None)
    assert report._plot_text("地震", 3) == "#3"
    assert report._plot_text("cat", 3) == "cat"


def test_compare_writes_both_runs(tiny_runs, tmp_path):
    out = tmp_path / "compare.md"
    r = invoke(app, "compare", *tiny_runs, "--out", out)
    assert "tiny-a" in r.stdout and "tiny-b" in r.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("| run | model | dataset | split | micro F1 |") and "L2 mi / ma F1" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["tiny-a", "tiny-b"]
    assert all(line.split("|")[4].strip() == "test" for line in lines[2:]) and "do not compare" not in r.output


def test_compare_names_each_runs_split_and_warns_across_them(tiny_runs, tmp_path):
    """A run evaluated on dev (its dataset has no test split) is shown as dev, never as test, and
    setting it beside a test-split run says the figures do not compare; metrics.json written
    before figures were keyed by split still reads."""
    dev_run = tmp_path / "dev-run"
    shutil.copytree(tiny_runs[0], dev_run, symlinks=True)
    m = json.loads((dev_run / "metrics.json").read_text(encoding="utf-8"))
    m = {k: v for k, v in m.items() if k != "test"} | {"split": "dev", "dev": m["test"]}
    (dev_run / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    r = invoke(app, "compare", tiny_runs[1], dev_run, "--out", tmp_path / "c.md")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in (tmp_path / "c.md").read_text(encoding="utf-8").splitlines()[2:]]
    assert [row[3] for row in rows] == ["test", "dev"]
    assert "do not compare" in r.output and "dev" in r.output
    old = m | {"test": m["dev"]}                     # the old layout: dev figures under "test"
    del old["dev"]
    (dev_run / "metrics.json").write_text(json.dumps(old), encoding="utf-8")
    invoke(app, "compare", dev_run, "--out", tmp_path / "c2.md")
    assert (tmp_path / "c2.md").read_text(encoding="utf-8").splitlines()[2].split("|")[4].strip() == "dev"


def test_compare_fits_a_100_column_terminal(tiny_runs, tmp_path):
    out = tmp_path / "compare.md"
    r = runner.invoke(app, ["compare", *map(str, tiny_runs), "--out", str(out)], env={"COLUMNS": "100"},
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 100
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in out.read_text(encoding="utf-8").splitlines()]
    blocks = r.stdout.count("┃ run ")
    assert blocks >= 2 and r.stdout.count("tiny-a") == blocks     # each block names its rows
    for row in table[2:]:
        for cell in row:
            assert cell in r.stdout, cell                        # every figure whole, none cut to "0.…"
    wide = runner.invoke(app, ["compare", *map(str, tiny_runs)], env={"COLUMNS": "400"}, catch_exceptions=False)
    assert wide.stdout.count("┃ run ") == 1                      # a wide terminal: one table


def test_compare_shows_a_seeds_folder_as_mean_and_std(tiny_runs, tmp_path):
    seeds = tmp_path / "set"
    for i, run in enumerate(tiny_runs):
        shutil.copytree(run, seeds / f"seed-{i}")
    a, b = (json.loads((Path(r) / "metrics.json").read_text())["test"]["micro_f1"] for r in tiny_runs)
    out = tmp_path / "compare.md"
    invoke(app, "compare", seeds, tiny_runs[0], "--out", out)
    row = out.read_text(encoding="utf-8").splitlines()[2]
    mean, sd = (a + b) / 2, abs(a - b) / 2 ** 0.5
    assert row.startswith("| set (n = 2) |") and f"| {mean:.4f} ± {sd:.4f} |" in row


def test_compare_per_label_shares_sum_to_each_level_macro_difference(tiny_runs, tmp_path):
    out = tmp_path / "per-label.md"
    invoke(app, "compare", *tiny_runs, "--per-label", "--out", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("| level | id | name | support | F1 tiny-a | F1 tiny-b | Δ F1 (first − second) |")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    a, b = (json.loads((Path(r) / "metrics.json").read_text())["test"] for r in tiny_runs)
    assert len(rows) == len(a["per_label"])
    for lv_a, lv_b in zip(a["per_level"], b["per_level"]):
        mine = [r for r in rows if int(r[0]) == lv_a["level"]]
        deltas = [float(r[6]) for r in mine]
        assert deltas == sorted(deltas)                         # largest loss of the first run first
        assert sum(float(r[7]) for r in mine) == pytest.approx(100 * (lv_a["macro_f1"] - lv_b["macro_f1"]), abs=0.01 * len(mine))
    one = tmp_path / "level-2.md"
    invoke(app, "compare", *tiny_runs, "--per-label", "--level", 2, "--out", one)
    assert {line.split("|")[1].strip() for line in one.read_text(encoding="utf-8").splitlines()[2:]} == {"2"}
    r = runner.invoke(app, ["compare", str(tiny_runs[0]), "--level", "2"])
    assert r.exit_code != 0 and "--per-label" in r.output
    seeds = tmp_path / "set"                                    # a seeds folder: each label's mean F1
    for i, run in enumerate(tiny_runs):
        shutil.copytree(run, seeds / f"seed-{i}")
    header, rows = report.per_label_table([seeds])
    assert header[4] == "F1 set"
    assert [r[4] for r in rows] == pytest.approx([(x["f1"] + y["f1"]) / 2 for x, y in zip(
        sorted(a["per_label"], key=lambda x: (x["level"], -x["support"], x["id"])),
        sorted(b["per_label"], key=lambda x: (x["level"], -x["support"], x["id"])))])


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
    # configs beside the records; the default is the one whose resolved settings duee-msml's records ran
    (tmp_path / "duee-msml.toml").write_text('name = "duee-msml"\n[data]\ndataset = "duee"\n[model]\nname = "msml"\n'
                                             'encoder = "me5-small"\n[train]\nepochs = 4\n[decode]\ncomplete = false\n', encoding="utf-8")
    (tmp_path / "ng-flat.toml").write_text('name = "ng-flat"\n[data]\ndataset = "20newsgroups"\n[model]\nname = "flat"\n',
                                           encoding="utf-8")
    out = tmp_path / "RESULTS.md"
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    first = out.read_bytes()
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    assert out.read_bytes() == first
    text = first.decode("utf-8")
    assert text.startswith("# Results") and "Generated by `hmtc results" in text
    goals = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(text)}
    # means 0.952 / 0.942 vs 0.946 / 0.941: +0.60 / +0.10 points, n = 3; the rdrop variant is no default
    assert goals[("duee", "the default MSML ≥ fla")][0] == "met"
    assert "+0.60 / +0.10 points, n = 3" in goals[("duee", "the default MSML ≥ fla")][1]
    assert goals[("duee", "the default MSML leaf ")][0] == "missed"      # 3725 s per seed > 45 min
    assert goals[("duee", "moonshot: the default ")][0] == "missed"
    assert goals[("goemotions", "the default MSML is th")][0] == "not yet run"     # one seed
    assert goals[("goemotions", "the default MSML's mac")][0] == "not yet run"     # one seed: no claim
    assert goals[("20newsgroups", "the default MSML above")][0] == "not yet run"
    row = next(line for line in text.splitlines() if line.startswith("| duee-msml · duee-msml-s43"))
    assert "| 3 | 0.9520 ± 0.0020 |" in row and "42, 43, 44" in row
    for col in ("`hmtc train experiments/duee-msml.toml`", "`0123456789ab-dirty`", "1h 02m", "AMD EPYC, 2 cores"):
        assert col in text
    same = text.split("### Same budget")[1]
    assert "| duee-msml-nogates · duee-msml-nogates-s43 · duee-msml-nogates-s44 | msml | gates=false | 3 |" in same
    assert "| -0.60 | -1.10 |" in same                                     # no gates vs flat
    toolbox = same.split("Recipe changes")[1]
    # against MSML without R-Drop (0.952 / 0.942): the change; no flat with R-Drop; plain flat
    assert "train.rdrop_alpha=1.0" in toolbox and "| +0.80 / +0.80 | – | +1.40 / +0.90 |" in toolbox
    not_run = text.split("## Configs not run yet")[1].split("\n## ")[0]
    assert "| `ng-flat.toml` | 20newsgroups | flat |" in not_run and "duee-msml.toml" not in not_run

    # one seed: the figures are shown, no goal is met or missed on them
    _write(recs, _record("goemotions-msml", "goemotions", "msml", 0.6, 0.55, [(0.72, 0.71), (0.65, 0.63), (0.55, 0.51)]),
           _record("ng-svm", "20newsgroups", "tfidf", 0.8, 0.8, [(0.9, 0.9), (0.8, 0.8)], classifier="svm"),
           _record("20ng-msml", "20newsgroups", "msml", 0.85, 0.85, [(0.91, 0.91), (0.81, 0.79)]))
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    goals = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(out.read_text(encoding="utf-8"))}
    assert goals[("goemotions", "the default MSML's mac")][0] == "not yet run"
    assert "n = 1, fewer than 3 seeds: no claim" in goals[("goemotions", "the default MSML's mac")][1]
    assert goals[("20newsgroups", "the default MSML above")][0] == "not yet run"
    # three seeds each
    goe = [(0.72, 0.71), (0.65, 0.63), (0.55, 0.51)]
    _write(recs, *[_record(f"goemotions-msml{t}", "goemotions", "msml", 0.6, 0.55, goe, seed=s)
                   for s, t in ((42, ""), (43, "-s43"), (44, "-s44"))],
           *_seeds("20ng-msml", "20newsgroups", "msml", [(0.85, 0.85)] * 3, levels=[(0.91, 0.91), (0.81, 0.79)]))
    # the cleaned protocol's TF-IDF is lower, but MSML is set only beside TF-IDF of its own protocol
    clean = _record("ng-svm-clean", "20newsgroups", "tfidf", 0.7, 0.7, [(0.8, 0.8), (0.7, 0.7)], classifier="svm")
    _write(recs, clean | {"dataset_protocol": "clean"})
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    text = out.read_text(encoding="utf-8")
    goals = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(text)}
    assert goals[("goemotions", "the default MSML's mac")][0] == "met"
    assert goals[("20newsgroups", "the default MSML above")][0] == "missed"   # level 2 macro 0.79 < 0.80
    assert "vs ng-svm:" in goals[("20newsgroups", "the default MSML above")][1]
    assert goals[("20newsgroups", "the default MSML's 20-")][0] == "not yet run"   # no exact match recorded
    row = next(line for line in text.splitlines() if line.startswith("| ng-svm-clean |"))
    assert "| tfidf | me5-small | clean |" in row
    ng = _seeds("20ng-msml", "20newsgroups", "msml", [(0.85, 0.85)] * 3, levels=[(0.91, 0.91), (0.81, 0.79)],
                train={"cache_frozen": True})
    for r, em in zip(ng, (0.89, 0.90, 0.91)):
        r["metrics"]["exact_match"] = em
    _write(recs, *ng)
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    goals = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(out.read_text(encoding="utf-8"))}
    assert goals[("20newsgroups", "the default MSML's 20-")] == ("met", "20ng-msml · 20ng-msml-s43 · 20ng-msml-s44 "
                                                                 "(raw, n = 3): 0.9000")
    # the default is found by its settings though the config keeps the frozen states on disk (where
    # they are kept is no setting of the model), and TF-IDF trained beside its own seeds is the reference
    (tmp_path / "20ng-msml.toml").write_text('name = "20ng-msml"\n[data]\ndataset = "20newsgroups"\n[model]\n'
                                             'name = "msml"\nencoder = "me5-small"\n[train]\nepochs = 4\n'
                                             'cache_frozen = true\nfrozen_store = true\n[decode]\ncomplete = false\n',
                                             encoding="utf-8")
    _write(recs, *_seeds("ng-svm-seeds", "20newsgroups", "tfidf", [(0.8, 0.8)] * 3, classifier="svm",
                         options={"C": 0.5}, levels=[(0.9, 0.9), (0.8, 0.78)]),
           # more seeds, but not the default's: not its reference (MSML would miss against it)
           *[_record(f"ng-svm-more-s{s}", "20newsgroups", "tfidf", 0.8, 0.8, [(0.95, 0.95), (0.9, 0.9)],
                     classifier="svm", options={"C": 0.25}, seed=s) for s in (1, 2, 3, 4)])
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    goals = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(out.read_text(encoding="utf-8"))}
    assert goals[("20newsgroups", "the default MSML's 20-")][0] == "met"
    above = goals[("20newsgroups", "the default MSML above")]
    assert above[0] == "met" and "vs ng-svm-seeds · ng-svm-seeds-s43 · ng-svm-seeds-s44:" in above[1]


def _write_ng_default(folder):
    """20NG's default MSML config beside the records: the settings ``_seeds`` records run under."""
    (folder / "20ng-msml.toml").write_text('name = "20ng-msml"\n[data]\ndataset = "20newsgroups"\n[model]\n'
                                           'name = "msml"\nencoder = "me5-small"\n[train]\nepochs = 4\n'
                                           '[decode]\ncomplete = false\n', encoding="utf-8")


def test_results_exclusive_goal_sets_the_marked_taxonomy_beside_the_default(tmp_path):
    recs = tmp_path / "records"
    recs.mkdir()
    marked, plain = tmp_path / "ng-excl.tax", tmp_path / "ng.tax"
    marked.write_text("root !exclusive\n  a\n  b\n", encoding="utf-8")
    plain.write_text("root\n  a\n  b\n", encoding="utf-8")
    _write_ng_default(tmp_path)

    def runs(name, em, taxonomy=None, seeds=(42, 43, 44)):
        out = [r for r in _seeds(name, "20newsgroups", "msml", [(0.85, 0.85)] * 3) if r["seed"] in seeds]
        for r, e in zip(out, em):
            r["metrics"]["exact_match"] = e
            r["metrics"]["leaf_micro_f1"] = r["metrics"]["leaf_macro_f1"] = e
            if taxonomy:
                r["config"]["data"]["taxonomy"] = str(taxonomy)
        return out

    def goal():
        out = tmp_path / "RESULTS.md"
        invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
        rows = {(r[0], r[1][:22]): (r[2], r[3]) for r in _goal_rows(out.read_text(encoding="utf-8"))}
        return rows[("20newsgroups", "exclusive sibling grou")]

    _write(recs, *runs("20ng-msml", (0.80, 0.81, 0.82)))
    assert goal()[0] == "not yet run"
    # an unmarked taxonomy is another taxonomy, not the exclusive variant
    _write(recs, *runs("ng-other-tax", (0.90, 0.91, 0.92), plain))
    assert goal() == ("not yet run", "no run of 20ng-msml · 20ng-msml-s43 · 20ng-msml-s44's config on an "
                                     "exclusive taxonomy")
    # two seeds of three: no same-seed means, so no claim
    _write(recs, *runs("ng-excl", (0.83, 0.84), marked, seeds=(42, 43)))
    status, text = goal()
    assert status == "not yet run" and "ran seeds [42, 43]" in text
    _write(recs, *runs("ng-excl", (0.83, 0.84, 0.85), marked))
    status, text = goal()
    assert status == "met" and "exact_match 0.8400 vs 0.8100 (+3.00 points, Welch t = 3.7)" in text
    _write(recs, *runs("ng-excl", (0.81, 0.82, 0.83), marked))     # +1 point, Welch t = 1.2: seed noise
    status, text = goal()
    assert status == "missed" and "(+1.00 points, Welch t = 1.2)" in text
    _write(recs, *runs("ng-excl", (0.83, 0.84, 0.80), marked))     # mean 0.8233 > 0.81 ...
    for r in recs.glob("ng-excl*.json"):                             # ... but leaf macro-F1 below
        rec = json.loads(r.read_text(encoding="utf-8"))
        rec["metrics"]["leaf_macro_f1"] = 0.5
        r.write_text(json.dumps(rec), encoding="utf-8")
    assert goal()[0] == "missed"


def test_results_judge_the_default_under_each_protocol_beside_tfidf_of_that_protocol(tmp_path):
    recs = tmp_path / "records"
    recs.mkdir()
    _write_ng_default(tmp_path)
    clean = {"remove": ["headers", "footers", "quotes"]}

    def runs(name, levels, protocol=None, model="msml", **kw):
        out = _seeds(name, "20newsgroups", model, [(0.85, 0.85)] * 3, levels=levels, **kw)
        for r in out:
            if protocol:
                r["config"]["data"]["options"] = clean
                r["dataset_protocol"] = protocol
        return out

    def above():
        out = tmp_path / "RESULTS.md"
        invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
        return [(r[2], r[3]) for r in _goal_rows(out.read_text(encoding="utf-8"))
                if r[1].startswith("the default MSML above")]

    _write(recs, *runs("20ng-msml", [(0.91, 0.91), (0.81, 0.79)]),
           *runs("ng-svm", [(0.92, 0.92), (0.82, 0.80)], model="tfidf", classifier="svm"),
           *runs("ng-svm-clean", [(0.80, 0.75), (0.70, 0.65)], "cleaned", model="tfidf", classifier="svm"))
    assert [s for s, _ in above()] == ["missed"]           # no MSML run of the cleaned protocol yet
    # the default's config with headers, footers and quotes removed: judged beside TF-IDF of that protocol
    _write(recs, *runs("20ng-msml-clean", [(0.82, 0.77), (0.71, 0.66)], "cleaned"),
           # the cleaned protocol and another change: not the default under that protocol
           *runs("20ng-msml-clean-e9", [(0.70, 0.60), (0.60, 0.50)], "cleaned", epochs=9))
    (raw, raw_text), (cleaned, cleaned_text) = above()
    assert "clean-e9" not in raw_text + cleaned_text
    assert raw == "missed" and "(raw, n = 3) vs ng-svm · " in raw_text
    assert cleaned == "met" and cleaned_text.startswith("20ng-msml-clean · 20ng-msml-clean-s43 · "
                                                        "20ng-msml-clean-s44 (cleaned, n = 3) vs ng-svm-clean · ")
    assert "L2 0.7100 / 0.6600 vs 0.7000 / 0.6500" in cleaned_text
    # a reference one level deeper than the runs: no claim, not a crash
    _write(recs, *runs("ng-svm-clean", [(0.80, 0.75), (0.70, 0.65), (0.6, 0.6)], "cleaned", model="tfidf",
                       classifier="svm"))
    assert above()[1] == ("not yet run", "20ng-msml-clean · 20ng-msml-clean-s43 · 20ng-msml-clean-s44 "
                                         "(cleaned, n = 3) or ng-svm-clean · ng-svm-clean-s43 · "
                                         "ng-svm-clean-s44: no level 3 figures in every seed")


def test_results_read_mean_records(tmp_path):
    from hmtc.record import aggregate_records
    recs = tmp_path / "records"
    recs.mkdir()
    seeds = _seeds("x", "duee", "msml", [(0.95, 0.94), (0.96, 0.95), (0.97, 0.96)])
    _write(recs, aggregate_records(seeds) | {"name": "duee-msml", "config_name": "duee-msml",
                                             "command": "hmtc train experiments/duee-msml.toml --seeds 42,43,44"})
    text = (invoke(app, "results", "--records", recs, "--out", tmp_path / "R.md", "--goals", GOALS) and
            (tmp_path / "R.md").read_text(encoding="utf-8"))
    row = next(line for line in text.splitlines() if line.startswith("| duee-msml |"))
    assert "| 3 | 0.9600 ± 0.0100 |" in row and "--seeds 42,43,44" in row


def test_the_default_is_the_config_that_ran_whatever_its_name(tmp_path):
    recs = tmp_path / "records"
    recs.mkdir()
    # an ablation that became the default (same settings as duee-msml.toml, another name), a former
    # default named duee-msml with other settings, and flat on the ablation's recipe
    _write(recs, *_seeds("duee-msml-x", "duee", "msml", [(0.96, 0.95)] * 3, options={"gates": False}),
           *_seeds("duee-msml", "duee", "msml", [(0.90, 0.90)] * 3, epochs=6),
           *_seeds("duee-flat", "duee", "flat", [(0.95, 0.94)] * 3))
    (tmp_path / "duee-msml.toml").write_text(
        'name = "duee-msml"\n[data]\ndataset = "duee"\n[model]\nname = "msml"\nencoder = "me5-small"\n'
        'options = { gates = false }\n[train]\nepochs = 4\n[decode]\ncomplete = false\n', encoding="utf-8")
    out = tmp_path / "RESULTS.md"
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    text = out.read_text(encoding="utf-8")
    status, measured = next((r[2], r[3]) for r in _goal_rows(text) if r[1].startswith("the default MSML ≥ flat"))
    assert status == "met" and measured.startswith("duee-msml-x · duee-msml-x-s43 · duee-msml-x-s44 0.9600 / 0.9500")
    assert "not the default: duee-msml · duee-msml-s43 · duee-msml-s44" not in measured    # no flat on its recipe
    assert "| `duee-msml.toml` |" not in text            # not listed as a config never run


def test_results_without_goals_are_tables_alone(tmp_path):
    """hmtc results is generic: without --goals it judges nothing and cites nobody; an empty folder
    or a goals file of an unknown kind is one error."""
    recs = tmp_path / "records"
    recs.mkdir()
    r = runner.invoke(app, ["results", "--records", str(recs), "--out", str(tmp_path / "R.md")])
    assert r.exit_code != 0 and "no run records" in str(r.exception) and not (tmp_path / "R.md").exists()
    _write(recs, *_seeds("duee-msml", "duee", "msml", [(0.95, 0.94)] * 3))
    (tmp_path / "duee-msml.toml").write_text('name = "duee-msml"\n[data]\ndataset = "duee"\n[model]\nname = "msml"\n'
                                             'encoder = "me5-small"\n[train]\nepochs = 4\n[decode]\ncomplete = false\n',
                                             encoding="utf-8")
    invoke(app, "results", "--records", recs, "--out", tmp_path / "R.md")
    text = (tmp_path / "R.md").read_text(encoding="utf-8")
    assert "| duee-msml · duee-msml-s43 · duee-msml-s44 |" in text
    assert "## Goals" not in text and "Published reference figures" not in text and "0.955" not in text
    bad = tmp_path / "goals.toml"
    bad.write_text('[[goals]]\ndataset = "duee"\nkind = "best"\n', encoding="utf-8")
    r = runner.invoke(app, ["results", "--records", str(recs), "--out", str(tmp_path / "R2.md"), "--goals", str(bad)])
    assert r.exit_code != 0 and "goal 1: kind 'best' is none of above_flat" in str(r.exception)
    bad.write_text('[[goals]]\ndataset = "duee"\nkind = "bar"\nleaf_micro_f1 = 0.9\n', encoding="utf-8")
    r = runner.invoke(app, ["results", "--records", str(recs), "--out", str(tmp_path / "R2.md"), "--goals", str(bad)])
    assert r.exit_code != 0 and "goal 1 (bar): missing leaf_macro_f1" in str(r.exception)
    # a goals file of its own: a bar on this dataset, the config named there marks the default
    bad.write_text('[defaults]\nduee = "duee-msml.toml"\n[[goals]]\ndataset = "duee"\nkind = "bar"\n'
                   'leaf_micro_f1 = 0.9\nleaf_macro_f1 = 0.9\n', encoding="utf-8")
    invoke(app, "results", "--records", recs, "--out", tmp_path / "R.md", "--goals", bad)
    rows = _goal_rows((tmp_path / "R.md").read_text(encoding="utf-8"))
    assert rows == [["duee", "the default MSML leaf micro-F1 ≥ 0.9 and macro-F1 ≥ 0.9", "met",
                     "duee-msml · duee-msml-s43 · duee-msml-s44: 0.9500 / 0.9400 in 1h 02m per seed"]]


def test_labelling_loops_are_drawn_from_their_records(tmp_path):
    recs, loops = tmp_path / "records", tmp_path / "loops"
    recs.mkdir()
    loops.mkdir()
    _write(recs, _record("duee-msml", "duee", "msml", 0.9, 0.9, [(0.9, 0.9), (0.9, 0.9)]))
    loop = {"kind": "labelling-loop", "dataset": "duee", "command": "python benchmarks/labelling_loop.py",
            "git_commit": "0123456789abcdef", "start_shots": 8, "rounds": 2, "batch": 200, "seeds": [42, 43, 44],
            "strategies": ["uncertain", "random"],
            "mean": {"uncertain": {"leaf_macro_f1": [0.7, 0.75, 0.8], "labelled": [465, 665, 865]},
                     "random": {"leaf_macro_f1": [0.7, 0.72, 0.74], "labelled": [465, 665, 865]}},
            "std": {"uncertain": {"leaf_macro_f1": [0.01, 0.02, 0.01]}, "random": {"leaf_macro_f1": [0.01, 0.01, 0.02]}}}
    (loops / "labelling-duee.json").write_text(json.dumps(loop), encoding="utf-8")
    invoke(app, "results", "--records", recs, "--out", tmp_path / "R.md")
    section = (tmp_path / "R.md").read_text(encoding="utf-8").split("## Labelling loops")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == ["strategy", "round 0 (465 texts)", "round 1 (665 texts)", "round 2 (865 texts)"]
    assert rows[1] == ["uncertain", "0.7000 ± 0.0100", "0.7500 ± 0.0200", "0.8000 ± 0.0100"]
    assert rows[3] == ["uncertain − random", "+0.00 points", "+3.00 points", "+6.00 points"]
    assert (tmp_path / "loop-labelling-duee.png").read_bytes().startswith(b"\x89PNG")
    (loops / "bad.json").write_text('{"kind": "run"}', encoding="utf-8")
    r = runner.invoke(app, ["results", "--records", str(recs), "--out", str(tmp_path / "R.md")])
    assert r.exit_code != 0 and "not a labelling-loop record" in str(r.exception)


def test_welch_t_on_known_values():
    from hmtc.results import _welch, groups
    a, b = (groups(_seeds(n, "duee", "msml", leafs)) for n, leafs in
            (("a", [(0.91, 0.9), (0.92, 0.9), (0.93, 0.9)]), ("b", [(0.90, 0.9)] * 3)))
    # means 0.92 vs 0.90, sample sds 0.01 and 0: t = 0.02 / sqrt(0.01² / 3) = 2 √3
    assert abs(_welch(a[0], b[0], "leaf_micro_f1") - 2 * 3 ** 0.5) < 1e-9
    assert _welch(a[0], b[0], "leaf_macro_f1") == 0.0


def test_learning_curves_from_known_records(tmp_path):
    recs = tmp_path / "records"
    recs.mkdir()

    def curve(name, model, k, leafs, options=None):
        out = _seeds(name, "duee", model, leafs, options=options)
        for r in out:
            if k is not None:
                r["config"]["data"]["shots"] = k
        return out
    _write(recs,
           *curve("duee-proto-k2", "zeroshot", 2, [(0.66, 0.60), (0.68, 0.62), (0.70, 0.64)]),
           *curve("duee-proto-k8", "zeroshot", 8, [(0.76, 0.70)] * 3),
           *curve("duee-zeroshot", "zeroshot", 0, [(0.56, 0.58)] * 3),
           *curve("duee-tfidf-k2", "tfidf", 2, [(0.30, 0.20), (0.32, 0.22), (0.34, 0.24)]),
           *curve("duee-tfidf-all", "tfidf", None, [(0.92, 0.90)] * 3),       # its full point: same settings, every text
           *curve("duee-flat", "flat", None, [(0.94, 0.93)] * 3))             # no few-shot point: no curve
    out = tmp_path / "RESULTS.md"
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    section = out.read_text(encoding="utf-8").split("## Learning curves")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == ["method", "model", "K = 0", "K = 2", "K = 8", "all", "train time (last point)"]
    assert rows[1] == ["duee-proto / duee-zeroshot", "zeroshot", "0.5800 ± 0.0000 (3)", "0.6200 ± 0.0200 (3)",
                       "0.7000 ± 0.0000 (3)", "–", "3725 s"]
    assert rows[2] == ["duee-tfidf / duee-tfidf-all", "tfidf", "–", "0.2200 ± 0.0200 (3)", "–", "0.9000 ± 0.0000 (3)",
                       "3725 s"]
    assert len(rows) == 3 and "![duee learning curves](curves-duee.png)" in section
    png = (tmp_path / "curves-duee.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    invoke(app, "results", "--records", recs, "--out", out, "--goals", GOALS)
    assert (tmp_path / "curves-duee.png").read_bytes() == png         # the same records draw the same picture


def test_markdown_never_passes_a_text_through_as_html():
    """A bad case's text with <script> or backticks stays text in report.md (report.html escapes it)."""
    from hmtc.report import Code, markdown_table, md_code
    table = markdown_table(["text", "gold"], [[Code("<script>alert(1)</script> a`b``c"), "<script>x</script>"]])
    # a code span shows its text literally; a plain cell's brackets are entities
    assert "| ```<script>alert(1)</script> a`b``c``` | &lt;script>x&lt;/script> |" in table
    assert md_code("`x`") == "`` `x` ``" and md_code("plain") == "`plain`"
