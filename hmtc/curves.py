"""Learning curves from run records: a figure against the number of training texts per node; and
the curves of simulated labelling loops (a figure against the texts labelled, per strategy).

A *method* is a configuration with the scarce-data keys left out (``data.shots``,
``data.dev_shots``, ``data.train_fraction``): the groups of one method (:class:`hmtc.results.Group`,
seed-averaged) that differ only in K form its curve, and the method's group on every text
(``shots = "all"``) is its last point, "full". Only methods with at least one few-shot point are
drawn, and points of one curve must share their seeds (a mean over other seeds is another
experiment). Each cell is the mean ± sample standard deviation over the seeds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import HmtcError
from .report import _figure, _png

SHOT_KEYS = ("data.shots", "data.dev_shots", "data.train_fraction")
FULL = "all"


def method_key(g) -> str:
    """What a group trains, apart from how many texts it sees, and on which seeds."""
    keep = {k: v for k, v in g.settings.items() if k not in SHOT_KEYS}
    return json.dumps(keep, sort_keys=True, default=str) + f"|{g.seeds}|{g.dataset}"


def shots(g) -> int | str:
    """K of a group (``"all"`` for every text, also for records from before the key existed)."""
    if g.settings.get("data.train_fraction", 1.0) != 1.0:
        return f"{g.settings['data.train_fraction']:g}×"
    return g.settings.get("data.shots", FULL)


def _label(names: list[str]) -> str:
    """The method's name: its groups' names without ``-k<K>`` (before a tag such as ``.level``)."""
    stems = sorted({re.sub(r"-k\d+(?=$|\.)", "", n.split(" · ")[0]) for n in names})
    return stems[0] if len(stems) == 1 else " / ".join(stems)


def curves(gs: list, metric: str = "leaf_macro_f1") -> dict[str, list[tuple[str, dict]]]:
    """Per dataset, each method's label and its points ``{K: group}``, methods sorted by label.

    Parameters
    ----------
    gs : list of Group
    metric : str
        A record metric the points must all have.
    """
    by_method: dict[str, dict] = {}
    for g in gs:
        if g.stat(metric) is None:
            continue
        by_method.setdefault(method_key(g), {})
        k = shots(g)
        have = by_method[method_key(g)].get(k)
        if have is None or (g.n, g.name) > (have.n, have.name):
            by_method[method_key(g)][k] = g
    out: dict[str, list[tuple[str, dict]]] = {}
    for points in by_method.values():
        if not any(isinstance(k, int) for k in points):
            continue
        first = next(iter(points.values()))
        label = _label([g.name for g in points.values()])
        out.setdefault(first.dataset, []).append((label, points))
    return {d: sorted(ms, key=lambda m: m[0]) for d, ms in sorted(out.items())}


def _order(k) -> tuple:
    return (0, k, "") if isinstance(k, int) else (1, 0, str(k))


def curve_table(methods: list[tuple[str, dict]], metric: str = "leaf_macro_f1") -> tuple[list[str], list[list]]:
    """(header, rows): one row per method, one column per K (full last); cells ``mean ± std (n)``."""
    ks = sorted({k for _, pts in methods for k in pts}, key=_order)
    header = ["method", "model", *[f"K = {k}" if isinstance(k, int) else str(k) for k in ks], "train time (last point)"]
    rows = []
    for label, pts in methods:
        cells = []
        for k in ks:
            g = pts.get(k)
            stat = g.stat(metric) if g else None
            cells.append(f"{stat[0]:.4f} ± {stat[1]:.4f} ({g.n})" if stat else "–")
        last = pts[max(pts, key=_order)]
        seconds = last.train_seconds
        rows.append([label, last.model, *cells, "–" if seconds is None else f"{seconds:.0f} s"])
    return header, rows


def curve_png(methods: list[tuple[str, dict]], title: str, metric: str = "leaf_macro_f1") -> bytes:
    """The curves as a PNG: ``metric`` against K on a symmetric-log axis (K = 0 at 0, "full" one
    step right of the largest K), one line per method with a ± std band."""
    ints = sorted({k for _, pts in methods for k in pts if isinstance(k, int)})
    top = max(ints or [1])
    where = {k: float(k) for k in ints}
    extra = [k for _, pts in methods for k in pts if not isinstance(k, int)]
    for i, k in enumerate(sorted(set(extra), key=str)):
        where[k] = top * 4.0 ** (i + 1)
    with _figure(7.0, 4.2) as fig:
        ax = fig.add_subplot()
        for label, pts in methods:
            ks = sorted(pts, key=lambda k: where[k])
            xs = [where[k] for k in ks]
            stats = [pts[k].stat(metric) for k in ks]
            mean = [s[0] for s in stats]
            std = [s[1] for s in stats]
            line, = ax.plot(xs, mean, marker="o", label=label)
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("symlog", linthresh=1)
        ticks = sorted(where, key=lambda k: where[k])
        ax.set_xticks([where[k] for k in ticks], [str(k) for k in ticks])
        ax.set_xlabel("training texts per node (K)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return _png(fig)


# ---- labelling loops ------------------------------------------------------------------------
def load_loops(folder) -> list[dict]:
    """The labelling-loop records (``benchmarks/labelling_loop.py``) in ``folder``, by dataset and name;
    none when it does not exist."""
    out = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HmtcError(f"not a readable record: {e}", path) from None
        if not isinstance(rec, dict) or rec.get("kind") != "labelling-loop" or not isinstance(rec.get("mean"), dict):
            raise HmtcError("not a labelling-loop record (kind, mean)", path)
        out.append({**rec, "file": path.name})
    return sorted(out, key=lambda r: (r["dataset"], r["file"]))


def loop_table(rec: dict, metric: str = "leaf_macro_f1") -> tuple[list[str], list[list]]:
    """(header, rows) of one loop: a row per strategy, a column per round (mean labelled texts),
    cells ``mean ± std``; a last row with each round's difference of the first strategy minus the
    second."""
    strategies = rec["strategies"]
    labelled = rec["mean"][strategies[0]]["labelled"]
    header = ["strategy", *[f"round {r} ({n:.0f} texts)" for r, n in enumerate(labelled)]]
    rows = [[s, *[f"{m:.4f} ± {sd:.4f}" for m, sd in zip(rec["mean"][s][metric], rec["std"][s][metric])]]
            for s in strategies]
    if len(strategies) == 2:
        a, b = (rec["mean"][s][metric] for s in strategies)
        rows.append([f"{strategies[0]} − {strategies[1]}", *[f"{100 * (x - y):+.2f} points" for x, y in zip(a, b)]])
    return header, rows


def loop_png(rec: dict, metric: str = "leaf_macro_f1") -> bytes:
    """One loop as a PNG: ``metric`` against the labelled texts, a line per strategy with a ± std band."""
    with _figure(7.0, 4.2) as fig:
        ax = fig.add_subplot()
        for s in rec["strategies"]:
            xs, mean, std = rec["mean"][s]["labelled"], rec["mean"][s][metric], rec["std"][s][metric]
            line, = ax.plot(xs, mean, marker="o", label=s)
            ax.fill_between(xs, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("labelled training texts")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(f"{rec['dataset']}: labelling loop, {len(rec['seeds'])} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return _png(fig)
