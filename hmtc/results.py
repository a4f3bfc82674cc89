"""``experiments/RESULTS.md``, regenerated from the run records (``hmtc results``).

Every record JSON under the records folder (written by ``hmtc eval``) becomes one row of its
dataset's table, with the command, commit, seed, training time and machine that produced it.
Published reference figures stand beside ours, and the roadmap's goals are checked against
the records. The output depends only on the records, in a fixed order, so running the command
twice gives the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import HmtcError
from .io import atomic_write_text
from .report import Code, duration, machine_text, markdown_table

MET, MISSED, NOT_RUN = "met", "missed", "not yet run"

DUEE_SOURCE = ("percent4/keras_bert_multi_label_cls README, as cited in "
               "datasets/duee/README.md; test = DuEE 1.0 dev, 1,498 texts, 65 event types")
# Published figures comparable with ours: (model, figures in the order of REFERENCE_COLUMNS, source).
REFERENCES: dict[str, list[tuple[str, tuple[float, ...], str]]] = {
    "duee": [
        ("RoFormer-v2-base", (0.9627, 0.9522), "percent4 repositories, as cited in the roadmap "
                                               "(not in datasets/duee/README.md; not re-checked)"),
        ("BERT-wwm-ext + FGM", (0.9580, 0.9463), DUEE_SOURCE),
        ("BERT-base", (0.9458, 0.9370), DUEE_SOURCE),
    ],
    "goemotions": [
        ("BERT-base-cased", (0.5030, 0.6238, 0.7006), "monologg/GoEmotions-pytorch README (test split)"),
        ("BERT-base", (0.46, 0.64, 0.69), "Demszky et al. 2020, GoEmotions (ACL), test split"),
    ],
}
REFERENCE_COLUMNS = {
    "duee": ("leaf micro-F1", "leaf macro-F1"),
    "goemotions": ("macro-F1, 28 emotions (level 3)", "macro-F1, Ekman (level 2)", "macro-F1, sentiment (level 1)"),
}
GOEMOTIONS_BERT = dict(zip((3, 2, 1), REFERENCES["goemotions"][0][1]))
DUEE_AIM = (0.965, 0.955)


def load_records(records_dir: str | Path) -> list[dict]:
    """Every ``*.json`` record in the folder, by file name."""
    records = []
    for path in sorted(Path(records_dir).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HmtcError(f"not a readable record: {e}", path) from None
        if not isinstance(rec, dict) or "dataset" not in rec or "metrics" not in rec:
            raise HmtcError("not a run record (no dataset or metrics)", path)
        records.append(rec)
    return records


def _level(rec: dict, k: int, avg: str = "macro") -> float | None:
    return next((lv[f"{avg}_f1"] for lv in rec["metrics"].get("per_level", []) if lv["level"] == k), None)


def _depth(rec: dict) -> int:
    return len(rec["metrics"].get("per_level", []))


def reference_figures(dataset: str, rec: dict) -> tuple:
    """Our figures in the published convention of ``dataset`` (see REFERENCE_COLUMNS)."""
    if dataset == "duee":
        return rec["metrics"]["leaf_micro_f1"], rec["metrics"]["leaf_macro_f1"]
    return tuple(_level(rec, k) for k in (3, 2, 1))


def _name(rec: dict) -> str:
    return rec.get("name") or "?"


def _short_commit(commit: str | None) -> str:
    commit = commit or "?"
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def _tfidf_svm(rec: dict) -> bool:
    return rec.get("model") == "tfidf" and \
        rec.get("config", {}).get("model", {}).get("options", {}).get("classifier", "svm") == "svm"


# ---- goals ------------------------------------------------------------------------------------
def goals(records: list[dict]) -> list[list[str]]:
    """Rows (dataset, goal, status, measured) for the roadmap's goals."""
    by = {d: [r for r in records if r["dataset"] == d] for d in ("duee", "goemotions", "20newsgroups")}
    return [*_duee_goals(by["duee"]), _goemotions_goal(by["goemotions"]), _newsgroups_goal(by["20newsgroups"])]


def _leaf(rec: dict) -> tuple[float, float]:
    return rec["metrics"]["leaf_micro_f1"], rec["metrics"]["leaf_macro_f1"]


def _duee_goals(recs: list[dict]) -> list[list[str]]:
    def budget(r):
        c = r.get("config", {})
        return (r.get("encoder") or "", c.get("train", {}).get("epochs"), c.get("data", {}).get("train_limit"),
                c.get("data", {}).get("max_length"))

    def best(rs):
        return max(rs, key=lambda r: (_leaf(r), _name(r))) if rs else None

    lines, status = [], NOT_RUN
    for key in sorted({budget(r) for r in recs if r.get("model") == "msml"}, key=str):
        m = best([r for r in recs if r.get("model") == "msml" and budget(r) == key])
        f = best([r for r in recs if r.get("model") == "flat" and budget(r) == key])
        if f is None:
            continue
        ok = _leaf(m)[0] >= _leaf(f)[0] and _leaf(m)[1] >= _leaf(f)[1]
        status = MET if ok or status == MET else MISSED
        lines.append(f"{_name(m)} {_leaf(m)[0]:.4f} / {_leaf(m)[1]:.4f} vs {_name(f)} "
                     f"{_leaf(f)[0]:.4f} / {_leaf(f)[1]:.4f} (encoder {key[0]}, {key[1]} epochs)")
    same = ["MSML ≥ flat, same encoder and budget (epochs, train limit, max length); "
            "leaf micro / macro-F1", status, "; ".join(lines) or "no MSML and flat pair with the same budget"]
    m = best([r for r in recs if r.get("model") == "msml"])
    if m is None:
        aim = [NOT_RUN, "no MSML run"]
    else:
        mi, ma = _leaf(m)
        aim = [MET if mi >= DUEE_AIM[0] and ma >= DUEE_AIM[1] else MISSED,
               f"best MSML {_name(m)}: {mi:.4f} / {ma:.4f}"]
    return [["duee", *same], ["duee", f"MSML leaf micro-F1 ≥ {DUEE_AIM[0]} and macro-F1 ≥ {DUEE_AIM[1]}", *aim]]


def _goemotions_goal(recs: list[dict]) -> list[str]:
    goal = ("macro-F1 above BERT-base (monologg) at all three levels: " +
            ", ".join(f"L{k} > {v:.4f}" for k, v in sorted(GOEMOTIONS_BERT.items())))
    scored = [(min((_level(r, k) or 0.0) - v for k, v in GOEMOTIONS_BERT.items()), _name(r), r)
              for r in recs if _depth(r) >= 3]
    if not scored:
        return ["goemotions", goal, NOT_RUN, "no run"]
    margin, _, r = max(scored, key=lambda t: t[:2])
    figures = ", ".join(f"L{k} {_level(r, k):.4f}" for k in (1, 2, 3))
    return ["goemotions", goal, MET if margin > 0 else MISSED, f"best {_name(r)}: {figures}"]


def _newsgroups_goal(recs: list[dict]) -> list[str]:
    goal = "above TF-IDF + LinearSVC at every level (micro- and macro-F1)"
    base = [r for r in recs if _tfidf_svm(r)]
    others = [r for r in recs if r.get("model") != "tfidf"]
    if not base or not others:
        return ["20newsgroups", goal, NOT_RUN, "no TF-IDF + LinearSVC run" if not base else "no model run"]
    b = max(base, key=lambda r: (r["metrics"]["micro_f1"], _name(r)))
    levels = range(1, _depth(b) + 1)

    def margin(r):
        return min((_level(r, k, a) or 0.0) - _level(b, k, a) for k in levels for a in ("micro", "macro"))

    margin_, _, r = max(((margin(r), _name(r), r) for r in others), key=lambda t: t[:2])
    figures = "; ".join(f"L{k} {_level(r, k, 'micro'):.4f} / {_level(r, k):.4f} vs "
                        f"{_level(b, k, 'micro'):.4f} / {_level(b, k):.4f}" for k in levels)
    return ["20newsgroups", goal, MET if margin_ > 0 else MISSED, f"best {_name(r)} vs {_name(b)}: {figures}"]


def configs_without_record(records: list[dict], configs_dir: Path) -> list[list]:
    """Rows (config, dataset, model, command) for the ``*.toml`` experiment configs in
    ``configs_dir`` whose ``name`` no record carries (engine variants count as their run's)."""
    from .config import tomllib
    names = {_name(r).split(".")[0] for r in records}
    rows = []
    for path in sorted(configs_dir.glob("*.toml")):
        try:
            cfg = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise HmtcError(f"not a readable config: {e}", path) from None
        name = cfg.get("name", path.stem)
        if "model" in cfg and name not in names:
            rows.append([Code(path.name), cfg.get("data", {}).get("dataset", "?"), cfg["model"].get("name", "?"),
                         Code(f"hmtc train {path.parent.name}/{path.name}")])
    return rows


# ---- the file -------------------------------------------------------------------------------
def render_results(records_dir: str | Path, out: str | Path = "experiments/RESULTS.md") -> str:
    """The Markdown of RESULTS.md for the records in ``records_dir``."""
    records = load_records(records_dir)
    command = f"hmtc results --records {records_dir} --out {out}"
    parts = ["# Results", "",
             f"Generated by `{command}` from the run records in `{records_dir}/` (one per evaluated run, "
             "written by `hmtc eval`); edit the records or the code, never this file.", "",
             "Figures are on each dataset's test split after consistent decoding. Micro pools the labels of "
             "all levels, macro averages every label; per-level cells are micro / macro-F1; hier F1 adds "
             "ancestors to both sets; 'inconsistent' is the share of samples with a predicted node whose "
             "parent is not predicted (docs/metrics.md).", "",
             "## Goals", "",
             markdown_table(["dataset", "goal", "status", "measured"], goals(records)), ""]
    datasets = sorted({r["dataset"] for r in records})
    for d in datasets:
        recs = sorted((r for r in records if r["dataset"] == d),
                      key=lambda r: (-(r["metrics"].get("micro_f1") or 0.0), _name(r)))
        depth = max(_depth(r) for r in recs)
        header = (["run", "model", "encoder", "micro F1", "macro F1"] +
                  [f"L{k} mi / ma" for k in range(1, depth + 1)] +
                  ["hier F1", "inconsistent", "train time", "machine", "seed", "commit", "command"])
        rows = []
        for r in recs:
            m = r["metrics"]
            levels = [f"{_level(r, k, 'micro'):.4f} / {_level(r, k):.4f}" if _level(r, k) is not None else None
                      for k in range(1, depth + 1)]
            rows.append([_name(r), r.get("model"), r.get("encoder") or "–", m.get("micro_f1"), m.get("macro_f1"),
                         *levels, m.get("hier_f1"),
                         f"{100 * m['inconsistent_samples']:.2f}%" if m.get("inconsistent_samples") is not None else None,
                         duration(r.get("train_seconds")), machine_text(r.get("machine")), r.get("seed"),
                         Code(_short_commit(r.get("git_commit"))),
                         Code(r.get("command") or "–")])
        parts += [f"## {d}", "", markdown_table(header, rows), ""]
    missing = configs_without_record(records, Path(records_dir).parent)
    if missing:
        parts += ["## Configs not run yet", "",
                  "Experiment configs beside the records folder whose run has no record; "
                  "each runs with its command.", "",
                  markdown_table(["config", "dataset", "model", "command"], missing), ""]
    parts += ["## Published reference figures", "",
              "Published figures with their sources, and ours in the same convention beside them.", ""]
    for d, refs in sorted(REFERENCES.items()):
        ours = sorted((r for r in records if r["dataset"] == d), key=lambda r: _name(r))
        rows = [[model, *vals, source] for model, vals, source in refs]
        rows += [[f"{_name(r)} (ours)", *reference_figures(d, r), f"record {_name(r)}.json"] for r in ours]
        parts += [f"### {d}", "", markdown_table(["model", *REFERENCE_COLUMNS[d], "source"], rows), ""]
    return "\n".join(parts)


def write_results(records_dir: str | Path = "experiments/records",
                  out: str | Path = "experiments/RESULTS.md") -> Path:
    """Regenerate ``out`` from the records, atomically; returns its path."""
    atomic_write_text(out, render_results(records_dir, out))
    return Path(out)
