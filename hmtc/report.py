"""Per-run reports (``hmtc report``) and side-by-side comparisons (``hmtc compare``).

A report reads what ``hmtc eval`` left in a run folder (``metrics.json``, ``test_scores.npz``,
``config.json``, ``run.json``, ``last/train_state.json``, ``best/taxonomy.tax``), reloads the
texts and training labels of the same splits with :func:`hmtc.data.prepare.prepare`, and writes
beside them, each file atomically::

    report.md          tables and relative links to report_files/*.png (readable on GitHub)
    report.html        the same content, self-contained: plots embedded as base64 PNG
    report_files/      the plots as PNG
    bad_cases.jsonl    the worst errors of the evaluated split, one JSON object per line
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from .config import RunConfig
from .data.prepare import prepare
from .decode import Decoding
from .errors import HmtcError
from .io import atomic_write_bytes, atomic_write_text, run_locked
from .record import evaluated
from .taxonomy import Taxonomy, TaxonomyIndex

SUMMARY_ROWS = (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"), ("leaf_micro_f1", "leaf micro-F1"),
                ("leaf_macro_f1", "leaf macro-F1"), ("hier_f1", "hierarchical F1"),
                ("c_micro_f1", "C-micro-F1"), ("c_macro_f1", "C-macro-F1"),
                ("exact_match", "exact match"), ("samples_f1", "samples F1"),
                ("inconsistent_samples", "inconsistent samples"), ("orphan_nodes", "orphan nodes"))


# ---- reading a run ----------------------------------------------------------------------------
def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@dataclass
class Run:
    """What ``hmtc train`` + ``hmtc eval`` left in a run folder (arrays only when asked for)."""

    path: Path
    metrics: dict
    config: RunConfig | None          # None: the folder keeps no config
    meta: dict
    state: dict
    arrays: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name if self.config is not None else self.path.name


def load_run(path: str | Path, arrays: bool = False) -> Run:
    """Read a run folder; ``arrays`` also loads ``test_scores.npz`` (scores, gold, pred)."""
    path = Path(path)
    if not path.is_dir():
        raise HmtcError("no such run folder", path)
    metrics = _json(path / "metrics.json")
    if not metrics:
        raise HmtcError("no metrics.json: evaluate the run first (hmtc eval RUN)", path)
    meta = _json(path / "run.json")
    # an ensemble's folder (hmtc ensemble) holds only its checkpoint and run.json, which sums its
    # members' training time
    source = path / "config.json" if (path / "config.json").is_file() else path / "best" / "checkpoint.json"
    stored = _json(source) if source.name == "config.json" else _json(source).get("config", {})
    config = RunConfig.from_dict(stored, source) if stored else None
    state = _json(path / "last" / "train_state.json") or (
        {"train_seconds": meta["train_seconds"]} if "train_seconds" in meta else {})
    run = Run(path, metrics, config, meta, state)
    if arrays:
        if not (path / "test_scores.npz").is_file():
            raise HmtcError("no test_scores.npz: re-run hmtc eval RUN", path)
        with np.load(path / "test_scores.npz") as z:
            run.arrays = {k: z[k] for k in ("scores", "gold", "pred")}
    return run


def thresholds(metrics: dict) -> np.ndarray | float:
    """The decision threshold(s) eval used: per label when tuned so, else the global one."""
    return Decoding.from_json(metrics["decode"]).thresholds


def probability_text(logit: float) -> str:
    """A logit threshold as the probability it stands for, the logit in brackets: ``0.7311 (logit 1)``.

    Scores are shown as sigmoid probabilities everywhere in a report, so thresholds are too.
    """
    return f"{float(expit(logit)):.4f} (logit {float(logit):g})"


# ---- analyses -------------------------------------------------------------------------------
def sibling_mask(index: TaxonomyIndex) -> np.ndarray:
    """(N, N) bool: nodes sharing a parent (the root counts, so level-1 nodes are siblings)."""
    n = index.n_nodes
    top = np.flatnonzero(index.n_parents == 0)
    rows = np.concatenate([np.repeat(np.arange(n), index.n_parents), top])
    cols = np.concatenate([index.parent_idx, np.full(len(top), n)])
    par = sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, n + 1))
    mask = (par @ par.T).toarray() > 0
    np.fill_diagonal(mask, False)
    return mask


def sibling_confusions(gold: np.ndarray, pred: np.ndarray, index: TaxonomyIndex) -> np.ndarray:
    """Count, for each gold node, which sibling was predicted instead.

    Parameters
    ----------
    gold, pred : ndarray of bool, shape (n_samples, n_nodes)
    index : TaxonomyIndex

    Returns
    -------
    counts : ndarray of int64, shape (n_nodes, n_nodes)
        ``counts[g, p]``: samples where gold node ``g`` was missed while its sibling ``p``
        was predicted without being gold.
    """
    gold, pred = np.asarray(gold, bool), np.asarray(pred, bool)
    missed = sp.csr_array((gold & ~pred).astype(np.int64))
    spurious = sp.csr_array((pred & ~gold).astype(np.int64))
    return (missed.T @ spurious).toarray() * sibling_mask(index)    # sparse: cost grows with errors


def top_confusions(counts: np.ndarray, index: TaxonomyIndex, support: np.ndarray, k: int) -> list[dict]:
    """The ``k`` largest sibling confusions, largest first (ties by column order)."""
    g, p = np.nonzero(counts)
    order = np.lexsort((p, g, -counts[g, p]))[:k]
    return [{"gold": index.ids[i], "predicted": index.ids[j], "count": int(counts[i, j]),
             "gold_support": int(support[i]), "parent": index.ids[index.parent[i]] if index.parent[i] >= 0 else None}
            for i, j in zip(g[order].tolist(), p[order].tolist())]


def label_paths(row: np.ndarray, index: TaxonomyIndex) -> list[list[int]]:
    """Each deepest node of a label set with its ancestors, ordered by level, as columns."""
    members = np.flatnonzero(row)
    parents = index.parents_padded[members].ravel()
    has_child = np.zeros(index.n_nodes, bool)
    has_child[parents[parents >= 0]] = True
    paths = []
    for tip in members[~has_child[members]]:
        anc = np.flatnonzero(index.ancestors[tip])
        paths.append(anc[np.argsort(index.levels[anc], kind="stable")].tolist() + [int(tip)])
    return paths


def bad_cases(texts: list[str], scores: np.ndarray, gold: np.ndarray, pred: np.ndarray,
              index: TaxonomyIndex, threshold: np.ndarray | float, k: int) -> list[dict]:
    """The ``k`` worst samples: most wrong nodes first, then the largest margin.

    Parameters
    ----------
    texts : list of str
    scores : ndarray of float, shape (n_samples, n_nodes)
        Logits.
    gold, pred : ndarray of bool, shape (n_samples, n_nodes)
    index : TaxonomyIndex
    threshold : float or ndarray of float, shape (n_nodes,)
        The logit threshold(s) decoding used.
    k : int
        Samples kept.

    Returns
    -------
    list of dict
        One per sample, worst first: ``index`` (row in the split), ``text``, ``gold`` and ``pred``
        (root-to-node paths of display names), ``missed`` and ``spurious`` (display names),
        ``n_wrong``, ``margin`` (the largest ``|logit - threshold|`` over the wrong nodes: how
        confidently the model erred) and ``scores`` (``{"id", "name", "score"}`` for every gold
        or predicted node, the score a sigmoid probability). ``gold_ids``, ``pred_ids``,
        ``missed_ids`` and ``spurious_ids`` hold the same labels as node ids, since display
        names need not be unique.
    """
    wrong = gold != pred
    n_wrong = wrong.sum(1)
    margin = np.where(wrong, np.abs(scores - threshold), 0.0).max(1, initial=0.0)
    order = np.lexsort((np.arange(len(texts)), -margin, -n_wrong))
    order = order[n_wrong[order] > 0][:k]
    prob = expit(scores[order])
    ids, names = index.ids, index.names
    out = []
    for r, i in enumerate(order.tolist()):
        gold_paths, pred_paths = label_paths(gold[i], index), label_paths(pred[i], index)
        missed, spurious = np.flatnonzero(gold[i] & ~pred[i]), np.flatnonzero(pred[i] & ~gold[i])
        out.append({"index": i, "text": texts[i],
                    "gold": [[names[j] for j in p] for p in gold_paths],
                    "gold_ids": [[ids[j] for j in p] for p in gold_paths],
                    "pred": [[names[j] for j in p] for p in pred_paths],
                    "pred_ids": [[ids[j] for j in p] for p in pred_paths],
                    "missed": [names[j] for j in missed], "missed_ids": [ids[j] for j in missed],
                    "spurious": [names[j] for j in spurious], "spurious_ids": [ids[j] for j in spurious],
                    "n_wrong": int(n_wrong[i]), "margin": round(float(margin[i]), 4),
                    "scores": [{"id": ids[j], "name": names[j], "score": round(float(prob[r, j]), 4)}
                               for j in np.flatnonzero(gold[i] | pred[i])]})
    return out


# ---- plots ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """Register an installed font that covers Chinese with matplotlib; its family, or None."""
    from matplotlib import font_manager     # deferred: matplotlib loads only when a report draws
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted({line.rpartition(":")[0].strip() for line in out.splitlines() if line.strip()},
                   key=lambda f: ("Regular" not in f, "Sans" not in f, f))   # plain sans first
    for f in files:
        try:
            font_manager.fontManager.addfont(f)
            return font_manager.FontProperties(fname=f).get_name()
        except (OSError, RuntimeError, ValueError):
            continue
    return None


@contextlib.contextmanager
def _figure(width: float, height: float):
    """An Agg figure, with the CJK font first in the sans-serif list for as long as it is drawn."""
    import matplotlib                       # deferred: matplotlib loads only when a report draws
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    family = cjk_font()
    with matplotlib.rc_context({"font.sans-serif": ([family] if family else []) + ["DejaVu Sans"]}):
        fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _plain_ticks(axis) -> None:
    """Log-axis ticks as plain numbers (``30``, not ``3 × 10^1``); minor ones only on a short range."""
    from matplotlib.ticker import LogFormatter     # deferred: matplotlib loads only when a report draws
    axis.set_major_formatter(LogFormatter())
    axis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))


def _plot_text(text: str, col: int) -> str:
    """The label as text when it can be drawn, else its column number (no CJK font)."""
    return text if text.isascii() or cjk_font() else f"#{col}"


def fitted_limits(values: np.ndarray, margin: float = 0.06, min_span: float = 0.1) -> tuple[float, float]:
    """Axis limits around ``values`` with a small margin, clipped to [0, 1].

    Parameters
    ----------
    values : ndarray of float
        Scores in [0, 1] (F1), not empty.
    margin : float
        Share of the shown span added on each side.
    min_span : float
        The least span shown before the margin, so that near-equal values are not spread over
        the whole height.

    Returns
    -------
    (low, high) : tuple of float
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    span = max(hi - lo, min_span)
    pad = margin * span + (span - (hi - lo)) / 2
    return max(0.0, lo - pad), min(1.0, hi + pad)


MARKER_SIZE = 22        # scatter marker area in points², as matplotlib's ``s``


def place_labels(ax, points: np.ndarray, named: list[int], texts: list[str], fontsize: float = 8) -> list:
    """Name some of the plotted points with text boxes that overlap neither each other nor any point.

    Each label takes the first free spot of: right of its point, left, above, below, the four
    corners; else the free spot nearest the point on a grid over the axes, joined to it by a
    leader line that crosses no placed label (or, when labels wall the point in, the nearest one
    whose leader does). Spots are free when the box stays inside the axes and clears every
    marker, every placed label and every leader line, with air to spare for the labels' white
    backing, which keeps them legible over grid and leader lines. Sizes come from the Agg
    renderer, so the figure's layout must be final: this freezes it (layout engine and axis
    limits) and should run after everything else is drawn.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    points : ndarray of float, shape (n_points, 2)
        Every plotted point in data coordinates, all of them obstacles.
    named : list of int
        Rows of ``points`` to name, the first placed first.
    texts : list of str
        Their labels.
    fontsize : float

    Returns
    -------
    list of matplotlib.text.Annotation
        The labels placed, in the order of ``named``; one is left out only when no free spot
        is left for it.
    """
    fig = ax.figure
    fig.draw_without_rendering()
    fig.set_layout_engine("none")           # a later layout pass would move the axes under the labels
    ax.autoscale(False)                     # leader lines must not widen the limits
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    xy = ax.transData.transform(points)
    pad = 0.1                                                # the white backing's margin, in font sizes
    backing = pad * fontsize * px_per_pt
    radius = np.sqrt(MARKER_SIZE) / 2 * px_per_pt
    r = radius + backing + 1                                 # clear of the marker, the backing and a pixel of air
    obstacles = np.hstack([xy - r, xy + r])                  # (x0, y0, x1, y1) in pixels
    frame = ax.get_window_extent(renderer).extents + np.array([1, 1, -1, -1]) * (backing + 1)
    gap, air = r + 1, 2 * backing + 1                        # label to its point; between two labels
    leaders = np.empty((0, 2))              # sample points along the leader lines drawn so far
    placed = []
    for j, text in zip(named, texts):
        ann = ax.annotate(text, points[j], xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                          ha="left", va="bottom", annotation_clip=False,   # points on the frame still named
                          bbox={"boxstyle": f"square,pad={pad}", "fc": "white", "ec": "none", "alpha": 0.8})
        w, h = ann.get_window_extent(renderer).size
        p = xy[j]
        near = p + np.array([(gap, -h / 2), (-gap - w, -h / 2), (-w / 2, gap), (-w / 2, -gap - h),
                             (gap, gap), (gap, -gap - h), (-gap - w, gap), (-gap - w, -gap - h)])
        step = max(h / 2, 1.0)
        gx, gy = np.meshgrid(np.arange(frame[0], frame[2] - w, step), np.arange(frame[1], frame[3] - h, step))
        grid = np.column_stack([gx.ravel(), gy.ravel()])
        dist = np.hypot(np.maximum.reduce([grid[:, 0] - p[0], p[0] - grid[:, 0] - w, np.zeros(len(grid))]),
                        np.maximum.reduce([grid[:, 1] - p[1], p[1] - grid[:, 1] - h, np.zeros(len(grid))]))
        corner = np.vstack([near, grid[np.argsort(dist, kind="stable")]])
        boxes = np.hstack([corner, corner + (w, h)])
        inside = (boxes[:, :2] >= frame[:2]).all(1) & (boxes[:, 2:] <= frame[2:]).all(1)
        free = inside & ~_overlaps(boxes, obstacles).any(1) & ~_contains(boxes, leaders).any(1)
        # a leader from the point to the nearest edge of a far box must not cross a placed label
        ends = np.clip(p, boxes[:, :2], boxes[:, 2:])
        t = np.linspace(0, 1, 64)[None, :, None]
        samples = p + t * (ends - p)[:, None, :]                         # (boxes, 64, 2)
        labels = obstacles[len(points):]
        crossing = _contains(labels, samples.reshape(-1, 2)).reshape(len(labels), *samples.shape[:2]).any((0, 2))
        crossing[:len(near)] = False                                     # the spots beside the point need none
        clear = free & ~crossing
        # where every way out crosses a label (a point walled in by others' labels), cross one
        ok = clear if clear.any() else free
        if not ok.any():
            ann.remove()
            continue
        k = int(np.argmax(ok))
        x0, y0 = corner[k]
        ann.xyann = ((x0 - p[0]) / px_per_pt, (y0 - p[1]) / px_per_pt)
        if k >= len(near):
            start = p + (ends[k] - p) * radius / np.hypot(*(ends[k] - p))       # from the marker's edge
            line = ax.transData.inverted().transform(np.vstack([start, ends[k]]))
            ax.plot(line[:, 0], line[:, 1], color="0.45", lw=0.6, zorder=1.5)
            leaders = np.vstack([leaders, samples[k]])
        obstacles = np.vstack([obstacles, boxes[k] + (-air, -air, air, air)])
        placed.append(ann)
    return placed


def _overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bool: boxes ``(x0, y0, x1, y1)`` whose interiors intersect."""
    return ((a[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < a[:, None, 2]) &
            (a[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < a[:, None, 3]))


def _contains(boxes: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(len(boxes), len(pts)) bool: points inside boxes ``(x0, y0, x1, y1)``."""
    return ((boxes[:, None, 0] <= pts[None, :, 0]) & (pts[None, :, 0] <= boxes[:, None, 2]) &
            (boxes[:, None, 1] <= pts[None, :, 1]) & (pts[None, :, 1] <= boxes[:, None, 3]))


def draw_f1_vs_frequency(fig, per_label: list[dict], train_freq: np.ndarray, annotate: int = 8):
    """Draw per-label F1 against training frequency on ``fig``; the axes drawn on.

    Log x, one colour per level, the y-axis fitted to the F1 values; the ``annotate`` weakest
    labels with gold support are named without overlap (:func:`place_labels`).
    """
    ax = fig.subplots()
    f1 = np.array([r["f1"] or 0.0 for r in per_label])
    level = np.array([r["level"] for r in per_label])
    x = np.maximum(train_freq, 0.5)                      # unseen labels sit at 0.5 on the log axis
    for lv in np.unique(level):
        m = level == lv
        # unclipped: a point at F1 0 or 1 sits on the fitted frame and stays whole
        ax.scatter(x[m], f1[m], s=MARKER_SIZE, alpha=0.75, label=f"level {lv}", clip_on=False)
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.margins(x=0.08)
    ax.set_xlabel("training samples (log; 0 shown at 0.5)")
    ax.set_ylabel("F1 on the evaluated split")
    ax.set_ylim(*fitted_limits(f1))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside upper center", ncols=len(np.unique(level)), frameon=False)   # keeps the axes free
    seen = np.flatnonzero(np.array([r["support"] for r in per_label]) > 0)
    worst = seen[np.argsort(f1[seen], kind="stable")][:annotate].tolist()
    place_labels(ax, np.column_stack([x, f1]), worst, [_plot_text(per_label[j]["name"], j) for j in worst])
    return ax


def plot_f1_vs_frequency(per_label: list[dict], train_freq: np.ndarray, annotate: int = 8) -> bytes:
    """Per-label F1 against training frequency as a PNG (:func:`draw_f1_vs_frequency`)."""
    with _figure(8, 5) as fig:
        draw_f1_vs_frequency(fig, per_label, train_freq, annotate)
        return _png(fig)


def plot_score_histograms(scores: np.ndarray, gold: np.ndarray, index: TaxonomyIndex,
                          threshold: float) -> bytes:
    """Sigmoid scores of gold positives and negatives, one panel per level, threshold marked."""
    depth = index.depth
    cols = min(depth, 3)
    rows = -(-depth // cols)
    with _figure(4.2 * cols, 3.2 * rows) as fig:
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        prob, bins = expit(scores), np.linspace(0, 1, 41)
        for k, sl in enumerate(index.level_slices):
            ax, p, g = axes[k], prob[:, sl], gold[:, sl].astype(bool)
            ax.hist(p[~g], bins, alpha=0.6, color="tab:red", label="gold negative")
            ax.hist(p[g], bins, alpha=0.6, color="tab:blue", label="gold positive")
            ax.axvline(expit(threshold), color="black", ls="--", lw=1, label=f"threshold {probability_text(threshold)}")
            ax.set_yscale("log")
            _plain_ticks(ax.yaxis)
            ax.set_title(f"level {k + 1}")
            ax.set_xlabel("sigmoid(score)")
            if k == 0:
                ax.set_ylabel("sample × label pairs")
                ax.legend(fontsize=8)
        for ax in axes[depth:]:
            ax.set_visible(False)
        return _png(fig)


def plot_reliability(calibration: dict) -> bytes:
    """Reliability diagram: observed frequency against mean predicted probability per bin, before
    and after the per-level temperatures, with the diagonal of perfect calibration."""
    with _figure(5.2, 4.4) as fig:
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfectly calibrated")
        for key, color, label in (("reliability_before", "tab:red", "before"), ("reliability_after", "tab:blue",
                                                                                "after temperature scaling")):
            rows = [r for r in calibration[key] if r["count"]]
            ece_value = calibration[key.replace("reliability", "ece")]
            ax.plot([r["confidence"] for r in rows], [r["frequency"] for r in rows], marker="o", ms=4,
                    color=color, label=f"{label} (ECE {ece_value:.4f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability (bin)")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=8, loc="upper left")
        return _png(fig)


# ---- one document, two renderings -------------------------------------------------------------
class Code(str):
    """A table cell or paragraph shown as code."""


class Doc:
    """Headings, paragraphs, tables and images, rendered to Markdown or self-contained HTML."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, name: str, png: bytes, alt: str) -> None:
        self.blocks.append(("img", name, png, alt))

    def markdown(self, image_dir: str) -> str:
        out = [f"# {md_text(self.title)}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + md_text(b[2]), ""]
            elif b[0] == "p":
                out += [md_text(b[1]), ""]
            elif b[0] == "table":
                out += [markdown_table(b[1], b[2]), ""]
            else:
                out += [f"![{b[3]}]({image_dir}/{b[1]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        def cell(v, tag, right):
            text = html.escape(_cell_text(v))
            text = f"<code>{text}</code>" if isinstance(v, Code) else text
            return f'<{tag} class="n">{text}</{tag}>' if right else f"<{tag}>{text}</{tag}>"

        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                right = _numeric(b[1], b[2])
                head = "".join(cell(h, "th", n) for h, n in zip(b[1], right))
                rows = "".join("<tr>" + "".join(cell(v, "td", n) for v, n in zip(r, right)) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                data = base64.b64encode(b[2]).decode("ascii")
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[3])}">'
                            f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:2em auto;max-width:1200px;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.n{text-align:right}"
        "img{max-width:100%}code{font-size:12px;white-space:pre-wrap;word-break:break-all}")


def _cell_text(v) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


_FIGURE = re.compile(r"[-–\d.,%/→ hms]*")


def _numeric(header: list[str], rows: list[list]) -> list[bool]:
    """Columns to right-align: figures (``0.91``, ``0.91 / 0.85``, ``3m 05s``) or dashes, not all dashes."""
    def num(v):
        return v is None or isinstance(v, (int, float)) or bool(_FIGURE.fullmatch(str(v)))
    return [i > 0 and all(num(r[i]) for r in rows) and any(re.search(r"\d", _cell_text(r[i])) for r in rows)
            for i in range(len(header))]


def md_text(text: str) -> str:
    """Text as Markdown shows it and never as HTML: ``<``, which every tag starts with, as an
    entity, so a text holding ``<script>`` reads as such in report.md (report.html escapes with
    :func:`html.escape`); ``>`` stays readable in paths (``animal > cat``)."""
    return text.replace("<", "&lt;")


def md_code(text: str) -> str:
    """A Markdown code span around any text: fenced by one backtick more than its longest run of
    backticks (CommonMark), so a backtick in the text cannot end the span early."""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; floats with four decimals, None as a dash, pipes escaped, texts
    never read as HTML (:func:`md_text`, :func:`md_code`)."""
    def cell(v):
        text = _cell_text(v).replace("|", "\\|").replace("\n", " ")
        return md_code(text) if isinstance(v, Code) else md_text(text)

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in _numeric(header, rows)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """Seconds as ``1h 02m``, ``3m 05s`` or ``14.7s``."""
    if seconds is None:
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 \
        else f"{seconds:.1f}s"


def machine_text(m: dict | None) -> str:
    """One line for a machine record: accelerator or CPU, cores, memory."""
    if not m:
        return "–"
    parts = [m.get("gpu") or m.get("cpu") or "?", f"{m['cores']} cores" if m.get("cores") else None,
             f"{m['memory_gib']} GiB" if m.get("memory_gib") else None]
    return ", ".join(p for p in parts if p)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


# ---- the report -------------------------------------------------------------------------------
def write_report(run_dir: str | Path, top_bad: int = 50, top_pairs: int = 20) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``report_files/*.png`` and ``bad_cases.jsonl``.

    Parameters
    ----------
    run_dir : str or Path
        An evaluated run folder.
    top_bad : int
        Worst samples kept in ``bad_cases.jsonl`` (the report shows the first ten).
    top_pairs : int
        Sibling-confusion pairs shown.

    Returns
    -------
    dict of str to Path
        The files written, by kind.
    """
    with run_locked(Path(run_dir)):         # not while another process trains or evaluates it
        return _write_report(run_dir, top_bad, top_pairs)


def _write_report(run_dir: str | Path, top_bad: int, top_pairs: int) -> dict[str, Path]:
    run = load_run(run_dir, arrays=True)
    m, cfg = run.metrics, run.config
    if cfg is None:
        raise HmtcError("no config.json in the run folder", run.path)
    tax_path = run.path / "best" / "taxonomy.tax"
    if not tax_path.is_file():
        raise HmtcError("no best/taxonomy.tax in the run folder", run.path)
    taxonomy = Taxonomy.load(tax_path)
    split = m["split"]
    data = prepare(cfg, taxonomy, splits_wanted=["train", split])
    index = data.index
    scores, gold, pred = run.arrays["scores"], run.arrays["gold"].astype(bool), run.arrays["pred"].astype(bool)
    if data.labels[split].shape != gold.shape or not np.array_equal(data.labels[split], gold):
        raise HmtcError(f"the {split} split no longer matches the evaluated labels; re-run hmtc eval", run.path)
    train_freq = data.labels["train"].sum(0)
    thr = thresholds(m)
    global_thr = float(m["decode"]["threshold"])
    test = evaluated(m)
    per_label = test["per_label"]

    doc = Doc(f"Run report: {run.name}")
    _summary(doc, run, split, len(gold), len(data.labels["train"]))
    _scores(doc, m)
    _per_label(doc, per_label, train_freq, thr if isinstance(thr, np.ndarray) else None)
    doc.image("f1_vs_train_frequency.png", plot_f1_vs_frequency(per_label, train_freq),
              "Per-label F1 against training frequency (log x); the worst labels are named")
    doc.heading("Confusions between siblings")
    counts = sibling_confusions(gold, pred, index)
    pairs = top_confusions(counts, index, gold.sum(0), top_pairs)
    doc.para(f"For each gold node the model missed, the sibling it predicted instead (same parent; "
             f"level-1 nodes share the root): {int(counts.sum())} such errors in {np.count_nonzero(counts)} "
             f"pairs, the top {len(pairs)} below.")
    doc.table(["gold", "predicted instead", "count", "gold support", "parent"],
              [[p["gold"], p["predicted"], p["count"], p["gold_support"], p["parent"] or "ROOT"] for p in pairs])
    doc.heading("Scores and threshold")
    note = (" (per-label thresholds were tuned, each in the per-label tables; the line marks the global one)"
            if isinstance(thr, np.ndarray) else "")
    doc.para(f"Distribution of sigmoid scores for gold positives and negatives on {split}, log counts; "
             f"decoding {m['decode']['method']}, threshold {probability_text(global_thr)} as a probability{note}.")
    doc.image("score_histograms.png", plot_score_histograms(scores, gold, index, global_thr),
              "Sigmoid scores of gold positives vs negatives per level, threshold dashed")
    cal = m.get("calibration")
    if cal:                     # runs evaluated before calibration existed have none
        doc.heading("Calibration")
        doc.para(f"Expected calibration error on {split} over every (text, node) pair, 15 bins: "
                 f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after one temperature per level "
                 f"fitted on dev ({', '.join(f'L{k + 1} {t:.3g}' for k, t in enumerate(cal['temperatures']))}); "
                 "the probabilities predict, serve and the estimator report are the calibrated ones.")
        doc.image("reliability.png", plot_reliability(cal),
                  "Observed frequency against predicted probability, before and after temperature scaling")
    cases = bad_cases(data.texts[split], scores, gold, pred, index, thr, top_bad)
    doc.heading("Worst errors")
    doc.para(f"The {len(cases)} worst samples are in bad_cases.jsonl (most wrong nodes first, then the "
             f"most confident error; labels by display name, their ids beside them in the file); "
             f"the first {min(10, len(cases))}:")
    doc.table(["#", "text", "gold", "predicted", "wrong nodes", "margin (logit)"],
              [[c["index"], c["text"][:120] + ("…" if len(c["text"]) > 120 else ""),
                "; ".join(" > ".join(p) for p in c["gold"]), "; ".join(" > ".join(p) for p in c["pred"]) or "–",
                c["n_wrong"], c["margin"]] for c in cases[:10]])

    files = {"md": run.path / "report.md", "html": run.path / "report.html",
             "bad_cases": run.path / "bad_cases.jsonl"}
    for b in doc.blocks:
        if b[0] == "img":
            files[b[1]] = run.path / "report_files" / b[1]
            atomic_write_bytes(files[b[1]], b[2])
    atomic_write_text(files["md"], doc.markdown("report_files"))
    atomic_write_text(files["html"], doc.html())
    atomic_write_text(files["bad_cases"], "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    return files


def _summary(doc: Doc, run: Run, split: str, n_eval: int, n_train: int) -> None:
    cfg, m, st = run.config, run.metrics, run.state
    doc.heading("Run")
    inf = m.get("inference", {})
    doc.table(["field", "value"], [
        ["dataset", cfg.data.dataset if cfg else "–"], ["model", cfg.model.name if cfg else "–"],
        ["encoder", cfg.model.encoder if cfg else "–"], ["command", Code(run.meta.get("command") or "–")],
        ["git commit", Code(run.meta.get("git_commit") or "–")], ["seed", cfg.train.seed if cfg else "–"],
        ["train time", f"{duration(st.get('train_seconds'))} ({st.get('epoch', '–')} epochs, best {st.get('best_epoch', '–')})"],
        ["machine", machine_text(run.meta.get("machine"))],
        ["samples", f"{n_train} train, {n_eval} {split}"],
        ["decoding", _decoding_text(m["decode"])],
        ["inference", f"{inf.get('texts_per_s', '–')} texts/s on {inf.get('device', '–')}"
                      + (f" (frozen layers' states of {inf['stored_texts']} texts read from the store)"
                         if inf.get("stored_texts") else "")]])


def _texts_per_s(inf: dict) -> str:
    """Inference speed, and how many texts' frozen-layer states were read rather than computed."""
    stored = inf.get("stored_texts")
    return f"{inf.get('texts_per_s', '–')}" + (f" ({stored} of {inf.get('texts', '–')} stored)" if stored else "")


def _decoding_text(d: dict) -> str:
    """The decoding method and its thresholds as probabilities: the global one, and the range of the
    per-label ones when they were tuned."""
    text = f"{d['method']}, threshold {probability_text(d['threshold'])}"
    if d.get("per_label_thresholds"):
        p = expit(np.asarray(d["per_label_thresholds"], dtype=float))
        text += f"; per-label thresholds {p.min():.4f}–{p.max():.4f}"
    return text


def _scores(doc: Doc, m: dict) -> None:
    test, before = evaluated(m), m["before_decoding"]
    doc.heading(f"Scores on {m['split']}")
    doc.para("Micro pools the labels of all levels, macro averages every label (F1 = 0 without "
             "gold support); hierarchical F1 adds ancestors to both sets; C-F1 counts a node only "
             "with its whole path (docs/metrics.md).")
    doc.table(["level", "labels", "support", "micro P", "micro R", "micro F1", "macro P", "macro R", "macro F1"],
              [[lv["level"], lv["n_labels"], lv["support"], *(lv[f"{a}_{k}"] for a in ("micro", "macro")
                                                            for k in ("precision", "recall", "f1"))]
               for lv in test["per_level"]] +
              [["all", test["n_labels"], "", test["micro_precision"], test["micro_recall"], test["micro_f1"],
                test["macro_precision"], test["macro_recall"], test["macro_f1"]]])
    doc.table(["figure", "precision", "recall", "F1"],
              [["hierarchical", test["hier_precision"], test["hier_recall"], test["hier_f1"]],
               ["path-constrained (C-micro)", test["c_micro_precision"], test["c_micro_recall"], test["c_micro_f1"]],
               ["path-constrained (C-macro)", None, None, test["c_macro_f1"]]])
    doc.heading("Before and after decoding", 3)
    doc.para("Raw thresholded scores against the consistent decoded prediction; a sample is "
             "inconsistent when a predicted node's parent is not predicted.")
    doc.table(["figure", "before decoding", "after decoding"],
              [[label, before.get(k), test.get(k)] for k, label in SUMMARY_ROWS])


def _per_label(doc: Doc, per_label: list[dict], train_freq: np.ndarray, label_thr: np.ndarray | None) -> None:
    """The per-label tables; with ``label_thr`` (per-label logit thresholds) a column of them as
    probabilities."""
    doc.heading("Per label (long tail)")
    doc.para("Grouped by level, sorted by gold support on the evaluated split; 'train' counts the "
             "training split the run learned from" +
             ("; 'threshold' is the label's tuned decision threshold as a probability." if label_thr is not None
              else "."))
    prob = None if label_thr is None else expit(np.asarray(label_thr, dtype=float)).tolist()
    for lv in sorted({r["level"] for r in per_label}):
        rows = sorted(((j, r, int(train_freq[j])) for j, r in enumerate(per_label) if r["level"] == lv),
                      key=lambda t: (-t[1]["support"], -t[2], t[1]["id"]))
        doc.heading(f"Level {lv} ({len(rows)} labels)", 3)
        doc.table(["id", "name", "train", "support", "predicted", "precision", "recall", "F1"] +
                  (["threshold"] if prob is not None else []),
                  [[r["id"], r["name"], f, r["support"], r["predicted"], r["precision"], r["recall"], r["f1"]] +
                   ([prob[j]] if prob is not None else []) for j, r, f in rows])


# ---- comparison -------------------------------------------------------------------------------
def compare_table(runs: list[str | Path]) -> tuple[list[str], list[list]]:
    """Header and rows comparing evaluated runs side by side (one row per run): each run's dataset
    and the split it was evaluated on (test, or dev where its dataset has none) beside its figures.
    A folder of seeds (``hmtc train --seeds``) is one row of ``mean ± std (n)`` over its seeds."""
    groups = [_seed_runs(r) for r in runs]
    depth = max(len(evaluated(r.metrics)["per_level"]) for g in groups for r in g)
    header = (["run", "model", "dataset", "split", "micro F1", "macro F1"] + [f"L{k} mi / ma F1" for k in range(1, depth + 1)] +
              ["leaf mi / ma F1", "hier F1", "C-micro F1", "inconsistent before → after",
               "train time", "train samples/s", "infer texts/s"])
    rows = []
    for path, g in zip(runs, groups):
        def cell(*getters):
            parts = []
            for get in getters:
                vals = [get(r) for r in g]
                m, sd = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                parts.append(f"{m:.4f} ± {sd:.4f}" if len(g) > 1 else m)
            if len(parts) == 1:
                return parts[0]
            return " / ".join(p if isinstance(p, str) else f"{p:.4f}" for p in parts)

        def level(k):
            return lambda avg: (lambda r: evaluated(r.metrics)["per_level"][k][f"{avg}_f1"])

        n_levels = min(len(evaluated(r.metrics)["per_level"]) for r in g)
        levels = [cell(level(k)("micro"), level(k)("macro")) for k in range(n_levels)]
        t0 = g[0].metrics["consistency"]
        sps = [h["samples_per_s"] for r in g for h in r.state.get("history", []) if h.get("samples_per_s")]
        secs = [r.state.get("train_seconds") for r in g if r.state.get("train_seconds") is not None]
        name = g[0].name if len(g) == 1 else f"{Path(path).name} (n = {len(g)})"
        cfg = g[0].config
        rows.append([name, cfg.model.name if cfg else "?", cfg.data.dataset if cfg else "?",
                     "/".join(sorted({r.metrics.get("split", "test") for r in g})),
                     cell(lambda r: evaluated(r.metrics)["micro_f1"]), cell(lambda r: evaluated(r.metrics)["macro_f1"]),
                     *levels, *["–"] * (depth - n_levels),
                     cell(lambda r: evaluated(r.metrics)["leaf_micro_f1"], lambda r: evaluated(r.metrics)["leaf_macro_f1"]),
                     cell(lambda r: evaluated(r.metrics)["hier_f1"]), cell(lambda r: evaluated(r.metrics)["c_micro_f1"]),
                     f"{_pct(t0['before']['inconsistent_samples'])} → {_pct(t0['after']['inconsistent_samples'])}"
                     if len(g) == 1 else
                     f"{_pct(np.mean([r.metrics['consistency']['before']['inconsistent_samples'] for r in g]))} → "
                     f"{_pct(np.mean([r.metrics['consistency']['after']['inconsistent_samples'] for r in g]))}",
                     duration(np.mean(secs)) if secs else "–",
                     f"{np.mean(sps):.1f}" if sps else "–",
                     _texts_per_s(g[0].metrics.get("inference", {}))])
    return header, rows


def per_label_table(runs: list[str | Path], level: int | None = None) -> tuple[list[str], list[list]]:
    """Header and rows comparing evaluated runs label by label: each label's F1 on the evaluated
    split (the mean over a seeds folder's seeds), one row per label.

    With exactly two runs A and B the rows also give Δ = F1_A − F1_B and that label's share of
    the level's macro-F1 difference, 100 · Δ / n_l points for a level of n_l labels (a level's
    macro-F1 is the mean of its labels' F1, so these shares sum to the level's difference), and
    are sorted by Δ within each level, largest loss of A first; otherwise by gold support.

    Parameters
    ----------
    runs : list of str or Path
        Evaluated run folders (or folders of seeds) of one taxonomy.
    level : int, optional
        Only this level's labels.

    Returns
    -------
    header : list of str
    rows : list of list
    """
    groups = [_seed_runs(r) for r in runs]
    ids = [[x["id"] for x in evaluated(r.metrics)["per_label"]] for g in groups for r in g]
    if any(i != ids[0] for i in ids):
        raise HmtcError("per-label comparison needs runs of one taxonomy; these runs label different nodes")
    labels = evaluated(groups[0][0].metrics)["per_label"]
    if level is not None and not any(x["level"] == level for x in labels):
        raise HmtcError(f"no labels at level {level}; levels are {sorted({x['level'] for x in labels})}")
    f1 = np.array([np.mean([[x["f1"] for x in evaluated(r.metrics)["per_label"]] for r in g], axis=0) for g in groups])
    names = [g[0].name if len(g) == 1 else Path(p).name for p, g in zip(runs, groups)]
    pair = len(groups) == 2
    per_level = {lv: sum(x["level"] == lv for x in labels) for lv in {x["level"] for x in labels}}
    header = ["level", "id", "name", "support"] + [f"F1 {n}" for n in names] + \
        (["Δ F1 (first − second)", "Δ level macro-F1 (points)"] if pair else [])
    order = sorted((j for j, x in enumerate(labels) if level is None or x["level"] == level),
                   key=lambda j: (labels[j]["level"], f1[0, j] - f1[1, j] if pair else -labels[j]["support"],
                                  labels[j]["id"]))
    rows = []
    for j in order:
        x = labels[j]
        row = [x["level"], x["id"], x["name"], x["support"], *(float(v) for v in f1[:, j])]
        if pair:
            d = float(f1[0, j] - f1[1, j])
            row += [f"{d:+.4f}", f"{100 * d / per_level[x['level']]:+.2f}"]
        rows.append(row)
    return header, rows


def _seed_runs(path: str | Path) -> list[Run]:
    """The evaluated runs of a seeds folder, or the run itself."""
    path = Path(path)
    seeds = sorted(p for p in path.glob("seed-*") if (p / "metrics.json").is_file()) \
        if not (path / "metrics.json").is_file() else []
    return [load_run(p) for p in seeds] if seeds else [load_run(path)]
