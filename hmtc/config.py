"""Run configuration: a TOML file with [data], [model], [train] and [decode] tables.

Each table is a dataclass below (:class:`DataConfig`, :class:`ModelConfig`, :class:`TrainConfig`,
:class:`DecodeConfig`): its fields are the table's keys, with their types, defaults, cheap range
checks and one line of meaning each. They are the schema: :data:`DEFAULTS` is built from them,
every file and override is checked against them on load, and ``docs/config.md`` is rendered from
them by :func:`config_docs`. A loaded config is a frozen :class:`RunConfig` (``cfg.train.lr``): a
typo in a key is an AttributeError, not a silent default, and a value cannot change under a run
that holds it (a change is a new config: :meth:`RunConfig.merged`, :meth:`RunConfig.with_overrides`).
It is stored (checkpoints, config.json, records) as the plain tables of :meth:`RunConfig.to_dict`
and read back by :meth:`RunConfig.from_dict`, which brings an older hmtc's config up to date.

A config may start with ``base = "other.toml"`` (a path relative to the config's own folder):
the base is read first (itself possibly with a base; a cycle is an error) and the config's own
keys are merged over it, tables key by key, so a variant states only what differs. ``name`` is
never inherited: a config's name is its own ``name`` or its file's stem.

Command-line ``--set section.key=value`` overrides any key (the value is read as TOML, so
``--set train.lr=1e-4`` is a float and ``--set model.options.kernels=[[3,5],[2]]`` a list);
``--set name=...`` renames the run.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import sys
import types
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Bound:
    """A check on a key's value beyond its type.

    Parameters
    ----------
    test : callable
        True when a value (already of the key's type) is allowed.
    text : str
        The check in words, shown after the type in errors and in ``docs/config.md``.
    """

    test: Callable[[Any], bool]
    text: str


def _range(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False,
           finite: bool = False) -> Bound:
    """``low <= v`` (``<`` when ``low_open``) and, if given, ``v <= high`` (``<`` when ``high_open``).

    NaN and infinities never pass; ``finite`` adds that to the words of a bound open above."""
    def test(v: float) -> bool:
        return (math.isfinite(v) and (v > low if low_open else v >= low)
                and (high is None or (v < high if high_open else v <= high)))
    if high is None:
        text = f"{'>' if low_open else '>='} {low}" + (" and finite" if finite else "")
    else:
        text = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Bound(test, text)


def _key(default: Any, doc: str, bound: Bound | None = None) -> Any:
    """A config key: its default, one line of meaning and an optional :class:`Bound`."""
    meta = {"doc": doc, "bound": bound}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


Auto = Literal["auto"] | bool          # a switch that "auto" sets from the training data


class _Table:
    """A config table: every field checked against its type and bound when the table is built,
    however it is built (a file, ``--set``, :func:`dataclasses.replace`, a stored config)."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        check_config({self.section: {f.name: getattr(self, f.name) for f in fields(self)}})


@dataclass(frozen=True)
class DataConfig(_Table):
    """The [data] table: the dataset, its taxonomy and how its texts are cut."""

    section: ClassVar[str] = "data"

    dataset: str = _key("duee", "built-in dataset name or a dataset TOML")
    data_dir: str = _key("", "folder of the built-in datasets (\"\": `$HMTC_DATA`)")
    taxonomy: str = _key("", "taxonomy file (\"\": the dataset's own)")
    options: dict[str, Any] = _key({}, "reader options set over the dataset's own, e.g. "
                                       "`{ remove = [\"headers\", \"footers\", \"quotes\"] }` for 20newsgroups "
                                       "(data/README.md)")
    dev_fraction: float = _key(0.05, "share of train carved out (seeded) as dev when the dataset has no dev split",
                               _range(0, 1, high_open=True))
    max_length: int = _key(128, "tokens kept per text, its special tokens included; beyond the encoder's positions "
                                "only with model.windows", _range(1))
    train_limit: int = _key(0, "use only the first N training samples (0: all)", _range(0))
    shots: Literal["all"] | int = _key("all", "few-shot protocol: K training texts per node, drawn per seed "
                                              "(hmtc.data.sampling; 0: none, names only)",
                                       Bound(lambda v: v == "all" or v >= 0, "(\"all\" or >= 0)"))
    dev_shots: Literal["shots", "all"] | int = _key("shots", "dev texts per node with data.shots, drawn apart from "
                                                             "the training texts (\"shots\": as many as data.shots; "
                                                             "\"all\": the whole dev split)",
                                                    Bound(lambda v: v in ("shots", "all") or v >= 0,
                                                          "(\"shots\", \"all\" or >= 0)"))
    train_fraction: float = _key(1.0, "share of the training split kept, drawn per seed after dev is set aside "
                                      "(1: all)", _range(0, 1, low_open=True))


@dataclass(frozen=True)
class ModelConfig(_Table):
    """The [model] table: the model family, its encoder, what of the encoder trains and how it reads long texts."""

    section: ClassVar[str] = "model"

    name: str = _key("msml", "model family: a name in the model registry (hmtc.models.MODELS)")
    encoder: str = _key("me5-small", "built-in encoder name, local folder or hub id")
    layers: list[int] = _key([-1], "hidden layers mixed into the token states (0: embeddings, -1: the last)")
    freeze_embeddings: bool = _key(True, "keep the word embeddings fixed")
    freeze_layers: int = _key(0, "keep the lowest N encoder layers fixed as well", _range(0))
    fast_dropout: bool = _key(False, "dropout masks from 16-bit slices of 64-bit draws and eager attention "
                                     "(hmtc.models.dropout): same masks in distribution, faster CPU steps "
                                     "(experiments/speed.md), another random stream")
    windows: bool = _key(False, "cut a text longer than one window into windows, encode them in shared batches "
                                "and join their token states (an overlap split at its middle) before the head, "
                                "which pools the whole text (hmtc.models.encoder.Windows)")
    window_length: int = _key(0, "tokens per window, its two special tokens included (0: the encoder's positions)",
                              Bound(lambda v: v == 0 or v >= 3, "(0 or >= 3)"))
    window_stride: int = _key(0, "tokens each window repeats from the one before, as the stride of Hugging Face "
                                 "tokenizers (at most half a window's content)", _range(0))
    encoder_options: dict[str, Any] = _key({}, "passed to `from_pretrained`, e.g. `{ hidden_dropout_prob = 0.0 }`")
    options: dict[str, Any] = _key({}, "the model's own config (e.g. MSMLConfig fields), checked by the model")


@dataclass(frozen=True)
class TrainConfig(_Table):
    """The [train] table: optimisation, regularisers, distillation, seeds and where runs go."""

    section: ClassVar[str] = "train"

    epochs: int = _key(3, "passes over the training data", _range(1))
    batch_size: int = _key(32, "training samples per step", _range(1))
    lr: float = _key(1e-4, "learning rate of the top encoder layer", _range(0, finite=True))
    head_lr: float = _key(5e-3, "learning rate of everything outside the encoder", _range(0, finite=True))
    layer_decay: float = _key(1.0, "encoder layer l of L learns at lr · layer_decay^(L - l)",
                              _range(0, 1, low_open=True))
    weight_decay: float = _key(0.01, "AdamW weight decay (none on biases and LayerNorm weights)",
                               _range(0, finite=True))
    warmup: float = _key(0.06, "fraction of the steps spent warming the learning rate up",
                         _range(0, 1, high_open=True))
    schedule: Literal["linear", "cosine", "constant"] = _key("linear", "learning-rate decay after the warm-up")
    clip: float = _key(1.0, "gradient norm clip (0: off)", _range(0, finite=True))
    max_bad_steps: int = _key(3, "consecutive steps with a non-finite loss or gradient (each skipped) after which "
                                 "training stops as diverged", _range(1))
    ema: float = _key(0.0, "EMA decay of weights (0: off)", _range(0, 1, high_open=True))
    fgm_epsilon: float = _key(0.0, "FGM (hmtc.regularizers): adversarial step of this norm on the word embeddings, "
                                   "or on the first trainable layer's input with cache_frozen (0: off)",
                              _range(0, finite=True))
    gp_weight: float = _key(0.0, "gradient penalty (hmtc.regularizers): λ·mean squared norm of the loss gradient in "
                                 "the word embeddings, by finite differences (0: off)", _range(0, finite=True))
    rdrop_alpha: float = _key(0.0, "R-Drop (hmtc.regularizers): α·symmetric KL between two dropout passes (0: off)",
                              _range(0, finite=True))
    prune_vocab: Auto = _key("auto", "a finished run's best/ keeps only the vocabulary rows its training and dev texts, "
                                     "names, single characters and the most probable pieces use (hmtc.slim); auto: "
                                     "with the whole training split, not with a few-shot draw (data.shots, "
                                     "data.train_fraction), whose texts cover too few of the words it will meet")
    save_dtype: Literal["float32", "float16", "bfloat16"] = _key(
        "float16", "how a finished run's best/ stores its weights (loaded back as float32)")
    save_every: int = _key(1, "write last/ (weights and optimizer state, what --resume continues from) every N "
                              "epochs; 0: never while training (a short fit whose states are cached spends most of "
                              "its time writing them), so an interrupted run starts again", _range(0))
    keep_last: bool = _key(False, "keep last/'s weights and optimizer state once the run has finished (to continue "
                                  "it with more epochs); else a finished run keeps one copy of the weights, best/")
    cache_frozen: bool = _key(False, "run the frozen embeddings and model.freeze_layers once (no dropout) and "
                                     "train the layers above on their cached output every epoch")
    frozen_store: bool = _key(False, "with cache_frozen, keep the frozen layers' states on disk under "
                                     "$HMTC_HOME/frozen/<fingerprint>: later runs and evaluations that freeze the "
                                     "same part of the same encoder read each text's states instead of computing them")
    teacher: str = _key("", "distil from this run or checkpoint folder with the same taxonomy (\"\": off)")
    init_from: str = _key("", "start from this trained run's or checkpoint's weights instead of the encoder's: the "
                              "same model over the same taxonomy (data.taxonomy; `hmtc migrate` carries a run "
                              "onto an edited one) (\"\": off)")
    baseline: str = _key("", "a config file (e.g. experiments/duee-tfidf.toml) fitted beside a single run on the same "
                             "data, split and seed, its test figures shown beside the run's (\"\": none)")
    distill_alpha: float = _key(0.5, "distillation weight α: (1 - α)·task loss + α·soft-target BCE (hmtc.losses)",
                                _range(0, 1))
    distill_temperature: float = _key(1.0, "temperature T of the teacher's soft targets",
                                      _range(0, low_open=True, finite=True))
    patience: int = _key(0, "epochs without dev gain before stopping (0: never)", _range(0))
    metric: Literal["micro_f1", "macro_f1", "leaf_micro_f1", "leaf_macro_f1", "hier_f1", "c_micro_f1",
                    "c_macro_f1", "exact_match", "samples_f1"] = _key("micro_f1", "dev figure that picks the best epoch")
    bf16: bool = _key(False, "bf16 autocast on CPU or GPU")
    seed: int = _key(42, "seed of initialisation, batch order, dropout and the carved dev split")
    seeds: list[int] = _key([], "several seeds: one run each under `<out>/seed-<n>`, plus a mean record",
                            Bound(lambda v: len(set(v)) == len(v), "without repeats"))
    threads: int = _key(0, "torch threads (0: all cores)", _range(0))
    device: str = _key("auto", "where to train", Bound(lambda v: v in ("auto", "cpu", "cuda") or bool(
        re.fullmatch(r"cuda:[0-9]+", v)), "(auto, cpu, cuda or cuda:<n>)"))
    eval_batch_size: int = _key(128, "texts per batch when predicting", _range(1))
    bucket_size: int = _key(50, "batches per length bucket", _range(1))
    output_dir: str = _key("runs", "folder of the run folders (`<output_dir>/<name>`)")
    record_dir: str = _key("runs/records", "run records, one JSON per run keyed by its folder under output_dir "
                                           "(experiments/ configs use experiments/records, the tracked ones)")


@dataclass(frozen=True)
class DecodeConfig(_Table):
    """The [decode] table: how node scores become consistent label sets (hmtc.decode)."""

    section: ClassVar[str] = "decode"

    method: Literal["best", "top-down", "closure"] = _key(
        "best", "top-down: passing nodes under kept parents; closure: passing nodes and their ancestors; "
                "best: the consistent set of highest total margin")
    threshold: Literal["tune"] | float = _key("tune", "\"tune\" (on dev) or a logit")
    per_label: bool = _key(False, "tune one threshold per node on dev")
    per_level: bool = _key(False, "tune one threshold per level on dev (with per_label: the value each node's "
                                  "threshold falls back or shrinks to)")
    label_prior: float = _key(0.0, "with per_label: shrink each node's tuned threshold toward the global or level one "
                                   "by n / (n + label_prior), n its dev positives (0: nodes with fewer than 5 keep it)",
                              _range(0, finite=True))
    single_path: Auto = _key("auto", "keep one path per text; auto: from the training data")
    at_least_one: Auto = _key("auto", "predict at least one label; auto: when every training sample has a label")
    complete: Auto = _key("auto", "extend predictions down to a leaf; auto: when every training label set "
                                  "reaches one")
    back_off: bool = _key(False, "drop predicted nodes the model is unsure of (not above their threshold, kept only "
                                 "because decoding forces an answer): answers stop at their deepest sure node; with "
                                 "at_least_one a text with no sure node keeps its forced level-1 node")
    consistent_scores: Literal["none", "min", "max"] = _key(
        "none", "reported probabilities that agree with the taxonomy: min caps a child at its parents', max lifts "
                "a parent to its children's (hmtc.calibration.consistent)")


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "decode": DecodeConfig}
"""Each table of a config and the dataclass that is its schema."""

_SCHEMA: dict[str, dict[str, tuple[Any, Bound | None]]] = {
    name: {f.name: (get_type_hints(cls)[f.name], f.metadata["bound"]) for f in fields(cls)}
    for name, cls in SECTIONS.items()}


def _type_name(tp: Any) -> str:
    """A schema type in words: ``float``, ``list of int``, ``"tune" | float``, ``table`` (no brackets:
    the CLI prints errors as rich markup)."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "none"
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "table"
    return tp.__name__


def _has_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` is of the schema type ``tp`` (an int is a float; a bool is no number)."""
    origin = get_origin(tp)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_has_type(value, a) for a in get_args(tp))
    if tp is Any:
        return True
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, get_args(tp)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_fields(cls: type, values: dict, where: str) -> None:
    """Type-check ``values`` against the annotated fields of the dataclass ``cls`` (a model's
    options); unknown keys are the caller's to report."""
    hints = get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not _has_type(value, hints[key]):
            raise ConfigError(f"{where}.{key}: expected {_type_name(hints[key])}, got {value!r}")


def check_config(cfg: dict, path: str | Path | None = None) -> None:
    """Check every key of a config, or of part of one, against the schema.

    Parameters
    ----------
    cfg : dict
        Tables by section name (any subset of their keys), and optionally ``name``.
    path : str or Path, optional
        The file the values come from, named in the error.

    Raises
    ------
    ConfigError
        On an unknown table or key, or a value of the wrong type or out of range; the message
        names the key, what it expects and the value given (``train.lr: expected float, got 'fast'``).
    """
    for section, table in cfg.items():
        if section == "name":
            if not isinstance(table, str):
                raise ConfigError(f"name: expected str, got {table!r}", path)
            continue
        if section not in _SCHEMA:
            raise ConfigError(f"unknown key {section}{_did_you_mean(section, [*_SCHEMA, 'name'])}; "
                              f"known: {', '.join(sorted([*_SCHEMA, 'name']))}", path)
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected table, got {table!r}", path)
        schema = _SCHEMA[section]
        for key, value in table.items():
            if key not in schema:
                raise ConfigError(f"unknown key {section}.{key}{_did_you_mean(key, schema, section + '.')}; "
                                  f"known: {', '.join(sorted(schema))}", path)
            tp, bound = schema[key]
            if not _has_type(value, tp):
                raise ConfigError(f"{section}.{key}: expected {_type_name(tp)}, got {value!r}", path)
            if bound is not None and not bound.test(value):
                raise ConfigError(f"{section}.{key}: expected {_type_name(tp)} {bound.text}, got {value!r}", path)


DEFAULTS: dict[str, dict[str, Any]] = {name: asdict(cls()) for name, cls in SECTIONS.items()}
"""The default config, table by table, as stored."""


@dataclass(frozen=True)
class RunConfig:
    """A whole run config: its name and its four tables, each checked when built.

    Built once per command by :func:`load_config` (defaults, the file over its ``base`` chain,
    ``--set`` overrides) or from stored tables by :meth:`from_dict`; a changed copy comes from
    :meth:`merged` / :meth:`with_overrides`, through the same checks.
    """

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    @classmethod
    def from_dict(cls, tables: dict, path: str | Path | None = None) -> RunConfig:
        """A config stored as tables (checkpoint.json, config.json, a record, any subset of keys):
        keys added since it was written take the value it ran with (:func:`upgrade_config`), and
        every key is checked (:func:`check_config`; ``path`` is named in the error)."""
        if not isinstance(tables, dict):
            raise ConfigError(f"a run config is a table, not {type(tables).__name__}", path)
        check_config(tables, path)
        full = upgrade_config(tables)
        return cls(name=str(full.get("name", "run")),
                   **{section: cls_(**full[section]) for section, cls_ in SECTIONS.items()})

    def to_dict(self) -> dict:
        """The config as stored: ``{"data": {...}, "model": {...}, "train": {...}, "decode": {...},
        "name": ...}``, every key present."""
        return {section: asdict(getattr(self, section)) for section in SECTIONS} | {"name": self.name}

    def merged(self, extra: dict) -> RunConfig:
        """``extra`` (tables of keys, any subset) over this config as a config file's own keys
        are (:func:`_merge`), the result checked (:meth:`from_dict`); ``extra["name"]`` renames
        the run."""
        if not isinstance(extra, dict):
            raise ConfigError(f"merge a dict of tables into a config (e.g. {{\"train\": {{\"lr\": 1e-4}}}}), "
                              f"not {type(extra).__name__}")
        if "name" in extra:
            check_run_name(extra["name"])
        return RunConfig.from_dict(_merge(self.to_dict(), extra))

    def with_overrides(self, items: list[str], only: str | None = None) -> RunConfig:
        """This config with ``section.key=value`` overrides (:func:`parse_overrides`) applied in
        order, each checked; the one path of ``--set`` for train, eval, predict, serve and the
        estimator."""
        cfg = self
        for key, value in parse_overrides(items, only).items():
            cfg = cfg.merged({key: str(value) if key == "name" else value})
        return cfg


@dataclass(frozen=True)
class TextSpec:
    """What a model takes from its run beyond its own ``[model]`` table: how long a text it reads,
    how it scores by default and whether the frozen part's states are kept on disk."""

    max_length: int = 128
    eval_batch_size: int = 128
    bf16: bool = False
    frozen_store: bool = False

    @classmethod
    def of(cls, cfg: RunConfig) -> TextSpec:
        """``data.max_length``, ``train.eval_batch_size``, ``train.bf16``, and
        ``train.cache_frozen and train.frozen_store``."""
        t = cfg.train
        return cls(cfg.data.max_length, t.eval_batch_size, t.bf16, t.cache_frozen and t.frozen_store)


def _toml(value: Any) -> str:
    """A default as it is written in a config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return f"[{', '.join(_toml(v) for v in value)}]"
    if isinstance(value, dict):
        return ("{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }") if value else "{}"
    return repr(value)


REGENERATE = "from hmtc.config import config_docs; open('docs/config.md','w').write(config_docs())"
"""Python that rewrites ``docs/config.md`` from the schema."""


def config_docs() -> str:
    """``docs/config.md``: every table's keys with their type, default and meaning, from the schema.

    Returns
    -------
    str
        Markdown, one table per section (``tests/test_config.py`` fails when the file is stale).
    """
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["# Configuration", "",
           "<!-- Generated from the schema in hmtc/config.py; do not edit. Regenerate with",
           f"     python -c \"{REGENERATE}\" -->",
           "",
           "A run config is a TOML file with the tables below; every key is optional. Two top-level keys",
           "come before them: `name` (the run's name; default: the file's stem) and `base` (another",
           "config, relative to this one, read first and merged under it, table by table; its `name` is",
           "not inherited). `--set section.key=value` overrides a key from the command line (a TOML",
           "value; a bare word is a string). Values are checked on load: a wrong type or a value out of",
           "range names the key, what it expects and the value given, and the command exits with code 2.",
           "An int is accepted where a float is expected; `true`/`false` are never numbers.",
           "",
           "In Python, `hmtc.config.load_config(path, overrides)` returns a frozen `RunConfig` whose tables are",
           "the dataclasses below (`cfg.train.lr`); `cfg.merged({\"train\": {\"lr\": 1e-4}})` and",
           "`cfg.with_overrides([\"train.lr=1e-4\"])` return a changed copy after the same checks, and",
           "`cfg.to_dict()` / `RunConfig.from_dict(tables)` are the stored form (checkpoints, `config.json`,",
           "records), an older hmtc's brought up to date when read."]
    for name, cls in SECTIONS.items():
        defaults = asdict(cls())
        out += ["", f"## [{name}]", "", cls.__doc__, "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in fields(cls):
            tp, bound = _SCHEMA[name][f.name]
            kind = _type_name(tp) + (f" {bound.text}" if bound else "")
            out.append(f"| `{f.name}` | `{cell(kind)}` | `{cell(_toml(defaults[f.name]))}` "
                       f"| {cell(f.metadata['doc'])} |")
    return "\n".join(out) + "\n"


def _merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, tables (model options and the tables inside them too) key by key:
    the one merge rule of base chains, overrides and stored configs."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# what a stored config that lacks a key ran with, where that is not today's default
LEGACY = {"decode": {"complete": False}}


def upgrade_config(cfg: dict) -> dict:
    """A run config stored by an earlier hmtc (checkpoint.json, config.json, records), with every
    key added since: the value it ran with (:data:`LEGACY`), else the default. The one place old
    configs are brought up to date, so readers index keys instead of guessing defaults."""
    return _merge(_merge(DEFAULTS, LEGACY), cfg)


MAX_BASE_DEPTH = 32          # base files over base files; read recursively, so bounded


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The TOML at ``path`` with its ``base`` chain merged under it (``name`` not inherited), each
    file's own keys checked against the schema."""
    key = path.resolve()
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"base chain deeper than {MAX_BASE_DEPTH} files (from {chain[0].name}); "
                          "fold some of them together", path)
    if key in chain:
        cycle = " -> ".join(p.name for p in (*chain, key))
        raise ConfigError(f"base configs form a cycle: {cycle}", chain[-1])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        where = f"base of {chain[-1]}: " if chain else ""
        raise ConfigError(f"{where}config file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("a folder, not a config file", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path) from None
    base = raw.pop("base", None)
    check_config(raw, path)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base must be a config file name, not {base!r}", path)
    inherited = _read(path.parent / base, (*chain, key))
    inherited.pop("name", None)
    return _merge(inherited, raw)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the TOML file (over its ``base`` chain), then ``section.key=value`` overrides,
    each checked against the schema (:func:`check_config`) before it is merged; the run's name
    (the file's ``name``, else its stem, else ``--set name=``) is checked once it is final."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        raw = _read(path)
        name = raw.pop("name", None) or path.stem
        cfg = replace(cfg.merged(raw), name=name)
    cfg = cfg.with_overrides(overrides or [])
    check_run_name(cfg.name)
    return cfg


def dotted(d: dict, prefix: str = "") -> dict:
    """A nested config table as ``{"section.key": value}`` (option tables key by key)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_sources(path: str | Path | None, overrides: list[str] | None = None) -> tuple[dict, dict[str, str]]:
    """The resolved config of :func:`load_config` as dotted keys, and where each value comes
    from: ``"default"``, the file of the ``base`` chain that set it last, or ``"--set"``."""
    cfg = load_config(path, overrides).to_dict()       # every error of the chain and the overrides first
    values = dotted({k: v for k, v in cfg.items() if k != "name"}) | {"name": cfg["name"]}
    where = {k: "default" for k in values}
    files, at = [], Path(path) if path is not None else None
    while at is not None:
        raw = tomllib.loads(at.read_text(encoding="utf-8"))
        files.append((at, raw))
        at = at.parent / raw["base"] if "base" in raw else None
    for file, raw in reversed(files):            # the deepest base first: a later file overrides it
        own = {k: v for k, v in raw.items() if k != "base" and (k != "name" or file == files[0][0])}
        for key in dotted(own):
            where[key] = str(file)
    if path is not None and "name" not in files[0][1]:
        where["name"] = f"{files[0][0]} (its file name)"
    for key in dotted(parse_overrides(overrides or [])):
        where[key] = "--set"
    return values, where


def parse_overrides(items: list[str], only: str | None = None) -> dict:
    """``section.key=value`` strings (TOML values; a bare word is a string) as a nested dict,
    applied in order; ``name=value`` renames the run. ``only`` restricts them to one section."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or (len(parts) < 2 and parts != ["name"]):
            raise ConfigError(f"override {item!r} is not section.key=value (or name=value)")
        if only is not None and parts[0] != only:
            raise ConfigError(f"override {item!r}: only {only}.* keys can be set here")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value                      # a bare word is a string
        leaf = out
        for p in parts[:-1]:
            leaf = leaf.setdefault(p, {})
            if not isinstance(leaf, dict):
                raise ConfigError(f"override {item!r} sets a key inside a value")
        leaf[parts[-1]] = parsed
    return out


def check_run_name(name: str) -> None:
    """A run name becomes a folder and a record file: it may not escape them, nor name the
    output folder itself (``.``: the run would be written among the other runs)."""
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or not p.parts:
        raise ConfigError(f"run name {name!r} must be a relative name without '..', not '.'")


def _did_you_mean(key: str, known, prefix: str = "") -> str:
    """``"; did you mean <prefix><closest>?"`` when a known key is close to ``key``, else ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
