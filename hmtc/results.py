"""``experiments/RESULTS.md``, regenerated from the run records (``hmtc results``).

Records form *groups*, one per configuration: a mean record written by ``--seeds`` is one group
(its seeds' records inside it), and single records whose resolved configs differ only in name
and seed form one group too (the per-seed copies of earlier stops). Every figure is a group's
mean with its sample standard deviation over n seeds. Same-budget tables set each group beside
flat on the same recipe: the *hierarchy gain* is MSML minus flat with the same encoder, schedule
and regularisers (only the head differs); a trick that changes the recipe is shown against flat
on its own recipe when that was run, and against the budget's plain flat as a total. Goals
compare only means of the same budget and seeds; the best of several runs is never a result.
The output depends only on the records, in a fixed order, so running it twice gives the same file.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULTS, LEGACY, dotted, load_config, tomllib
from .curves import curve_png, curve_table, curves, load_loops, loop_png, loop_table
from .errors import HmtcError
from .io import atomic_write_bytes, atomic_write_text, json_depth
from .models import MODELS
from .record import mean_std
from .report import Code, duration, machine_text, markdown_table
from .taxonomy import Taxonomy

MET, MISSED, NOT_RUN = "met", "missed", "not yet run"
MIN_SEEDS = 3
# a record nests a few levels (config tables, per-label figures); deeper is no record, and json
# and the walks over a record recurse per level
MAX_RECORD_DEPTH = 64

EXCLUSIVE_KEYS = ("exact_match", "leaf_micro_f1", "leaf_macro_f1")   # what an exclusive_raise goal reads

# keys that name a run or place its files, not what it trains (the frozen store holds the states
# the in-memory cache would compute: bitwise in bf16 on a CPU, to the last bits otherwise;
# hmtc.inference.cache_lower_states, tests/test_frozen_store.py)
IGNORED = {"name", "train.seed", "train.seeds", "train.output_dir", "train.record_dir", "train.threads",
           "train.device", "train.eval_batch_size", "train.frozen_store", "train.save_every"}
BUDGET = ("model.encoder", "train.epochs", "data.max_length", "model.freeze_layers", "train.cache_frozen",
          "model.fast_dropout", "data.train_limit", "model.windows", "model.window_length", "model.window_stride")
HEAD = ("model.name", "model.options.", "train.head_lr", "decode.")   # what a model's head is
REGULARISERS = ("train.fgm_epsilon", "train.gp_weight", "train.rdrop_alpha", "train.teacher")


def load_records(records_dir: str | Path) -> list[dict]:
    """Every ``*.json`` record in the folder (not its subfolders: seeds live inside their mean record)."""
    records = []
    for path in sorted(Path(records_dir).glob("*.json")):
        try:
            text = path.read_text(encoding="utf-8")
            if json_depth(text) > MAX_RECORD_DEPTH:
                raise HmtcError(f"not a run record: nested over {MAX_RECORD_DEPTH} levels deep", path)
            rec = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HmtcError(f"not a readable record: {e}", path) from None
        if not isinstance(rec, dict) or "dataset" not in rec or "metrics" not in rec:
            raise HmtcError("not a run record (no dataset or metrics)", path)
        records.append(rec)
    return records


def settings(rec: dict) -> dict:
    """A record's config as dotted keys, with the defaults it ran under filled in."""
    cfg = copy.deepcopy(rec.get("config") or {})
    flat = dotted(DEFAULTS) | dotted(LEGACY) | dotted(cfg)      # what each key ran with
    flat = {k: v for k, v in flat.items() if k not in IGNORED}
    flat["engine"] = (rec.get("inference") or {}).get("engine", "torch")
    return flat


def _key(flat: dict, keep=lambda k: True) -> str:
    return json.dumps({k: v for k, v in sorted(flat.items()) if keep(k)}, sort_keys=True, default=str)


@dataclass
class Group:
    """One configuration's runs (one per seed) and their means."""

    name: str
    records: list[dict]
    source: dict            # the mean record, or the first single record
    settings: dict
    default: bool = False   # ran the dataset's current default MSML config (mark_defaults)

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def seeds(self) -> tuple:
        return tuple(sorted(r.get("seed") for r in self.records))

    @property
    def dataset(self) -> str:
        return self.source["dataset"]

    @property
    def model(self) -> str:
        return self.source.get("model") or "?"

    @property
    def config_name(self) -> str:
        return self.source.get("config_name") or _strip_seed(self.source.get("name") or "?")

    def stat(self, key: str) -> tuple[float, float] | None:
        vals = [r["metrics"].get(key) for r in self.records]
        return mean_std(vals) if all(isinstance(v, (int, float)) for v in vals) else None

    def level(self, k: int, avg: str = "macro") -> tuple[float, float] | None:
        vals = [next((lv[f"{avg}_f1"] for lv in r["metrics"].get("per_level", []) if lv["level"] == k), None)
                for r in self.records]
        return mean_std(vals) if all(v is not None for v in vals) else None

    @property
    def depth(self) -> int:
        return len(self.source["metrics"].get("per_level", []))

    @property
    def budget(self) -> str:
        return _key(self.settings, lambda k: k in BUDGET or k.startswith(("model.encoder_options.", "data.options."))) + \
            f"|{self.seeds}|{self.settings['engine']}|{self.dataset}"

    @property
    def recipe(self) -> str:
        """Everything but the head: model name and options, head learning rate, decoding."""
        return _key(self.settings, lambda k: not k.startswith(HEAD)) + f"|{self.seeds}|{self.dataset}"

    @property
    def head(self) -> str:
        """The head alone (what :attr:`recipe` leaves out)."""
        return _key(self.settings, lambda k: k.startswith(HEAD))

    @property
    def train_seconds(self) -> float | None:
        vals = [r.get("train_seconds") for r in self.records]
        return sum(vals) / len(vals) if all(v is not None for v in vals) else None


def _command(rec: dict) -> str:
    """The record's command; runs started as ``python -m hmtc`` recorded ``__main__.py``, which is ``hmtc``."""
    cmd = rec.get("command") or "–"
    return "hmtc" + cmd[len("__main__.py"):] if cmd.startswith("__main__.py ") else cmd


def _strip_seed(name: str) -> str:
    base, _, tail = name.rpartition("-s")
    return base if base and tail.isdigit() else name


def groups(records: list[dict]) -> list[Group]:
    """Mean records as they are; single records gathered by configuration."""
    out, singles = [], {}
    for rec in records:
        if rec.get("aggregate"):
            out.append(Group(rec["name"], rec["seed_records"], rec, settings(rec["seed_records"][0])))
        else:
            s = settings(rec)
            singles.setdefault((rec["dataset"], _key(s)), []).append((rec, s))
    for members in singles.values():
        members.sort(key=lambda m: (m[0].get("seed") is None, m[0].get("seed"), m[0].get("name") or ""))
        recs = [m[0] for m in members]
        if len({r.get("seed") for r in recs}) < len(recs):       # repeats of one seed: keep them apart
            out += [Group(r.get("name") or "?", [r], r, s) for r, s in members]
            continue
        names = [r.get("name") or "?" for r in recs]
        out.append(Group(" · ".join(names), recs, recs[0], members[0][1]))
    return sorted(out, key=lambda g: (g.dataset, g.name))


def pm(stat: tuple[float, float] | None, n: int) -> str | None:
    """``0.9534 ± 0.0017`` (a single run: the value alone)."""
    if stat is None:
        return None
    return f"{stat[0]:.4f} ± {stat[1]:.4f}" if n > 1 else f"{stat[0]:.4f}"


def _leaf(g: Group) -> tuple[float, float]:
    return g.stat("leaf_micro_f1")[0], g.stat("leaf_macro_f1")[0]


# ---- goals ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goals:
    """A goals file (``hmtc results --goals``): each dataset's default config, the goals in the
    order they are shown, and published figures per dataset (see ``experiments/goals.toml``)."""

    min_seeds: int
    defaults: dict
    goals: tuple
    references: dict


GOAL_KINDS = {"above_flat": ("margin",), "bar": ("leaf_micro_f1", "leaf_macro_f1"),
              "best_of": ("rivals", "level", "level_name", "at_least"), "above_reference": ("reference", "name"),
              "above_svm": (), "accuracy": ("name", "at_least"), "exclusive_raise": ("name", "t")}
NO_GOALS = Goals(MIN_SEEDS, {}, (), {})


def load_goals(path: str | Path | None) -> Goals:
    """The goals file at ``path`` (None: no goals, no published figures)."""
    if path is None:
        return NO_GOALS
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise HmtcError("goals file not found", path) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise HmtcError(f"not a readable goals file: {e}", path) from None
    goals = raw.get("goals", [])
    for i, goal in enumerate(goals, 1):
        kind = goal.get("kind") if isinstance(goal, dict) else None
        if kind not in GOAL_KINDS:
            raise HmtcError(f"goal {i}: kind {kind!r} is none of {', '.join(GOAL_KINDS)}", path)
        missing = [k for k in ("dataset", *GOAL_KINDS[kind]) if k not in goal]
        if missing:
            raise HmtcError(f"goal {i} ({kind}): missing {', '.join(missing)}", path)
    refs = raw.get("references", {})
    for d, ref in refs.items():
        if not all(k in ref for k in ("columns", "ours", "rows")) or len(ref["ours"]) != len(ref["columns"]):
            raise HmtcError(f"references.{d}: columns, ours (one per column) and rows are needed", path)
    for goal in goals:
        if goal["kind"] == "above_reference" and _reference(Goals(0, {}, (), refs), goal) is None:
            raise HmtcError(f"goal above_reference: no row {goal['reference']!r} in references.{goal['dataset']}", path)
    return Goals(int(raw.get("min_seeds", MIN_SEEDS)), dict(raw.get("defaults", {})), tuple(goals), refs)


def mark_defaults(gs: list[Group], configs_dir: Path, spec: Goals) -> None:
    """Mark the groups that ran a dataset's current default, the goals file's ``defaults`` config
    in ``configs_dir``: the same resolved settings, whatever the run was named (an ablation that
    became the default keeps its records). Without that file, a group whose config was named
    after it (``duee-msml.toml``: ``duee-msml``)."""
    for dataset, file in spec.defaults.items():
        path = configs_dir / file
        try:
            key = _key(settings({"config": load_config(path).to_dict()})) if path.is_file() else None
        except HmtcError as e:
            raise HmtcError(f"not a readable config: {e.message}", path) from None
        for g in gs:
            if g.dataset == dataset and g.model == "msml":
                g.default = _key(g.settings) == key if key else g.config_name == Path(file).stem


def _the_default(gs: list[Group], min_n: int = 1) -> list[Group]:
    """The default's group with the most seeds (at least ``min_n``), as a list of at most one:
    sets of the same config never compete, and the best figure is never picked."""
    cands = [g for g in gs if g.default and g.n >= min_n]
    return [max(cands, key=lambda g: (g.n, g.name))] if cands else []


def _plain(g: Group) -> bool:
    return not any(g.settings.get(k) for k in REGULARISERS)


def _flat_for(g: Group, gs: list[Group]) -> Group | None:
    """Flat on ``g``'s own recipe and seeds (plain flat first when several)."""
    cands = [f for f in gs if f.model == "flat" and f.recipe == g.recipe]
    return min(cands, key=lambda f: (len(f.name), f.name)) if cands else None


def goals(gs: list[Group], spec: Goals = NO_GOALS) -> list[list[str]]:
    """Rows (dataset, goal, status, measured), one or more per goal of ``spec`` in its order."""
    rows = []
    for goal in spec.goals:
        mine = [g for g in gs if g.dataset == goal["dataset"]]
        rows += [[goal["dataset"], *r] for r in GOAL_RULES[goal["kind"]](goal, mine, spec)]
    return rows


def _delta(a: float, b: float) -> str:
    return f"{100 * (a - b):+.2f}"


def _above_flat(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    n_min, margin = spec.min_seeds, goal["margin"]
    text = (f"the default MSML ≥ flat + {100 * margin:.1f} points leaf micro-F1 and ≥ flat "
            f"leaf macro-F1, {n_min}-seed means, same recipe and seeds")
    lines, status = [], NOT_RUN
    for m in _the_default(gs, n_min):
        f = _flat_for(m, gs)
        if f is None:
            lines.append(f"{m.name}: no flat on its recipe and seeds")
            continue
        (mi, ma), (fi, fa) = _leaf(m), _leaf(f)
        ok = mi >= fi + margin and ma >= fa
        status = MET if ok or status == MET else MISSED
        lines.append(f"{m.name} {mi:.4f} / {ma:.4f} vs {f.name} {fi:.4f} / {fa:.4f} "
                     f"({_delta(mi, fi)} / {_delta(ma, fa)} points, n = {m.n}; Welch t = "
                     f"{_welch(m, f, 'leaf_micro_f1'):.1f} / {_welch(m, f, 'leaf_macro_f1'):.1f})")
    others = [g for g in gs if g.model == "msml" and not g.default and g.n >= n_min and _flat_for(g, gs)]
    for m in others:
        f = _flat_for(m, gs)
        (mi, ma), (fi, fa) = _leaf(m), _leaf(f)
        lines.append(f"not the default: {m.name} {_delta(mi, fi)} / {_delta(ma, fa)} vs {f.name}")
    return [[text, status, "; ".join(lines) or f"no default MSML with {n_min} seeds"]]


def _bar(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    bar, minutes = (goal["leaf_micro_f1"], goal["leaf_macro_f1"]), goal.get("minutes")
    text = f"{goal['label']}: " if goal.get("label") else ""
    text += f"the default MSML leaf micro-F1 ≥ {bar[0]} and macro-F1 ≥ {bar[1]}"
    if minutes is not None:
        text += f" within {minutes} minutes of training per seed ({spec.min_seeds}-seed means)"
    defaults = _the_default(gs, spec.min_seeds)
    if not defaults:
        return [[text, NOT_RUN, f"no default MSML with {spec.min_seeds} seeds"]]
    seconds = float("inf") if minutes is None else 60 * minutes
    ok = [g for g in defaults if _leaf(g)[0] >= bar[0] and _leaf(g)[1] >= bar[1] and (g.train_seconds or 0) <= seconds]
    measured = "; ".join(f"{g.name}: {_leaf(g)[0]:.4f} / {_leaf(g)[1]:.4f} in {duration(g.train_seconds)} per seed"
                         for g in defaults)
    return [[text, MET if ok else MISSED, measured]]


def _welch(a: Group, b: Group, key: str) -> float:
    """Welch's t of the difference of two groups' means, (m_a - m_b) / sqrt(s_a²/n_a + s_b²/n_b):
    how many standard errors the difference spans (about 2 or more before it is more than seed noise)."""
    (ma, sa), (mb, sb) = a.stat(key), b.stat(key)
    se = (sa ** 2 / a.n + sb ** 2 / b.n) ** 0.5
    return (ma - mb) / se if se > 0 else float("inf") if ma != mb else 0.0


def _best_of(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    level, rivals, target = goal["level"], goal["rivals"], goal["at_least"]
    text = (f"the default MSML is the best of {' / '.join(['msml', *rivals])} on {goal['level_name']} macro-F1 and "
            f"≥ {target} ({spec.min_seeds}-seed means, same recipe and seeds)")
    status, lines = NOT_RUN, []
    for m in [g for g in _the_default(gs, spec.min_seeds) if g.depth >= level]:
        others = [g for g in gs if g.model in rivals and g.recipe == m.recipe]
        mine = m.level(level)[0]
        best_rival = max((g.level(level)[0] for g in others), default=None)
        ok = mine >= target and best_rival is not None and mine >= best_rival
        status = MET if ok or status == MET else MISSED
        lines.append(f"{m.name} {mine:.4f} vs " + (", ".join(f"{g.model} ({g.name}) {g.level(level)[0]:.4f}"
                                                             for g in others) or "no rival on its recipe"))
    return [[text, status, "; ".join(lines) or f"no default MSML with {spec.min_seeds} seeds"]]


NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _reference(spec: Goals, goal: dict) -> dict | None:
    """The published row a goal names, as {level: figure} over its ``levelK_macro`` columns."""
    ref = spec.references.get(goal["dataset"], {})
    row = next((r for r in ref.get("rows", []) if r.get("model") == goal["reference"]), None)
    if row is None:
        return None
    return {int(o[len("level"):-len("_macro")]): v for o, v in zip(ref["ours"], row["figures"])
            if o.startswith("level") and o.endswith("_macro")}


def _above_reference(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    bars = _reference(spec, goal)
    text = (f"the default MSML's macro-F1 above {goal['name']} at all {NUMBERS.get(len(bars), len(bars))} levels: " +
            ", ".join(f"L{k} > {v:.4f}" for k, v in sorted(bars.items())))
    cands = [g for g in _the_default(gs) if g.depth >= max(bars)]
    if not cands:
        return [[text, NOT_RUN, "no default MSML run"]]
    g = cands[0]
    margin = min(g.level(k)[0] - v for k, v in bars.items())
    figures = ", ".join(f"L{k} {g.level(k)[0]:.4f}" for k in sorted(bars))
    return [[text, _seeded(g, margin > 0, spec), f"{g.name} (n = {g.n}{_few(g, spec)}): {figures}"]]


def _seeded(g: Group, ok: bool, spec: Goals) -> str:
    """A goal's status from ``g``: met or missed only on a mean of at least ``min_seeds`` seeds."""
    return NOT_RUN if g.n < spec.min_seeds else MET if ok else MISSED


def _few(g: Group, spec: Goals) -> str:
    return f", fewer than {spec.min_seeds} seeds: no claim" if g.n < spec.min_seeds else ""


def protocol(g: Group) -> str:
    """The dataset protocol of a group's runs (``raw`` for records written before protocols; mean
    records written before they carried it: their seeds')."""
    return g.source.get("dataset_protocol") or g.records[0].get("dataset_protocol") or "raw"


def _with_protocol(g: Group, spec: Goals) -> str:
    """``name (protocol, n = 3)``: how a goal on protocols names the runs it reads."""
    return f"{g.name} ({protocol(g)}, n = {g.n}{_few(g, spec)})"


def _reference_svm(g: Group) -> bool:
    """The model-free reference with linear SVMs: a model fitted in one pass (TF-IDF)."""
    return g.model in MODELS and MODELS.get(g.model).one_pass and \
        g.settings.get("model.options.classifier", "svm") == "svm"


def _above_svm(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    """The default above TF-IDF + LinearSVC of its own protocol at every level, micro- and macro-F1.

    The default config fixes the protocol (its ``data.options``), so there is one default to judge;
    the default's config run under another protocol (``data.options`` alone changed) is judged
    beside TF-IDF of that protocol in a row of its own."""
    text = "the default MSML above TF-IDF + LinearSVC of the same protocol at every level (micro- and macro-F1, means)"
    mine = _the_default(gs)
    if not mine:
        return [[text, NOT_RUN, "no default MSML run"]]
    return [[text, *_above_svm_row(m, gs, spec)] for m in [mine[0], *_other_protocols(mine[0], gs)]]


def _above_svm_row(m: Group, gs: list[Group], spec: Goals) -> list[str]:
    """(status, measured): ``m``'s means against TF-IDF + LinearSVC of ``m``'s protocol."""
    name = _with_protocol(m, spec)
    base = [g for g in gs if _reference_svm(g) and protocol(g) == protocol(m)]
    if not base:
        return [NOT_RUN, f"{name}: no TF-IDF + LinearSVC run of its protocol"]
    # the TF-IDF set trained beside m's own seeds (their dev splits), else the most seeds
    b = min(base, key=lambda g: (g.seeds != m.seeds, -g.n, g.name))
    levels = range(1, b.depth + 1)
    missing = [k for k in levels if any(g.level(k, a) is None for g in (m, b) for a in ("micro", "macro"))]
    if missing:
        return [NOT_RUN, f"{name} or {b.name}: no level {missing[0]} figures in every seed"]
    margin = min(m.level(k, a)[0] - b.level(k, a)[0] for k in levels for a in ("micro", "macro"))
    figures = "; ".join(f"L{k} {m.level(k, 'micro')[0]:.4f} / {m.level(k)[0]:.4f} vs "
                        f"{b.level(k, 'micro')[0]:.4f} / {b.level(k)[0]:.4f}" for k in levels)
    return [_seeded(m, margin > 0, spec), f"{name} vs {b.name}: {figures}"]


def _accuracy(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    """The default's exact match against a bar. A published bar is a figure of one protocol, so
    the default alone is judged, not its config under another protocol."""
    text = (f"the default MSML's {goal['name']} ≥ {goal['at_least']} (exact match of the whole path, "
            f"{spec.min_seeds}-seed means)")
    mine = _the_default(gs)
    if not mine:
        return [[text, NOT_RUN, "no default MSML run"]]
    m = mine[0]
    name, acc = _with_protocol(m, spec), m.stat("exact_match")
    return [[text, _seeded(m, acc[0] >= goal["at_least"], spec) if acc else NOT_RUN,
             f"{name}: {acc[0]:.4f}" if acc else f"{name}: no exact match recorded"]]


def _other_protocols(m: Group, gs: list[Group]) -> list[Group]:
    """The default's config under each other protocol: MSML groups that differ from ``m`` in the
    reader's ``remove`` option alone (what the protocol names), the set with the most seeds per
    protocol, in protocol order."""
    found: dict[str, Group] = {}
    for g in sorted(gs, key=lambda g: (g.n, g.name)):
        if g.model == "msml" and _changed(g, m) == {"data.options.remove"} and protocol(g) != protocol(m):
            found[protocol(g)] = g
    return [found[p] for p in sorted(found)]


def _exclusive_raise(goal: dict, gs: list[Group], spec: Goals) -> list[list[str]]:
    """The default on a taxonomy with ``!exclusive`` groups against the default itself, every other
    setting equal, on single-path data (20NG: every post one leaf)."""
    t = goal["t"]
    text = ("exclusive sibling groups raise single-path data: the default MSML on the taxonomy with "
            "its groups marked !exclusive above the default on the unmarked one by at least Welch "
            f"t = {t:.0f} ({goal['name']}, leaf micro- and macro-F1; same seeds, {spec.min_seeds}-seed means)")
    mine = _the_default(gs)
    if not mine:
        return [[text, NOT_RUN, "no default MSML run"]]
    m = mine[0]
    variants = [g for g in gs if g.model == "msml" and g is not m and _only_taxonomy(g, m)
                and _marks_exclusive(g.settings.get("data.taxonomy"))]
    if not variants:
        return [[text, NOT_RUN, f"no run of {m.name}'s config on an exclusive taxonomy"]]
    g = max(variants, key=lambda v: (v.seeds == m.seeds, v.n, v.name))
    if g.seeds != m.seeds:
        return [[text, NOT_RUN, f"{g.name} ran seeds {list(g.seeds)}, {m.name} {list(m.seeds)}: no same-seed means"]]
    deltas = [(key, g.stat(key), m.stat(key)) for key in EXCLUSIVE_KEYS]
    if any(a is None or b is None for _, a, b in deltas):
        return [[text, NOT_RUN, f"{g.name} or {m.name} lacks one of {', '.join(EXCLUSIVE_KEYS)}"]]
    figures = "; ".join(f"{key} {a[0]:.4f} vs {b[0]:.4f} ({_delta(a[0], b[0])} points, Welch t = "
                        f"{_welch(g, m, key):.1f})" for key, a, b in deltas)
    # a raise is a difference beyond seed noise on every figure, not a mean that happens to be higher
    ok = all(a[0] > b[0] and _welch(g, m, key) >= t for key, a, b in deltas)
    return [[text, _seeded(g, ok, spec), f"{g.name} (n = {g.n}{_few(g, spec)}) vs {m.name}: {figures}"]]


GOAL_RULES = {"above_flat": _above_flat, "bar": _bar, "best_of": _best_of, "above_reference": _above_reference,
              "above_svm": _above_svm, "accuracy": _accuracy, "exclusive_raise": _exclusive_raise}


def _changed(g: Group, m: Group) -> set[str]:
    """The settings in which ``g`` differs from ``m``."""
    return {k for k in set(g.settings) | set(m.settings) if g.settings.get(k) != m.settings.get(k)}


def _only_taxonomy(g: Group, m: Group) -> bool:
    """``g`` and ``m`` differ in their taxonomy file and nothing else that trains or decodes."""
    return _changed(g, m) == {"data.taxonomy"}


def _marks_exclusive(path: str | None) -> bool:
    """The taxonomy file at ``path`` (relative to where ``hmtc results`` runs) marks a group
    ``!exclusive``; a file not here claims nothing."""
    if not path or not Path(path).is_file():
        return False
    return bool(Taxonomy.load(path).exclusive_groups())


def published_rows(spec: Goals, gs: list[Group], records_dir) -> list[tuple[str, list[str], list[list]]]:
    """Per dataset of the goals file's references: (dataset, header, rows): the published figures
    with their sources, then ours (means) in the same convention."""
    out = []
    for d, ref in sorted(spec.references.items()):
        rows = [[r["model"], *r["figures"], r["source"]] for r in ref["rows"]]
        for g in sorted((g for g in gs if g.dataset == d), key=lambda g: g.name):
            rows.append([f"{g.name} (ours, n = {g.n})", *[_figure(g, o) for o in ref["ours"]],
                         "records in " + str(records_dir)])
        out.append((d, ["model", *ref["columns"], "source"], rows))
    return out


def _figure(g: Group, what: str) -> float | None:
    """A group's mean of a record metric, or of ``levelK_macro`` (level K's macro-F1)."""
    if what.startswith("level") and what.endswith("_macro"):
        return (g.level(int(what[len("level"):-len("_macro")])) or (None,))[0]
    return (g.stat(what) or (None,))[0]


# ---- same-budget tables -----------------------------------------------------------------------
def _differences(g: Group, ref: Group) -> str:
    keys = sorted(k for k in set(g.settings) | set(ref.settings)
                  if k not in ("model.name", "train.head_lr") and not k.startswith("model.options.")
                  and g.settings.get(k) != ref.settings.get(k))
    return ", ".join(f"{k}={json.dumps(g.settings.get(k), ensure_ascii=False)}" for k in keys) or "–"


def _options(g: Group, common: dict) -> str:
    opts = {k[len("model.options."):]: v for k, v in g.settings.items() if k.startswith("model.options.")}
    diff = {k: v for k, v in opts.items() if common.get(k, object()) != v}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(diff.items())) or "–"


def _unchanged(g: Group, members: list[Group], flat: Group) -> Group | None:
    """The same head as ``g`` on flat's own recipe: ``g`` without its recipe change."""
    cands = [c for c in members if c.recipe == flat.recipe and c.head == g.head]
    return max(cands, key=lambda c: (c.n, c.name)) if cands else None


def budget_tables(gs: list[Group]) -> list[tuple[str, list[str], list[list], list[str], list[list]]]:
    """Per budget with a plain flat: (title, ablation header, rows, toolbox header, rows)."""
    out = []
    for key in sorted({g.budget for g in gs}):
        members = [g for g in gs if g.budget == key and g.stat("leaf_micro_f1")]
        flat = next((f for f in sorted(members, key=lambda f: (len(f.name), f.name))
                     if f.model == "flat" and _plain(f)), None)
        if flat is None or len(members) < 2:
            continue
        s = flat.settings
        title = (f"{flat.dataset}: {s['model.encoder']}, {s['train.epochs']} epochs, max length "
                 f"{s['data.max_length']}, lower {s['model.freeze_layers']} layers frozen"
                 f"{' and cached' if s['train.cache_frozen'] else ''}"
                 f"{', fast dropout' if s['model.fast_dropout'] else ''}, train limit "
                 f"{s['data.train_limit'] or 'none'}, seeds {', '.join(map(str, flat.seeds))}")
        msml = [g for g in members if g.model == "msml"]
        common = {}
        if msml:
            opts = [{k: v for k, v in g.settings.items() if k.startswith("model.options.")} for g in msml]
            common = {k[len("model.options."):]: v for k, v in opts[0].items() if all(o.get(k) == v for o in opts)}
        fi, fa = _leaf(flat)
        same, other = [], []
        for g in sorted(members, key=lambda g: (g.recipe != flat.recipe, g.model != "flat", g.model, g.name)):
            mi, ma = _leaf(g)
            cells = [g.name, g.model, _options(g, common) if g.model == "msml" else "–", g.n,
                     pm(g.stat("leaf_micro_f1"), g.n), pm(g.stat("leaf_macro_f1"), g.n)]
            if g.recipe == flat.recipe:
                same.append(cells + [_delta(mi, fi), _delta(ma, fa), duration(g.train_seconds)])
            else:
                own, plain = _flat_for(g, gs), _unchanged(g, members, flat)
                hier = f"{_delta(mi, _leaf(own)[0])} / {_delta(ma, _leaf(own)[1])}" if own and own is not g else "–"
                change = f"{_delta(mi, _leaf(plain)[0])} / {_delta(ma, _leaf(plain)[1])}" if plain else "–"
                other.append(cells[:2] + [_differences(g, flat)] + cells[2:] +
                             [change, hier, f"{_delta(mi, fi)} / {_delta(ma, fa)}", duration(g.train_seconds)])
        head = ["run", "model", "MSML options (beyond the shared ones)", "n", "leaf micro-F1", "leaf macro-F1"]
        out.append((title, head + ["Δ micro vs flat", "Δ macro vs flat", "train time per seed"], same,
                    head[:2] + ["recipe change"] + head[2:] +
                    [f"Δ vs the same head on {flat.name}'s recipe (the change)", "Δ vs flat, same recipe (hierarchy)",
                     f"Δ vs {flat.name} (total)", "train time per seed"], other))
    return out


def configs_without_record(gs: list[Group], configs_dir: Path, skip: Path | None = None) -> list[list]:
    """Rows (config, dataset, model, command) for the ``*.toml`` experiment configs in
    ``configs_dir`` that no record comes from (engine and tag variants count as their run's); the
    file ``skip`` (the goals file) is no config."""
    names = {_strip_seed(r.get("config_name") or (r.get("name") or "").split(".")[0].split("/")[0])
             for g in gs for r in g.records}
    ran = {_key(g.settings) for g in gs}
    rows = []
    for path in sorted(configs_dir.glob("*.toml")):
        if skip is not None and path.resolve() == skip.resolve():
            continue
        try:
            cfg = load_config(path)
        except HmtcError as e:
            raise HmtcError(f"not a readable config: {e.message}", path) from None
        if cfg.name not in names and _key(settings({"config": cfg.to_dict()})) not in ran:
            rows.append([Code(path.name), cfg.data.dataset, cfg.model.name,
                         Code(f"hmtc train {path.parent.name}/{path.name} --seeds 42,43,44")])
    return rows


# ---- the file -------------------------------------------------------------------------------
def _commits(g: Group) -> str:
    commits = sorted({(r.get("git_commit") or "?")[:12] + ("-dirty" if (r.get("git_commit") or "").endswith("-dirty")
                                                            else "") for r in g.records})
    return ", ".join(commits)


def render_results(records_dir: str | Path, out: str | Path = "experiments/RESULTS.md",
                   goals_file: str | Path | None = None) -> str:
    """The Markdown of RESULTS.md for the records in ``records_dir``, judged against the goals and
    beside the published figures of ``goals_file`` (None: neither section)."""
    records = load_records(records_dir)
    if not records:
        raise HmtcError("no run records (*.json) to tabulate", records_dir)
    spec = load_goals(goals_file)
    gs = groups(records)
    mark_defaults(gs, Path(records_dir).parent, spec)
    command = f"hmtc results --records {records_dir} --out {out}" + (f" --goals {goals_file}" if goals_file else "")
    parts = ["# Results", "",
             f"Generated by `{command}` from the run records in `{records_dir}/` (one per evaluated run or "
             "set of seeds, written by `hmtc train` / `hmtc eval`); edit the records or the code, never this file.",
             "",
             "Figures are on each dataset's test split after consistent decoding: the mean ± sample standard "
             "deviation over the n seeds of one configuration (a lone value: one seed). Records of one "
             "configuration that differ only by seed count as one row. Micro pools the labels of all levels, "
             "macro averages every label; per-level cells are micro / macro-F1 means; hier F1 adds ancestors "
             "to both sets; 'inconsistent' is the share of samples with a predicted node whose parent is not "
             "predicted (docs/metrics.md).", ""]
    if spec.goals:
        parts += ["## Goals", "",
                  f"From `{goals_file}`. Means of at least {spec.min_seeds} seeds, compared only with means of the "
                  "same budget and seeds; the 'default' is a set of runs whose resolved config is the dataset's "
                  "default config named there, whatever the runs were named (where several sets are, the one "
                  "with the most seeds).", "",
                  markdown_table(["dataset", "goal", "status", "measured"], goals(gs, spec)), ""]
    for d in sorted({g.dataset for g in gs}):
        dg = sorted((g for g in gs if g.dataset == d),
                    key=lambda g: (-(g.stat("micro_f1") or (0.0, 0))[0], g.name))
        depth = max(g.depth for g in dg)
        header = (["run", "model", "encoder", "protocol", "n", "micro F1", "macro F1", "leaf mi / ma"] +
                  [f"L{k} mi / ma" for k in range(1, depth + 1)] +
                  ["hier F1", "inconsistent", "train time per seed", "machine", "seeds", "commit", "command"])
        rows = []
        for g in dg:
            levels = [f"{g.level(k, 'micro')[0]:.4f} / {g.level(k)[0]:.4f}" if g.level(k) else None
                      for k in range(1, depth + 1)]
            leaf = f"{_leaf(g)[0]:.4f} / {_leaf(g)[1]:.4f}" if g.stat("leaf_micro_f1") else None
            inc = g.stat("inconsistent_samples")
            rows.append([g.name, g.model, g.source.get("encoder") or "–", protocol(g),
                         g.n, pm(g.stat("micro_f1"), g.n),
                         pm(g.stat("macro_f1"), g.n), leaf, *levels,
                         pm(g.stat("hier_f1"), g.n), f"{100 * inc[0]:.2f}%" if inc else None,
                         duration(g.train_seconds), machine_text(g.source.get("machine")),
                         ", ".join(map(str, g.seeds)), Code(_commits(g)), Code(_command(g.source))])
        parts += [f"## {d}", "", markdown_table(header, rows), ""]
        for title, h1, same, h2, other in budget_tables(dg):
            parts += [f"### Same budget — {title}", "",
                      "Ablations and heads on flat's recipe (only the head differs): Δ is the hierarchy's gain in "
                      "points of the leaf-level means.", "", markdown_table(h1, same), ""]
            if other:
                parts += ["Recipe changes (the toolbox) on the same budget: against the same head without the change "
                          "(what the change does), against flat with the same change (the hierarchy's share) and "
                          "against plain flat (recipe and hierarchy together).", "",
                          markdown_table(h2, other), ""]
    learning = curves(gs)
    if learning:
        parts += ["## Learning curves", "",
                  "Leaf macro-F1 against the training texts per node (`data.shots = K`, drawn per seed, dev as "
                  "scarce as train unless the run says otherwise; 'all': every text): one row per method, the "
                  "same configuration and seeds at every K (hmtc.curves).", ""]
        for d, methods in learning.items():
            header, rows = curve_table(methods)
            parts += [f"### {d}", "", markdown_table(header, rows), "", f"![{d} learning curves](curves-{d}.png)", ""]
    loops = load_loops(Path(records_dir).parent / "loops")
    if loops:
        parts += ["## Labelling loops", "",
                  "What to label next, simulated (`benchmarks/labelling_loop.py`): K texts per node to start, then "
                  "rounds that each label the texts a strategy picks from the rest of the training split (gold "
                  "revealed) and retrain; test leaf macro-F1 after each round, mean ± sample std over the seeds.", ""]
        for rec in loops:
            header, rows = loop_table(rec)
            stem = rec["file"][:-len(".json")]
            parts += [f"### {rec['dataset']}: {stem}", "",
                      f"{rec['start_shots']} texts per node to start, {rec['rounds']} rounds of {rec['batch']}; "
                      f"seeds {', '.join(map(str, rec['seeds']))}; commit `{str(rec.get('git_commit'))[:12]}`, "
                      f"{machine_text(rec.get('machine'))}; `{rec['command']}`", "",
                      markdown_table(header, rows), "", f"![{stem}](loop-{stem}.png)", ""]
    missing = configs_without_record(gs, Path(records_dir).parent, Path(goals_file) if goals_file else None)
    if missing:
        parts += ["## Configs not run yet", "",
                  "Experiment configs beside the records folder that no record comes from; "
                  "each runs with its command.", "",
                  markdown_table(["config", "dataset", "model", "command"], missing), ""]
    published = published_rows(spec, gs, records_dir)
    if published:
        parts += ["## Published reference figures", "",
                  "Published figures with their sources, and ours (means) in the same convention beside them.", ""]
    for d, header, rows in published:
        parts += [f"### {d}", "", markdown_table(header, rows), ""]
    return "\n".join(parts)


def write_results(records_dir: str | Path = "experiments/records",
                  out: str | Path = "experiments/RESULTS.md", goals_file: str | Path | None = None) -> Path:
    """Regenerate ``out`` from the records, atomically, with a learning-curve PNG per dataset that
    has curves (``curves-<dataset>.png`` beside it) and one per labelling loop in the ``loops``
    folder beside the records (``loop-<name>.png``); returns its path."""
    text = render_results(records_dir, out, goals_file)
    for d, methods in curves(groups(load_records(records_dir))).items():
        atomic_write_bytes(Path(out).parent / f"curves-{d}.png", curve_png(methods, f"{d}: leaf macro-F1"))
    for rec in load_loops(Path(records_dir).parent / "loops"):
        atomic_write_bytes(Path(out).parent / f"loop-{rec['file'][:-len('.json')]}.png", loop_png(rec))
    atomic_write_text(out, text)
    return Path(out)
