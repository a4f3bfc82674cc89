"""``hmtc metrics``: score a prediction file against a gold file (definitions: docs/metrics.md)."""

from __future__ import annotations

import difflib
import json
from enum import Enum
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import DataError
from ..label_classes import with_absent_classes
from ..metrics import augment_ancestors, evaluate
from ..taxonomy import Taxonomy, TaxonomyIndex


class DagMode(str, Enum):
    strict = "strict"
    lenient = "lenient"


def _read_label_sets(path: Path, index: TaxonomyIndex, root: str) -> tuple[sp.csr_array, list[int]]:
    """Indicator matrix of a ``{"labels": [...]}`` JSONL file and the line of each record.

    Blank lines are passed over; the root id, implicit in every sample, is ignored.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a JSONL file", path) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    ids = index.id_to_index
    rows: list[int] = []
    cols: list[int] = []
    lines: list[int] = []
    for no, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path, no) from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", path, no) from None
        except RecursionError:               # json recurses per level of nesting
            raise DataError("malformed JSON: nested too deeply", path, no) from None
        if not isinstance(rec, dict) or "labels" not in rec:
            raise DataError('expected a JSON object with a "labels" list', path, no)
        labels = rec["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise DataError('"labels" must be a list of node ids (strings)', path, no)
        r = len(lines)
        for lab in labels:
            col = ids.get(lab)
            if col is None:
                if lab == root:
                    continue
                close = difflib.get_close_matches(lab, index.ids, n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise DataError(f"unknown label {lab!r}{hint}", path, no, lab)
            rows.append(r)
            cols.append(col)
        lines.append(no)
    shape = (len(lines), index.n_nodes)
    return sp.csr_array((np.ones(len(rows), dtype=bool), (rows, cols)), shape=shape), lines


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _prf(res: dict, prefix: str) -> str:
    return " / ".join(_fmt(res[f"{prefix}_{k}"]) for k in ("precision", "recall", "f1"))


def _table(title: str, *columns: str, **kw) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, **kw)
    for c in columns:
        t.add_column(c, justify="left" if c in ("metric", "id", "name", "classes") else "right")
    return t


def _print_tables(res: dict, per_label: bool) -> None:
    con = Console(emoji=False)
    con.print(f"{res['n_samples']} samples, {res['n_labels']} labels; "
              f"zero_division={res['zero_division']}, DAG mode {res['dag_mode']}")
    overall = _table("Overall (all levels pooled)", "metric", "value")
    for name, v in (("micro P / R / F1", _prf(res, "micro")),
                    ("macro P / R / F1", _prf(res, "macro")),
                    ("leaf micro-F1", res["leaf_micro_f1"]),
                    ("leaf macro-F1", res["leaf_macro_f1"]),
                    ("samples F1", res["samples_f1"]), ("exact match", res["exact_match"]),
                    ("hamming loss", res["hamming_loss"]),
                    ("1 - hamming loss", res["one_minus_hamming_loss"]),
                    ("hamming score (Jaccard)", res["hamming_score_jaccard"])):
        overall.add_row(name, _fmt(v))
    con.print(overall)
    # Compact padding keeps nine columns inside 80 characters (pipes, CI logs).
    levels = _table("Per level (mi = micro, ma = macro)", "level", "labels", "support", "mi-P",
                    "mi-R", "mi-F1", "ma-P", "ma-R", "ma-F1", pad_edge=False, collapse_padding=True)
    for r in res["per_level"]:
        levels.add_row(*(_fmt(r[k]) for k in ("level", "n_labels", "support")),
                       *_prf(r, "micro").split(" / "), *_prf(r, "macro").split(" / "))
    con.print(levels)
    hier = _table("Hierarchical and consistency", "metric", "value")
    for name, v in (("hier P / R / F1", _prf(res, "hier")),
                    ("C-micro-F1", res["c_micro_f1"]), ("C-macro-F1", res["c_macro_f1"]),
                    ("inconsistent samples", res["inconsistent_samples"]),
                    ("orphan nodes", res["orphan_nodes"]),
                    ("orphans / predicted nodes",
                     f"{res['n_orphan_nodes']} / {res['n_predicted_nodes']}")):
        hier.add_row(name, _fmt(v))
    con.print(hier)
    if "label_classes" in res:
        lc = res["label_classes"]
        classes = _table(f"Per-label classes (mean accuracy {_fmt(lc['mean_accuracy'])}, macro-F1 "
                         f"{_fmt(lc['mean_macro_f1'])}, RMSE {_fmt(lc['mean_rmse'])})",
                         "id", "classes", "accuracy", "macro-F1", "RMSE")
        for r in lc["per_label"]:
            classes.add_row(escape(r["id"]), escape(" < ".join(r["classes"])),
                            *(_fmt(r[k]) for k in ("accuracy", "macro_f1", "rmse")))
        con.print(classes)
    if per_label:
        labels = _table("Per label", "id", "name", "level", "P", "R", "F1", "support", "predicted")
        for r in res["per_label"]:
            labels.add_row(escape(r["id"]), escape(r["name"]), *(_fmt(r[k]) for k in (
                "level", "precision", "recall", "f1", "support", "predicted")))
        con.print(labels)


def metrics_command(
    gold: Path = typer.Argument(..., show_default=False,
                                help='Gold JSONL: one object per line, "labels" holding node ids; '
                                     "closed under ancestors before scoring."),
    pred: Path = typer.Argument(..., show_default=False,
                                help="Predicted JSONL, same format and order; scored as given "
                                     "(not closed), so inconsistencies show."),
    taxonomy: Path = typer.Option(..., "--taxonomy", "-t", show_default=False,
                                  help="Taxonomy file (.tax) the label ids belong to."),
    json_out: bool = typer.Option(False, "--json", help="Print every figure as one JSON object."),
    per_label: bool = typer.Option(False, "--per-label",
                                   help="Add per-label precision/recall/F1/support."),
    dag_mode: DagMode = typer.Option(DagMode.strict, "--dag-mode", case_sensitive=False,
                                     help="Nodes with several parents: an orphan when any "
                                          "parent is missing (strict) or when all are (lenient)."),
    zero_division: float = typer.Option(0.0, "--zero-division",
                                        help="Value of a ratio with a zero denominator (0, 1 or "
                                             "nan; nan leaves it out of averages)."),
) -> None:
    """Score predictions against gold labels: flat, per-level, hierarchical and consistency metrics.

    Micro/macro P/R/F1 pool all levels; macro counts every label (F1 = 0 with no gold support).
    Per-level scores use one level's labels, leaf scores the leaves.
    Hierarchical P/R/F1 adds ancestors to both sets; C-F1 counts a node only with its path.
    Orphans are predicted nodes whose parent is not predicted.
    Labels with classes (docs/label-classes.md) add accuracy, macro-F1 and RMSE over their classes;
    a label absent from a gold or predicted set is in its first class.
    Records pair up by order; blank lines and other keys are ignored. See docs/metrics.md.
    """
    tax = Taxonomy.load(taxonomy)
    index = tax.compile()
    y_true, gold_lines = _read_label_sets(gold, index, tax.root)
    y_pred, pred_lines = _read_label_sets(pred, index, tax.root)
    if len(gold_lines) != len(pred_lines):
        longer, lines, n = ((gold, gold_lines, len(pred_lines))
                            if len(gold_lines) > len(pred_lines)
                            else (pred, pred_lines, len(gold_lines)))
        raise DataError(f"record {n + 1} has no partner: {gold} has {len(gold_lines)} records, "
                        f"{pred} has {len(pred_lines)}; they must pair up line by line",
                        longer, lines[n])
    if not gold_lines:
        raise DataError("no records to score", gold)
    # gold as training reads it: closed under ancestors, an absent label with classes in its first class
    y_true = with_absent_classes(augment_ancestors(y_true, index), index)
    res = evaluate(y_true, y_pred, index, zero_division=zero_division,
                   dag_mode=dag_mode.value, include_per_label=per_label)
    if json_out:
        typer.echo(json.dumps(res, ensure_ascii=False, indent=2))
    else:
        _print_tables(res, per_label)
