"""Fault drill: bad inputs across config, data, taxonomy, training, checkpoints, predict, serve,
the estimator, seeds and resume, migrate, suggest, Label Studio exports, few-shot protocols,
ensembles, exclusive marks, windows and inputs nested deep, each run through the real CLI entry
point (``hmtc.cli.main``) or the Python API on the tiny offline encoder and dataset of
:mod:`hmtc.testing`. Every case names the message it expects (a piece of its one ``error:``
line), or is a control that must be accepted; each is classified:

    clear error       exit 2 and exactly one ``error:`` line (or typer's usage error) holding the
                      expected message, no traceback
    accepted          a control (a valid input) ran to exit 0
    wrong message     one clear line, but not the one the case expects (it failed for another reason)
    unclear           a non-zero exit without that one line
    traceback         an exception escaped, or a traceback was printed
    silently accepted exit 0 on a bad input
    refused           a control (a valid input) was refused
    data lost         a file, link or node that lay around the case's targets before it ran (the
                      folder of every path it names, the drill's own data, run and records)
                      changed or vanished; counted before anything else

A case marked ``pending`` names a gap known to be open in a file another change owns; it is
reported apart (and flagged once it passes, to drop the mark) and does not fail the drill.

``--mutate`` is the check on the drill itself: for each guard in :data:`MUTANTS` it runs the
cases that test it with the guard removed (patched to let everything through) and expects every
one of them to fail; a case that still passes would pass for the wrong reason.

    python scripts/fault_matrix.py [--out experiments/fault-matrix-2.json] [--mutate [--guards N]]

Prints the counts and each case that is not as expected; ``--out`` also writes every case.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import safetensors.torch
import torch
import uvicorn
from sklearn.base import BaseEstimator

from hmtc import testing
from hmtc.cli import _one_line, main
from hmtc.config import DEFAULTS
from hmtc.errors import HmtcError
from hmtc.estimator import HierarchicalClassifier
from hmtc.io import atomic_write_json
from hmtc.record import machine_info, now
from hmtc.serve import Limits, create_app, load_served

ACCEPT = "<accepted>"           # the expectation of a control: a valid input, exit 0
GOOD = ("clear error", "accepted")
OUTCOMES = ("clear error", "accepted", "wrong message", "unclear", "traceback", "silently accepted", "refused",
            "data lost")


@dataclass
class Case:
    category: str
    name: str
    argv: list[str]
    expect: str                     # a piece of the one error line, or ACCEPT
    setup: object = None            # callable run just before the case (makes its bad files)
    env: dict = field(default_factory=dict)
    call: object = None             # an API case: called instead of the CLI; an HmtcError is its error line
    stdin: bytes | None = None      # bytes on the command's standard input
    around: tuple = ()              # more paths whose surroundings must stay as they were
    guard: str | None = None        # the MUTANTS entry this case tests (--mutate)
    writes: tuple = ()              # paths a control is meant to change (its own output)
    pending: str = ""               # a gap known to be open, and the file that must close it


# ---- what lies around a case: hashed before and after ------------------------------------------
_HASHES: dict[tuple, str] = {}


def _entry(p: Path) -> str:
    """A path's content as it matters for loss: a link's target, a file's hash (cached by inode,
    size and mtime: the drill hashes the same files before every case), a folder, another node."""
    st = p.lstat()
    if stat.S_ISLNK(st.st_mode):
        return "link:" + os.readlink(p)
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if not stat.S_ISREG(st.st_mode):
        return f"node:{stat.S_IFMT(st.st_mode)}"
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _HASHES[key]


def digest(folders) -> dict:
    """Every file, link, folder and node under ``folders`` (links not followed), by path."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    out[str(p)] = _entry(p)
    return out


_PATH = re.compile(r"(/[^'\"\s,=]+)")


def surroundings(case: Case, base: Path) -> list[Path]:
    """The folders around every path under ``base`` that the case names: each path's nearest
    existing folder and that folder's parent (its neighbours), not only the target itself."""
    found = set()
    for token in [*case.argv, *map(str, case.around)]:
        for m in _PATH.findall(token):
            p = Path(m)
            if base not in p.parents and p != base:
                continue
            while not p.exists() and not p.is_symlink() and p != base:
                p = p.parent
            folder = p if p.is_dir() and not p.is_symlink() else p.parent
            found |= {folder, folder.parent if folder != base else folder}
    return sorted(found)


def run_case(case: Case, protected: Path, base: Path | None = None) -> dict:
    if case.setup:
        case.setup()
    folders = [protected, *surroundings(case, base or protected)]
    before = digest(folders)
    started = time.time()
    code, text, escaped = _execute(case)
    seconds = round(time.time() - started, 2)
    after = digest(folders)
    lost = sorted(k for k, v in before.items() if after.get(k) != v
                  and not any(k == str(w) or k.startswith(f"{w}/") for w in case.writes))
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    usage = code == 2 and "Usage:" in text
    outcome = _classify(case, code, text, escaped, lost, errors, usage)
    shown = errors[0] if errors else (escaped or text).strip().splitlines()[-1:] or [""]
    return {"category": case.category, "case": case.name, "argv": case.argv, "expect": case.expect, "exit": code,
            "outcome": outcome, "message": shown if isinstance(shown, str) else shown[0], "lost": lost, "seconds": seconds,
            **({"pending": case.pending} if case.pending else {})}


def _classify(case: Case, code, text: str, escaped, lost, errors, usage) -> str:
    if lost:
        return "data lost"
    if escaped or "Traceback (most recent call last)" in text:
        return "traceback"
    if case.expect == ACCEPT:
        return "accepted" if code == 0 else "refused"
    if code == 0:
        return "silently accepted"
    if code != 2 or not (len(errors) == 1 or usage):
        return "unclear"
    said = errors[0] if len(errors) == 1 else " ".join(text.replace("│", " ").split())
    return "clear error" if case.expect.lower() in said.lower() else "wrong message"


def _execute(case: Case) -> tuple:
    """(exit code, printed text, escaped traceback) of the case's command or call."""
    old_argv, old_env, old_stdin = sys.argv, {k: os.environ.get(k) for k in case.env}, sys.stdin
    sys.argv = ["hmtc", *case.argv]
    os.environ.update(case.env)
    if case.stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(case.stdin), encoding="utf-8")
    out, err, code, escaped = io.StringIO(), io.StringIO(), None, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = _call(case) if case.call else _cli()
            except BaseException:       # noqa: BLE001  (what the drill is looking for)
                escaped = traceback.format_exc()
    finally:
        sys.argv, sys.stdin = old_argv, old_stdin
        for k, v in old_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return code, out.getvalue() + err.getvalue(), escaped


def _cli() -> int:
    try:
        main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _call(case: Case) -> int:
    """An API case: an HmtcError is its one error line (as the CLI prints it), exit 2."""
    try:
        case.call()
        return 0
    except HmtcError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


def bad_values(key: str, value) -> list[tuple[str, str]]:
    """(label, TOML text) of wrong values for a config key, from its default's type."""
    if isinstance(value, bool):
        return [("string for bool", "'maybe'"), ("int for bool", "3")]
    if isinstance(value, int):
        return [("string for int", "'many'"), ("float for int", "1.5"), ("negative", "-7")]
    if isinstance(value, float):
        return [("string for float", "'fast'"), ("nan", "nan"), ("negative", "-0.5")]
    if isinstance(value, str):
        return [("int for string", "3"), ("unknown word", "'no-such-thing'")]
    if isinstance(value, list):
        return [("string for list", "'x'")]
    if isinstance(value, dict):
        return [("int for table", "3")]
    return []


# the keys whose wrong value is caught where it is used (a dataset, an encoder, a folder), not by the schema
KEY_MESSAGES = {
    ("data", "dataset", "unknown word"): "unknown dataset 'no-such-thing'",
    ("data", "data_dir", "unknown word"): "data folder",
    ("data", "taxonomy", "unknown word"): "no-such-thing: file not found",
    ("model", "name", "unknown word"): "unknown model 'no-such-thing'",
    ("model", "encoder", "unknown word"): "'no-such-thing' is not a built-in encoder",
    ("train", "teacher", "unknown word"): "no-such-thing: neither a run folder",
    ("train", "init_from", "unknown word"): "no-such-thing: neither a run folder",
    ("train", "baseline", "unknown word"): "train.baseline: no config file",
}
DATA_MESSAGES = {
    "malformed JSON line": "train.jsonl:97: bad JSON", "unknown label": "label 'animal-horse' is not a taxonomy node",
    "empty text": "train.jsonl:97: empty text", "labels neither a string nor a list": "must be a string or a list",
    "line not an object": "expected a JSON object", "not UTF-8": "train.jsonl:97: not valid utf-8",
    "empty train file": "cannot carve a dev set from 0", "card not TOML": "cannot read TOML",
    "card unknown format": "unknown format 'parquet'", "card without splits": "missing key 'splits'",
    "card names a missing split file": "gone.jsonl: file not found", "card names a missing taxonomy":
        "gone.tax: file not found", "taxonomy with a cycle": "cycle: a -> b -> a",
    "labels outside the taxonomy": "label 'animal-cat' is not a taxonomy node",
}
TAX_MESSAGES = {
    "cycle": "cycle: a -> b -> a", "duplicate id": "duplicate id 'a'", "odd indent": "not a multiple of two",
    "unknown reference": "refers to an unknown node", "second root": "second root 'OTHER'", "empty file": "no root",
    "not UTF-8": "not UTF-8", "quote in an id": "cannot read node line", "self loop": "self-loop",
    "reference with children": "cannot have children",
}
DAMAGE_MESSAGES = {
    "truncated weights": "does not match the checkpoint's manifest",
    "truncated weights, no manifest": "not readable weights", "NaN in the weights": "weights hold NaN or inf",
    "foreign weights": "weights do not fit the model", "checkpoint.json not JSON": "checkpoint.json: not valid JSON",
    "checkpoint.json without config": "no run config inside", "labels.json missing": "labels.json: missing",
    "labels differ from the taxonomy": "does not match the label index",
    "taxonomy.tax broken": "taxonomy.tax:3: duplicate id", "tokenizer missing": "tokenizer: missing",
    "decode.json not JSON": "decode.json: not valid JSON", "manifest not JSON": "not a readable manifest",
}
DAMAGE_GUARDS = {"truncated weights": "manifest", "manifest not JSON": "manifest"}

def build_cases(root: Path, cfg: Path, data: Path, run: Path, scratch: Path) -> list[Case]:
    cases: list[Case] = []
    train = ["train", str(cfg), "--quiet"]          # each case gets its own --out below: its own run
    # ---- config: every key with wrong values (nothing may train) ----------------------------
    for section, keys in DEFAULTS.items():
        for key, value in keys.items():
            for label, text in bad_values(key, value):
                if (section, key, label) in {("train", "seed", "negative"), ("decode", "threshold", "int for string"),
                                             ("data", "shots", "int for string"), ("data", "dev_shots", "int for string")} \
                        or (key in ("output_dir", "record_dir") and label == "unknown word"):
                    continue        # any int is a seed, a number a threshold or a shot count, any name a folder
                cases.append(Case("config", f"{section}.{key}: {label}", train + ["--set", f"{section}.{key}={text}"],
                                  KEY_MESSAGES.get((section, key, label), f"{section}.{key}: expected")))
    cases += [
        Case("config", "data.shots: negative", train + ["--set", "data.shots=-2"], "data.shots: expected"),
        Case("config", "data.dev_shots: negative", train + ["--set", "data.dev_shots=-2"],
             "data.dev_shots: expected"),
        Case("config", "data.shots = 0 for a model that needs examples", train + ["--set", "data.shots=0"], "data.shots"),
        Case("config", "data.shots with data.train_fraction", train + ["--set", "data.shots=2",
                                                                       "--set", "data.train_fraction=0.5"],
             "data.train_fraction"),
        Case("config", "unknown section", train + ["--set", "nope.key=1"], "unknown key nope"),
        Case("config", "unknown key", train + ["--set", "train.epoch=3"], "did you mean train.epochs?"),
        Case("config", "override without =", train + ["--set", "train.epochs"], "is not section.key=value"),
        Case("config", "unknown model", train + ["--set", "model.name='forest'"], "unknown model 'forest'"),
        Case("config", "unknown model option", train + ["--set", "model.options.nope=1"], "unknown option(s)"),
        Case("config", "kernels of the wrong shape", train + ["--set", "model.options.kernels='x'"],
             "model.options.kernels: expected"),
        Case("config", "level_weights too short", train + ["--set", "model.options.level_weights=[1.0]"],
             "has 1 weights for 2 levels"),
        Case("config", "unknown loss", train + ["--set", "model.options.loss='hinge'"], "unknown loss"),
        Case("config", "unknown label_init", train + ["--set", "model.options.label_init='names'"],
             "model.options.label_init: expected"),
        Case("config", "layers beyond the encoder", train + ["--set", "model.layers=[-9]"], "is not a hidden layer"),
        Case("config", "max_length beyond positions", train + ["--set", "data.max_length=100"], "exceeds the encoder's 64 positions"),
        Case("config", "freeze_layers beyond depth", train + ["--set", "model.freeze_layers=5"], "exceeds the encoder's 2 layers"),
        Case("config", "cache without frozen layers", train + ["--set", "train.cache_frozen=true"], "needs model.freeze_layers"),
        Case("config", "unknown encoder path", train + ["--set", "model.encoder='./no/such/encoder'"], "not a model folder"),
        Case("config", "uncached hub id offline", train + ["--set", "model.encoder='nobody/no-model'"],
             "nor in the Hugging Face cache", env={"HF_HUB_OFFLINE": "1"}),
        Case("config", "config file missing", ["train", str(root / "missing.toml")], "config file not found"),
        Case("config", "config is a folder", ["train", str(root)], "a folder, not a config file"),
        Case("config", "config not TOML", ["train", str(scratch / "bad.toml")], "invalid TOML",
             setup=lambda: (scratch / "bad.toml").write_text("[train\nepochs = 3\n")),
        Case("config", "base cycle", ["train", str(scratch / "cyc-a.toml")], "form a cycle",
             setup=lambda: ((scratch / "cyc-a.toml").write_text('base = "cyc-b.toml"\n'),
                            (scratch / "cyc-b.toml").write_text('base = "cyc-a.toml"\n'))),
        Case("config", "base missing", ["train", str(scratch / "orphan.toml")], "config file not found",
             setup=lambda: (scratch / "orphan.toml").write_text('base = "gone.toml"\n')),
        Case("config", "a name that escapes", train + ["--set", "name='../../escape'"], "run name", guard="run name"),
        Case("config", "an absolute name", train + ["--set", "name='/tmp/escape'"], "run name"),
        Case("config", "seeds not numbers", train + ["--seeds", "a,b"], "seeds must be integers", guard="seeds"),
        Case("config", "seeds repeated", train + ["--seeds", "1,1"], "seeds repeat"),
    ]

    # ---- data ---------------------------------------------------------------------------------
    def dataset(name: str, train_text: str | None = None, card: str | None = None, tax: str | None = None):
        folder = scratch / f"data-{name}"

        def make():
            shutil.copytree(data.parent, folder, dirs_exist_ok=True)
            if train_text is not None:
                (folder / "train.jsonl").write_bytes(train_text.encode("utf-8") if isinstance(train_text, str)
                                                     else train_text)
            if card is not None:
                (folder / "tiny.toml").write_text(card, encoding="utf-8")
            if tax is not None:
                (folder / "tiny.tax").write_text(tax, encoding="utf-8")
        return make, str(folder / "tiny.toml")

    good = (data.parent / "train.jsonl").read_text(encoding="utf-8")
    data_faults = {
        "malformed JSON line": (good + "{not json\n", None, None),
        "unknown label": (good + '{"text": "cat", "labels": ["animal-horse"]}\n', None, None),
        "empty text": (good + '{"text": "", "labels": ["animal-cat"]}\n', None, None),
        "labels neither a string nor a list": (good + '{"text": "cat", "labels": 3}\n', None, None),
        "line not an object": (good + '["cat", ["animal-cat"]]\n', None, None),
        "not UTF-8": (good.encode("utf-8") + b'{"text": "\xff\xfe", "labels": ["animal-cat"]}\n', None, None),
        "empty train file": ("", None, None),
        "card not TOML": (None, "name = [\n", None),
        "card unknown format": (None, 'name = "t"\nformat = "parquet"\ntaxonomy = "tiny.tax"\n[splits]\ntrain = "train.jsonl"\n',
                                None),
        "card without splits": (None, 'name = "t"\nformat = "jsonl"\ntaxonomy = "tiny.tax"\n', None),
        "card names a missing split file": (None, 'name = "t"\nformat = "jsonl"\ntaxonomy = "tiny.tax"\n[splits]\n'
                                                  'train = "train.jsonl"\ntest = "gone.jsonl"\n', None),
        "card names a missing taxonomy": (None, 'name = "t"\nformat = "jsonl"\ntaxonomy = "gone.tax"\n[splits]\n'
                                                'train = "train.jsonl"\n', None),
        "taxonomy with a cycle": (None, None, "ROOT\n  a\n    b\n      &a\n"),
        "labels outside the taxonomy": (None, None, "ROOT\n  other\n"),
    }
    for name, (text, card, tax) in data_faults.items():
        make, path = dataset(name.replace(" ", "-"), text, card, tax)
        cases.append(Case("data", name, train + ["--set", f"data.dataset='{path}'"], DATA_MESSAGES[name], setup=make))
    cases += [
        Case("data", "dataset file missing", train + ["--set", f"data.dataset='{root / 'gone.toml'}'"],
             "dataset file not found"),
        Case("data", "unknown built-in dataset", train + ["--set", "data.dataset='due'"], "did you mean 'duee'?"),
        Case("data", "data folder missing", train + ["--set", "data.dataset='duee'", "--set", "data.data_dir='/no/such/dir'"],
             "data folder"),
        Case("data", "dev fraction 0 without a dev split", train + ["--set", "data.dev_fraction=0.0"], "the dev split is empty"),
        Case("data", "stats of a missing dataset", ["data", "stats", str(root / "gone.toml")], "dataset file not found"),
    ]

    # ---- taxonomy files and edits -------------------------------------------------------------
    def tax_file(name: str, text: str | bytes) -> str:
        path = scratch / f"{name}.tax"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return str(path)

    bad_tax = {
        "cycle": "ROOT\n  a\n    b\n      &a\n", "duplicate id": "ROOT\n  a\n  a\n", "odd indent": "ROOT\n   a\n",
        "unknown reference": "ROOT\n  a\n    &zzz\n", "second root": "ROOT\nOTHER\n", "empty file": "",
        "not UTF-8": b"ROOT\n  \xff\n", "quote in an id": 'ROOT\n  a"b\n', "self loop": "ROOT\n  a\n    &a\n",
        "reference with children": "ROOT\n  a\n  b\n    &a\n      c\n",
    }
    for name, text in bad_tax.items():
        path = tax_file(name.replace(" ", "-"), text)
        cases.append(Case("taxonomy", f"validate: {name}", ["taxonomy", "validate", path], TAX_MESSAGES[name]))
    tax = str(data.parent / "tiny.tax")
    cases += [
        Case("taxonomy", "validate a missing file", ["taxonomy", "validate", str(root / "gone.tax")], "file not found"),
        Case("taxonomy", "show a folder", ["taxonomy", "show", str(root)], "Is a directory"),
        Case("taxonomy", "add an existing node", ["taxonomy", "add", tax, "animal-cat", "--parent", "animal"], "it already exists"),
        Case("taxonomy", "add under a missing parent", ["taxonomy", "add", tax, "new", "--parent", "nope"], "unknown parent 'nope'"),
        Case("taxonomy", "remove a missing node", ["taxonomy", "remove", tax, "nope", "--subtree"], "unknown node 'nope'"),
        Case("taxonomy", "remove with both modes", ["taxonomy", "remove", tax, "animal", "--subtree", "--reparent"], "choose one of"),
        Case("taxonomy", "move under its own child", ["taxonomy", "move", tax, "animal", "animal-cat"], "would make a cycle"),
        Case("taxonomy", "rename to an existing id", ["taxonomy", "rename", tax, "animal-cat", "animal-dog"], "it already exists"),
        Case("taxonomy", "merge into itself", ["taxonomy", "merge", tax, "animal", "animal"], "two distinct non-root nodes"),
        Case("taxonomy", "from-labels of a missing dataset", ["taxonomy", "from-labels", str(root / "gone.toml"),
                                                               "-o", str(scratch / "x.tax")], "dataset file not found"),
    ]

    # ---- training -----------------------------------------------------------------------------
    cases += [
        Case("training", "a diverging learning rate", train + ["--set", "train.lr=1e6", "--set", "train.head_lr=1e6",
                                                               "--out", str(scratch / "diverge")],
             "training diverged"),
        Case("training", "resume with nothing to resume", train + ["--resume", "--out", str(scratch / "nothing")], "nothing to resume"),
        Case("training", "the same run again", train + ["--out", str(run)], "a record of this run exists", guard="record"),
        Case("training", "resume a finished run's record", train + ["--resume", "--out", str(run)], "a record of this run exists"),
        Case("training", "teacher folder missing", train + ["--set", f"train.teacher='{root / 'gone'}'",
                                                            "--out", str(scratch / "t1")], "neither a run folder"),
        Case("training", "teacher with R-Drop", train + ["--set", f"train.teacher='{run}'", "--set",
                                                         "train.rdrop_alpha=1.0", "--out", str(scratch / "t2")],
             "cannot be combined with R-Drop"),
        Case("training", "--out is a file", train + ["--out", str(cfg)], "File exists"),
        Case("training", "train limit larger than nothing", train + ["--set", "data.train_limit=1", "--out",
                                                                     str(scratch / "tiny-limit")], "cannot carve a dev set"),
    ]

    # ---- checkpoints: a damaged copy of the trained run each --------------------------------------
    def damaged(name: str, damage):
        folder = scratch / f"ckpt-{name}"

        def make():
            shutil.rmtree(folder, ignore_errors=True)      # afresh: --mutate runs a case twice
            shutil.copytree(run, folder, symlinks=True)
            damage((folder / "best").resolve())
        return make, str(folder)

    def truncate(f: Path):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    def nan_weights(b: Path):
        t = safetensors.torch.load_file(str(b / "model.safetensors"))
        t[next(iter(t))].view(-1)[0] = float("nan")
        safetensors.torch.save_file(t, str(b / "model.safetensors"))
        (b / "manifest.json").unlink()

    damages = {
        "truncated weights": lambda b: truncate(b / "model.safetensors"),
        "truncated weights, no manifest": lambda b: (truncate(b / "model.safetensors"), (b / "manifest.json").unlink()),
        "NaN in the weights": nan_weights,
        "foreign weights": lambda b: (safetensors.torch.save_file({"x": torch.zeros(2)}, str(b / "model.safetensors")),
                                      (b / "manifest.json").unlink()),
        "checkpoint.json not JSON": lambda b: ((b / "checkpoint.json").write_text("{oops"), (b / "manifest.json").unlink()),
        "checkpoint.json without config": lambda b: ((b / "checkpoint.json").write_text("{}"),
                                                     (b / "manifest.json").unlink()),
        "labels.json missing": lambda b: (b / "labels.json").unlink(),
        "labels differ from the taxonomy": lambda b: ((b / "labels.json").write_text('{"ids": ["x"], "levels": [1]}'),
                                                      (b / "manifest.json").unlink()),
        "taxonomy.tax broken": lambda b: ((b / "taxonomy.tax").write_text("ROOT\n  a\n  a\n"),
                                          (b / "manifest.json").unlink()),
        "tokenizer missing": lambda b: (shutil.rmtree(b / "tokenizer"), (b / "manifest.json").unlink()),
        "decode.json not JSON": lambda b: (b / "decode.json").write_text("[1,"),
        "manifest not JSON": lambda b: (b / "manifest.json").write_text("{"),
    }
    for name, damage in damages.items():
        make, folder = damaged(name.replace(" ", "-").replace(".", ""), damage)
        guard = DAMAGE_GUARDS.get(name)
        cases.append(Case("checkpoint", f"predict: {name}", ["predict", folder, "a cat"], DAMAGE_MESSAGES[name],
                          setup=make, guard=guard))
        cases.append(Case("checkpoint", f"eval: {name}", ["eval", folder, "--quiet", "--overwrite"], DAMAGE_MESSAGES[name]))
    cases += [
        Case("checkpoint", "predict a folder without a checkpoint", ["predict", str(scratch), "cat"], "neither a run folder"),
        Case("checkpoint", "predict a file", ["predict", str(cfg), "cat"], "neither a run folder"),
        Case("checkpoint", "eval with an unknown engine", ["eval", str(run), "--engine", "tpu"], "unknown engine 'tpu'"),
        Case("checkpoint", "eval with onnx never exported", ["eval", str(run), "--engine", "onnx"], "no model.onnx"),
        Case("checkpoint", "eval an unknown decode key", ["eval", str(run), "--set", "decode.nope=1", "--tag", "x"], "unknown key decode.nope"),
        Case("checkpoint", "eval a decode value of the wrong type", ["eval", str(run), "--set", "decode.threshold=abc"],
             "decode.threshold: expected \"tune\" | float, got 'abc'"),
        Case("checkpoint", "eval a decode value out of range", ["eval", str(run), "--set", "decode.label_prior=-1"],
             "decode.label_prior: expected float >= 0"),
        Case("checkpoint", "eval a bad tag", ["eval", str(run), "--set", "decode.complete=true", "--tag", "../x"], "must be letters, digits"),
        Case("checkpoint", "eval again without --overwrite", ["eval", str(run), "--quiet"], "a record of this run exists"),
        Case("checkpoint", "export a missing folder", ["export", str(root / "gone")], "neither a run folder"),
    ]

    # ---- predict inputs -----------------------------------------------------------------------
    def write(name: str, data_: bytes) -> str:
        path = scratch / name
        path.write_bytes(data_)
        return str(path)

    inputs = root / "inputs.jsonl"
    cases += [
        Case("predict", "input file missing", ["predict", str(run), "--input", str(root / "gone.jsonl")], "No such file"),
        Case("predict", "input is a folder", ["predict", str(run), "--input", str(root)], "Is a directory"),
        Case("predict", "output is the input", ["predict", str(run), "--input", str(inputs), "--output", str(inputs)], "is the --input file",
             guard="output file"),
        Case("predict", "bad JSON line", ["predict", str(run), "--input", write("bad.jsonl", b'{"text": "a"}\n{oops\n')], ":2: invalid JSON"),
        Case("predict", "line without text", ["predict", str(run), "--input", write("nt.jsonl", b'{"t": "a"}\n')],
             "expected an object with a string 'text'"),
        Case("predict", "text not a string", ["predict", str(run), "--input", write("ns.jsonl", b'{"text": 3}\n')],
             "expected an object with a string 'text'"),
        Case("predict", "not UTF-8", ["predict", str(run), "--input", write("nu.txt", b"cat\n\xff\xfe\n")], ":2: not UTF-8"),
        Case("predict", "output folder missing", ["predict", str(run), "--input", str(inputs), "--output",
                                                  str(root / "no" / "such" / "out.jsonl")], "No such file or directory"),
        Case("predict", "output is a folder", ["predict", str(run), "--input", str(inputs), "--output", str(scratch)], "not a file to write to"),
        Case("predict", "unknown engine", ["predict", str(run), "cat", "--engine", "gpu"], "unknown engine 'gpu'"),
    ]

    # ---- records and reports ----------------------------------------------------------------
    cases += [
        Case("records", "results with a broken record", ["results", "--records", str(scratch / "recs"), "--out",
                                                         str(scratch / "R.md")], "not a readable record",
             setup=lambda: ((scratch / "recs").mkdir(exist_ok=True), (scratch / "recs" / "x.json").write_text("{"))),
        Case("records", "results with a foreign JSON", ["results", "--records", str(scratch / "recs2"), "--out",
                                                        str(scratch / "R2.md")], "not a run record",
             setup=lambda: ((scratch / "recs2").mkdir(exist_ok=True), (scratch / "recs2" / "x.json").write_text("[]"))),
        Case("records", "compare a folder that is no run", ["compare", str(scratch)], "no metrics.json"),
        Case("records", "report of an unevaluated folder", ["report", str(scratch)], "no metrics.json"),
        Case("records", "metrics of missing files", ["metrics", str(root / "g.jsonl"), str(root / "p.jsonl"),
                                                     "--taxonomy", tax], "file not found"),
    ]
    for i, case in enumerate(cases):
        if case.argv[:3] == train and "--out" not in case.argv:
            case.argv += ["--out", str(scratch / f"run-{i}")]
    return cases




# ---- the surfaces added since the first matrix ----------------------------------------------------
def _folder(scratch: Path, name: str) -> Path:
    """A case's own folder, so what lies around its target is its own and hashed with it."""
    folder = scratch / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _put(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def serve_cases(run: Path, scratch: Path) -> list[Case]:
    """``hmtc serve``'s own options, checked before anything listens (uvicorn.run is stubbed out
    in the drill, so a refused option that slipped through shows as silently accepted)."""
    serve = ["serve", str(run)]
    bad = {
        "port above 65535": (["--port", "70000"], "port must be", "server"),
        "port -1": (["--port", "-1"], "port must be", "server"),
        "port 0": (["--port", "0"], "port must be", None),
        "port not a number": (["--port", "http"], "Invalid value for '--port'", None),
        "threads -2": (["--threads", "-2"], "threads must be", "server"),
        "log level unknown": (["--log-level", "loud"], "log level must be one of", None),
        "host empty": (["--host", ""], "host must name an address", None),
        "max-wait-ms inf": (["--max-wait-ms", "inf"], "max_wait_ms must be between", "limits"),
        "max-wait-ms nan": (["--max-wait-ms", "nan"], "Invalid value for '--max-wait-ms'", None),
        "max-wait-ms above 10 s": (["--max-wait-ms", "1e9"], "max_wait_ms must be between", None),
        "max-wait-ms negative": (["--max-wait-ms", "-1"], "Invalid value for '--max-wait-ms'", None),
        "max-batch 0": (["--max-batch", "0"], "Invalid value for '--max-batch'", None),
        "max-texts 0": (["--max-texts", "0"], "Invalid value for '--max-texts'", None),
        "max-chars 0": (["--max-chars", "0"], "Invalid value for '--max-chars'", None),
        "max-queue below max-texts": (["--max-queue", "10", "--max-texts", "20"], "max_queue (10) must be at least",
                                      "limits"),
        "unknown engine": (["--engine", "tpu"], "unknown engine 'tpu'", None),
        "onnx never exported": (["--engine", "onnx"], "no model.onnx", None),
    }
    cases = [Case("serve", name, serve + flags, expect, guard=guard) for name, (flags, expect, guard) in bad.items()]
    return cases + [
        Case("serve", "run folder missing", ["serve", str(scratch / "gone")], "neither a run folder"),
        Case("serve", "run is a file", ["serve", str(run / "metrics.json")], "neither a run folder"),
        Case("serve", "control: the defaults", serve, ACCEPT),
        Case("serve", "control: edge values", serve + ["--port", "65535", "--threads", "1", "--max-wait-ms", "0",
                                                        "--max-queue", "256", "--host", "0.0.0.0"], ACCEPT),
    ]


class Server:
    """The served run on 127.0.0.1 in a thread, for the HTTP cases (as tests/test_serve.py does)."""

    def __init__(self, run: Path):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app(load_served(run, threads=1), Limits(max_texts=4, max_chars=50, max_queue=8))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise SystemExit("the drill's server did not start")
            time.sleep(0.02)

    def post(self, body: bytes) -> None:
        """A 4xx is the case's error line, a 5xx a traceback, a 2xx acceptance."""
        req = urllib.request.Request(self.url + "/predict", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            if e.code >= 500:
                raise RuntimeError(f"HTTP {e.code}: {text}") from None
            raise HmtcError(f"HTTP {e.code}: {text}") from None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def http_cases(server: Server) -> list[Case]:
    """POST /predict bodies: each bad one a 4xx that says what is wrong, never a 500."""
    bodies = {
        "NaN literal": (b'{"texts": ["a"], "top_k": NaN}', "top_k"),
        "Infinity literal": (b'{"texts": ["a"], "top_k": Infinity}', "top_k"),
        "-Infinity literal": (b'{"texts": ["a"], "top_k": -Infinity}', "top_k"),
        "top_k negative": (b'{"texts": ["a"], "top_k": -1}', "greater than or equal to 0"),
        "top_k a word": (b'{"texts": ["a"], "top_k": "many"}', "top_k"),
        "texts a string": (b'{"texts": "a"}', "texts"),
        "a text not a string": (b'{"texts": [1]}', "texts"),
        "both keys": (b'{"texts": ["a"], "inputs": "b"}', "not both"),
        "neither key": (b'{}', "not both or neither"),
        "an unknown key": (b'{"texts": ["a"], "colour": 1}', "colour"),
        "not JSON": (b'{"texts": [', "json"),
        "a list body": (b'["a"]', "model_attributes_type"),
        "too many texts": (json.dumps({"texts": ["a"] * 5}).encode(), "HTTP 413"),
        "a text too long": (json.dumps({"texts": ["a" * 60]}).encode(), "HTTP 422"),
        "nested deep": (b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "HTTP 4"),
        "not UTF-8": (b'{"texts": ["\xff\xfe"]}', "HTTP 4"),
    }
    cases = [Case("serve", f"POST /predict: {name}", ["POST /predict", body[:60].decode("utf-8", "replace")],
                  expect, call=lambda body=body: server.post(body)) for name, (body, expect) in bodies.items()]
    return cases + [
        Case("serve", "POST /predict control: texts", ["POST /predict"], ACCEPT,
             call=lambda: server.post(b'{"texts": ["meow cat", ""], "top_k": 2, "all_scores": true}')),
        Case("serve", "POST /predict control: inputs", ["POST /predict"], ACCEPT,
             call=lambda: server.post(b'{"inputs": "oak"}')),
    ]


def estimator_cases(root: Path, run: Path, scratch: Path) -> list[Case]:
    """HierarchicalClassifier: parameters, labels and saving, each refused in one HmtcError."""
    folder = _folder(scratch, "estimator")
    texts = [r["text"] for r in testing.make_texts(40, 3)]
    paths = [r["labels"][0].replace("-", "/") for r in testing.make_texts(40, 3)]

    def clf(**kw):
        return HierarchicalClassifier("msml", str(root / "encoder"), **{"epochs": 1, "batch_size": 8, "max_length": 32,
                                                                       "output_dir": str(folder / "runs"), **kw})

    def fitted():
        if "fitted" not in _FITTED:
            _FITTED["fitted"] = clf().fit(texts, paths)
        return _FITTED["fitted"]

    def with_label(label, i=0):
        return [label if j == i else p for j, p in enumerate(paths)]

    def saved_over(target: Path):
        def go():
            target.mkdir(parents=True, exist_ok=True)
            (target / "notes.txt").write_text("a user's file", encoding="utf-8")
            fitted().save(target)
        return go

    other_run = folder / "other-run"
    bad = {
        "set_params of an unknown parameter": (lambda: clf().set_params(bogus=1), "unknown parameter 'bogus'"),
        "epochs 0": (lambda: clf().set_params(epochs=0).fit(texts, paths), "train.epochs: expected"),
        "epochs -1": (lambda: clf(epochs=-1).fit(texts, paths), "train.epochs: expected"),
        "lr nan": (lambda: clf(lr=float("nan")).fit(texts, paths), "train.lr: expected"),
        "batch_size a string": (lambda: clf(batch_size="8").fit(texts, paths), "train.batch_size: expected"),
        "an empty path segment": (lambda: clf().fit(texts, with_label("animal//cat")), "'animal//cat' has an empty"),
        "a trailing space in a label": (lambda: clf().fit(texts, with_label("animal/cat ")), "'animal/cat ' has a"),
        "a leading separator": (lambda: clf().fit(texts, with_label("/animal/cat")), "'/animal/cat' has an empty"),
        "an empty label": (lambda: clf().fit(texts, with_label("")), "empty"),
        "fewer labels than texts": (lambda: clf().fit(texts, paths[:-1]), "39 label entries for 40 texts"),
        "a text not a string": (lambda: clf().fit([3] + texts[1:], paths), "text"),
        "an empty text": (lambda: clf().fit([""] + texts[1:], paths), "texts[0] is empty"),
        "no texts": (lambda: clf().fit([], []), "cannot carve a dev set from 0"),
        "label_sep empty": (lambda: clf(label_sep="").fit(texts, paths), "label_sep must be a non-empty string"),
        "predict before fit": (lambda: clf().predict(["a cat"]), "fit"),
        "load a missing folder": (lambda: HierarchicalClassifier.load(folder / "gone"), "neither a run folder"),
        "save into a folder with a user's file": (saved_over(folder / "user-folder"), "is not empty"),
        "save onto another run's folder": (lambda: (shutil.copytree(run, other_run, symlinks=True, dirs_exist_ok=True),
                                                    fitted().save(other_run)), "is not empty"),
        "save onto a file": (lambda: fitted().save(Path(_put(folder, "a-file", "x"))), "is a file or a link"),
    }
    guards = {"save into a folder with a user's file": "estimator save", "a trailing space in a label": "label spaces",
              "set_params of an unknown parameter": "estimator params"}
    cases = [Case("estimator", name, ["HierarchicalClassifier", name], expect, call=call, around=(folder / "x",),
                  guard=guards.get(name))
             for name, (call, expect) in bad.items()]
    return cases + [
        Case("estimator", "control: fit, predict, save into a new folder", ["HierarchicalClassifier"], ACCEPT,
             call=lambda: fitted().save(folder / "new-save"), around=(folder / "x",)),
        Case("estimator", "control: save again over its own earlier save", ["HierarchicalClassifier"], ACCEPT,
             call=lambda: fitted().save(folder / "new-save"), around=(folder / "x",), writes=(folder / "new-save",)),
    ]


_FITTED: dict = {}


def seeds_resume_cases(cfg: Path, scratch: Path) -> list[Case]:
    """--seeds, --resume of a run stopped after one of two epochs, --stop-after."""
    train = ["train", str(cfg), "--quiet"]
    stopped = scratch / "stopped"
    two = ["--set", "train.epochs=2"]

    def stop_once():
        if not (stopped / "last").exists():
            with contextlib.redirect_stderr(io.StringIO()):
                _execute(Case("setup", "a run stopped after one epoch", train + two + ["--stop-after", "1",
                                                                                         "--no-eval", "--out",
                                                                                         str(stopped)], ACCEPT))
    seeds = {"''": ("", "names no seed"), "-1,2": ("-1,2", "seeds must be whole numbers from 0"),
             "2**32": ("4294967296", "seeds must be whole numbers from 0"), "1,,2": ("1,,2", "seeds must be integers"),
             "a space": (" ", "seeds must be integers"), "1.5": ("1.5", "seeds must be integers"),
             "3,3,3": ("3,3,3", "seeds repeat")}
    cases = [Case("seeds", f"--seeds {name}", train + [f"--seeds={value}", "--out", str(scratch / "seeds-bad")], expect)
             for name, (value, expect) in seeds.items()]
    cases += [Case("seeds", "train.seeds repeated in the config", train + ["--set", "train.seeds=[4,4]"],
                   "train.seeds: expected"),
              Case("seeds", "train.seeds negative in the config", train + ["--set", "train.seeds=[-4]"],
                   "seeds must be whole numbers from 0")]
    changes = {"another lr": ["--set", "train.lr=0.5"], "fewer epochs than done": ["--set", "train.epochs=1"],
               "another dataset split": ["--set", "data.dev_fraction=0.3"],
               "other model options": ["--set", "model.options.filters=8"],
               "another model": ["--set", "model.name='flat'"], "another seed": ["--set", "train.seed=7"]}
    for name, flags in changes.items():
        cases.append(Case("resume", f"--resume with {name}", train + two + flags + ["--resume", "--no-eval", "--out",
                                                                                   str(stopped)],
                          "--resume with another config than the run's", setup=stop_once))
    cases += [
        Case("resume", "--resume of a folder that is a file", train + ["--resume", "--out", str(cfg)], "File exists"),
        Case("resume", "--stop-after 0", train + ["--stop-after", "0", "--out", str(scratch / "s0")],
             "stop after 0 epochs"),
        Case("resume", "--stop-after -1", train + ["--stop-after", "-1", "--out", str(scratch / "s1")],
             "stop after -1 epochs"),
        Case("resume", "--stop-after a word", train + ["--stop-after", "x"], "Invalid value for '--stop-after'"),
        Case("resume", "control: --resume with the run's own config", train + two + ["--resume", "--no-eval",
                                                                                     "--stop-after", "1", "--out",
                                                                                     str(stopped)], ACCEPT,
             setup=stop_once, writes=(stopped,)),
        Case("seeds", "control: --seeds 7 --no-eval", train + ["--seeds", "7", "--no-eval", "--out",
                                                               str(scratch / "seeds-ok")], ACCEPT),
    ]
    return cases


def predict_stream_cases(run: Path, root: Path, scratch: Path) -> list[Case]:
    """predict's stdin, --input and --output: bytes, marks, links, nodes, chunks."""
    folder = _folder(scratch, "predict-streams")
    predict = ["predict", str(run)]
    out = folder / "out.jsonl"
    (folder / "target.txt").write_text("a user's file\n", encoding="utf-8")
    link = folder / "link.jsonl"
    link.symlink_to(folder / "target.txt")
    dangling = folder / "dangling.jsonl"
    dangling.symlink_to(folder / "nowhere.txt")
    inputs = root / "inputs.jsonl"
    in_link = folder / "inputs-link.jsonl"
    in_link.symlink_to(inputs)
    node = folder / "device"
    try:                                # a character device (the null device's numbers) inside the drill
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        os.mkfifo(node)                 # without the right to make one, a FIFO: neither is a file
    cases = [
        Case("predict", "stdin not UTF-8", predict, ":1: not UTF-8", stdin=b"\xff\xfe cat\n"),
        Case("predict", "stdin not UTF-8 on line 3", predict, "<stdin>:3: not UTF-8", stdin=b"cat\ndog\n\xc3\n"),
        Case("predict", "--input not UTF-8 in a .jsonl", predict + ["--input", _put(folder, "bad.jsonl",
                                                                                   b'{"text": "\xff"}\n')],
             "bad.jsonl:1: not UTF-8"),
        Case("predict", "--input a JSON line nested deep", predict + ["--input", _put(
            folder, "deep.jsonl", b'{"text": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")],
            "nested too deeply"),
        Case("predict", "--input a JSON list line", predict + ["--input", _put(folder, "list.jsonl", '["cat"]\n')],
             "expected an object with a string 'text'"),
        Case("predict", "--input --text-key absent", predict + ["--input", str(inputs), "--text-key", "body"],
             "expected an object with a string 'body'"),
        Case("predict", "--output a link to a user's file", predict + ["cat", "--output", str(link)],
             "not a file to write to", guard="output file"),
        Case("predict", "--output a dangling link", predict + ["cat", "--output", str(dangling)],
             "not a file to write to"),
        Case("predict", "--output a device node", predict + ["cat", "--output", str(node)], "not a file to write to",
             guard="output file"),
        Case("predict", "--output the input through a link", predict + ["--input", str(in_link), "--output",
                                                                        str(inputs)], "is the --input file"),
        Case("predict", "--chunk 0", predict + ["cat", "--chunk", "0"], "chunk must be a whole number"),
        Case("predict", "--chunk -5", predict + ["cat", "--chunk", "-5"], "chunk must be a whole number"),
        Case("predict", "--chunk a word", predict + ["cat", "--chunk", "x"], "Invalid value for '--chunk'"),
        Case("predict", "--top-k -1", predict + ["cat", "--top-k", "-1"], "Invalid value for '--top-k'"),
        Case("predict", "--input an empty path", predict + ["--input", ""], "Is a directory"),
        Case("predict", "control: stdin with a BOM and CRLF", predict, ACCEPT, stdin=b"\xef\xbb\xbfmeow cat\r\noak\r\n"),
        Case("predict", "control: --input with a BOM", predict + ["--input", _put(folder, "bom.txt",
                                                                                 b"\xef\xbb\xbfmeow cat\n\noak\n")],
             ACCEPT),
        Case("predict", "control: --input an empty file", predict + ["--input", _put(folder, "empty.txt", b"")], ACCEPT),
        Case("predict", "control: --output a new file, --chunk 1", predict + ["--input", str(inputs), "--output",
                                                                               str(out), "--chunk", "1", "--quiet"],
             ACCEPT),
        Case("predict", "control: --output over its own earlier output", predict + ["cat", "--output", str(out)],
             ACCEPT, writes=(out,)),
    ]
    return cases


def migrate_cases(run: Path, root: Path, scratch: Path) -> list[Case]:
    """hmtc migrate: the edited taxonomy, --map and -o."""
    folder = _folder(scratch, "migrate")
    tax = root / "data" / "tiny.tax"
    renamed = _put(folder, "renamed.tax", tax.read_text(encoding="utf-8").replace("animal-cat", "animal-kitten"))
    taken = folder / "taken"
    taken.mkdir(exist_ok=True)
    (taken / "notes.txt").write_text("a user's file", encoding="utf-8")

    def mig(taxonomy, *extra, out=None):
        return ["migrate", str(run), str(taxonomy), "-o", str(out or folder / "new"), *extra]
    return [
        Case("migrate", "taxonomy missing", mig(folder / "gone.tax"), "gone.tax: file not found"),
        Case("migrate", "taxonomy with a cycle", mig(_put(folder, "cycle.tax", "ROOT\n  a\n    b\n      &a\n")),
             "cycle: a -> b -> a"),
        Case("migrate", "taxonomy not UTF-8", mig(_put(folder, "nu.tax", b"ROOT\n  \xff\n")), "not UTF-8"),
        Case("migrate", "taxonomy a folder", mig(folder), "Is a directory"),
        Case("migrate", "--map without =", mig(renamed, "--map", "animal-cat"), "write OLD=NEW"),
        Case("migrate", "--map of an unknown old node", mig(renamed, "--map", "nope=animal-kitten"),
             "'nope' is not a node of the run's taxonomy"),
        Case("migrate", "--map onto an unknown new node", mig(renamed, "--map", "animal-cat=nope"),
             "'nope' is not a node of the new taxonomy"),
        Case("migrate", "--map of a node still there", mig(tax, "--map", "animal-cat=animal-dog"), "is still in the new"),
        Case("migrate", "--map names a node twice", mig(renamed, "--map", "animal-cat=animal-kitten", "--map",
                                                        "animal-cat=animal-dog"), "names 'animal-cat' twice"),
        Case("migrate", "-o a folder with a user's file", mig(renamed, out=taken), "exists", guard="migrate out"),
        Case("migrate", "-o the run itself", mig(renamed, out=run), "exists", guard="migrate out"),
        Case("migrate", "-o a file", mig(renamed, out=Path(_put(folder, "file.txt", "x"))), "exists"),
        Case("migrate", "run missing", ["migrate", str(folder / "gone"), renamed, "-o", str(folder / "n2")],
             "neither a run folder"),
        Case("migrate", "control: a rename with --map", mig(renamed, "--map", "animal-cat=animal-kitten",
                                                           out=folder / "ok-rename"), ACCEPT),
        Case("migrate", "control: the same taxonomy", mig(tax, out=folder / "ok-same"), ACCEPT),
    ]


def suggest_cases(run: Path, root: Path, scratch: Path) -> list[Case]:
    """hmtc suggest: -k, the strategy, the format, the pool and where the queue goes."""
    folder = _folder(scratch, "suggest")
    pool = Path(_put(folder, "pool.jsonl", "".join(json.dumps({"id": i, "text": r["text"]}) + "\n"
                                                   for i, r in enumerate(testing.make_texts(12, 5)))))

    def sug(*extra, k="3", out=None, pool_=pool):
        return ["suggest", str(run), str(pool_), "-k", k, "-o", str(out or folder / "queue.jsonl"), *extra]
    return [
        Case("suggest", "-k 0", sug(k="0"), "-k must be a whole number"),
        Case("suggest", "-k -1", sug(k="-1"), "-k must be a whole number"),
        Case("suggest", "-k a word", sug(k="many"), "Invalid value for '-k'"),
        Case("suggest", "unknown strategy", sug("--strategy", "smart"), "unknown strategy 'smart'"),
        Case("suggest", "unknown format", sug("--format", "xml"), "--format 'xml'"),
        Case("suggest", "-o the pool", sug(out=pool), "--output is the pool file", guard="output file"),
        Case("suggest", "--label-config the pool", sug("--label-config", str(pool)), "--label-config is the pool"),
        Case("suggest", "-o a folder", sug(out=folder), "not a file to write to"),
        Case("suggest", "pool missing", sug(pool_=folder / "gone.jsonl"), "No such file"),
        Case("suggest", "pool not UTF-8", sug(pool_=Path(_put(folder, "nu.txt", b"cat\n\xff\n"))), ":2: not UTF-8"),
        Case("suggest", "pool of blank lines", sug(pool_=Path(_put(folder, "blank.txt", "\n \n"))),
             "holds no text to label"),
        Case("suggest", "pool with a bad JSON line", sug(pool_=Path(_put(folder, "bad.jsonl", '{"text": "a"}\n{x\n'))),
             ":2: invalid JSON"),
        Case("suggest", "control: -k beyond the pool", sug(k="50", out=folder / "all.jsonl"), ACCEPT),
        Case("suggest", "control: label-studio with a config", sug("--format", "label-studio", "--label-config",
                                                                   str(folder / "ls.xml"), out=folder / "q.json"),
             ACCEPT),
        Case("suggest", "control: random", sug("--strategy", "random", "--seed", "3", out=folder / "r.jsonl"),
             ACCEPT),
    ]


def label_studio_cases(root: Path, scratch: Path) -> list[Case]:
    """Datasets in Label Studio's export format (format = "label-studio"), read by hmtc data stats."""
    folder = _folder(scratch, "label-studio")
    (folder / "tiny.tax").write_text(testing.TAXONOMY, encoding="utf-8")

    def task(text="meow cat", labels=("animal-cat",), **extra):
        result = [{"type": "taxonomy", "value": {"taxonomy": [[lab] for lab in labels]}}]
        return {"data": {"text": text}, "annotations": [{"result": result}], **extra}

    def card(name: str, export: str | bytes) -> str:
        _put(folder, f"{name}.json", export)
        return _put(folder, f"{name}.toml", f'name = "{name}"\nformat = "label-studio"\ntaxonomy = "tiny.tax"\n'
                                             f'[splits]\ntrain = "{name}.json"\n')
    good = [task(), task("oak tree", ("plant-tree",))]
    bad = {
        "not a list": (json.dumps(good[0]), "a JSON list of tasks"),
        "a list never closed": (json.dumps(good)[:-1], "never ends"),
        "a bad task on line 3": ("[\n" + json.dumps(good[0]) + ",\n{oops}\n]", ":3: bad JSON"),
        "a task not an object": (json.dumps([good[0], 3]), "a task must be an object"),
        "a task without data": (json.dumps([{"annotations": []}]), "a task must be an object with a data object"),
        "data without the text": (json.dumps([{"data": {"body": "x"}, "annotations": []}]), "no string 'text'"),
        "a task without annotations": (json.dumps([{"data": {"text": "cat"}}]), "has no annotation"),
        "a result value not an object": (json.dumps([{"data": {"text": "cat"}, "annotations": [{"result": [
            {"type": "taxonomy", "value": 3}]}]}]), "a result must be an object with a value object"),
        "taxonomy paths not lists": (json.dumps([{"data": {"text": "cat"}, "annotations": [{"result": [
            {"type": "taxonomy", "value": {"taxonomy": ["animal-cat"]}}]}]}]), "list of paths of strings"),
        "an unknown label": (json.dumps([task(labels=("animal-horse",))]), "'animal-horse' is not a taxonomy node"),
        "an empty text": (json.dumps([task(text="")]), "empty text"),
        "nested deep": (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", "nested too deeply"),
        "not UTF-8": (b'[{"data": {"text": "\xff"}}]', "not UTF-8"),
    }
    cases = [Case("label-studio", name, ["data", "stats", card(re.sub(r"\W+", "-", name), export)], expect)
             for name, (export, expect) in bad.items()]
    cases.append(Case("label-studio", "control: a valid export with a BOM and a cancelled annotation",
                      ["data", "stats", card("ok", b"\xef\xbb\xbf" + json.dumps(
                          good + [task("dog bark", ("animal-dog",), annotations=[
                              task(labels=("animal-dog",))["annotations"][0],
                              {"was_cancelled": True, "result": []}])]).encode())], ACCEPT))
    return cases


def config_value_cases(cfg: Path, root: Path, scratch: Path) -> list[Case]:
    """Few-shot protocols, windows, run names and base chains: values the schema or the config
    loader must refuse, and valid ones it must not."""
    train = ["train", str(cfg), "--quiet"]
    fewshot = {
        "data.shots -1": ("data.shots=-1", "data.shots: expected"), "data.shots 1.5": ("data.shots=1.5",
                                                                                      "data.shots: expected"),
        "data.shots 'ALL'": ("data.shots='ALL'", "data.shots: expected"),
        "data.shots true": ("data.shots=true", "data.shots: expected"),
        "data.dev_shots -3": ("data.dev_shots=-3", "data.dev_shots: expected"),
        "data.dev_shots 'some'": ("data.dev_shots='some'", "data.dev_shots: expected"),
        "data.train_fraction 0": ("data.train_fraction=0.0", "data.train_fraction: expected"),
        "data.train_fraction 1.5": ("data.train_fraction=1.5", "data.train_fraction: expected"),
        "data.train_fraction inf": ("data.train_fraction=inf", "data.train_fraction: expected"),
        "data.train_fraction -0.1": ("data.train_fraction=-0.1", "data.train_fraction: expected"),
        "model.window_length 2": ("model.window_length=2", "model.window_length: expected"),
        "model.window_length -1": ("model.window_length=-1", "model.window_length: expected"),
        "model.window_stride -1": ("model.window_stride=-1", "model.window_stride: expected"),
        "train.device 'tpu'": ("train.device='tpu'", "train.device: expected"),
        "train.device 'cuda:x'": ("train.device='cuda:x'", "cuda"),
    }
    cases = [Case("config", name, train + ["--set", flag], expect, guard="schema" if "shots -1" in name else None)
             for name, (flag, expect) in fewshot.items()]
    cases += [
        Case("windows", "a stride above half a window", train + ["--set", "model.windows=true", "--set",
                                                                 "model.window_length=16", "--set",
                                                                 "model.window_stride=10"],
             "exceeds half a window"),
        Case("windows", "window_length without windows", train + ["--set", "model.window_length=16"],
             "apply only with model.windows = true"),
        Case("windows", "a window beyond the encoder's positions", train + ["--set", "model.windows=true", "--set",
                                                                            "model.window_length=100"], "positions"),
        Case("config", "run name '.'", train + ["--set", "name='.'"], "run name '.'", guard="run name"),
        Case("config", "run name ''", train + ["--set", "name=''"], "run name ''"),
        Case("config", "run name 'a/../..'", train + ["--set", "name='a/../..'"], "run name"),
        Case("config", "train.device cuda on a machine without one", train + ["--set", "train.device='cuda'"],
             "no CUDA device") if not torch.cuda.is_available() else None,
        Case("config", "an encoder folder without weights that fit", train + ["--set", "model.encoder='{}'".format(
            _foreign_encoder(root, scratch))], "lacks", guard="encoder weights"),
        Case("config", "control: a few-shot draw", train + ["--set", "data.shots=2", "--set", "data.dev_shots=1",
                                                            "--no-eval", "--out", str(scratch / "ok-shots")], ACCEPT),
        Case("config", "control: a training fraction", train + ["--set", "data.train_fraction=0.5", "--no-eval",
                                                                "--out", str(scratch / "ok-fraction")], ACCEPT),
        Case("windows", "control: windows", train + ["--set", "model.windows=true", "--set", "model.window_length=16",
                                                     "--set", "model.window_stride=4", "--set", "data.max_length=48",
                                                     "--no-eval", "--out", str(scratch / "ok-windows")], ACCEPT),
    ]
    return [c for c in cases if c is not None] + base_chain_cases(cfg, scratch)


def _foreign_encoder(root: Path, scratch: Path) -> Path:
    """An encoder folder whose weights file holds another model's tensors (transformers would
    start every weight of this one from random values)."""
    folder = _folder(scratch, "foreign-encoder")
    for f in (root / "encoder").iterdir():
        if f.suffix == ".json" or f.name == "vocab.txt":
            shutil.copy(f, folder / f.name)
    safetensors.torch.save_file({"other.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


def base_chain_cases(cfg: Path, scratch: Path) -> list[Case]:
    """``base =`` chains: too long, empty, of the wrong type, a folder, not UTF-8, and a valid one."""
    folder = _folder(scratch, "base-chains")

    def chain(name: str, n: int) -> str:
        for i in range(n):
            nxt = f'base = "{name}-{i + 1}.toml"\n' if i + 1 < n else f'base = "{cfg}"\n'
            _put(folder, f"{name}-{i}.toml", nxt)
        return str(folder / f"{name}-0.toml")
    return [
        Case("config", "a chain of 1,200 base files", ["train", chain("long", 1200), "--quiet"], "base chain deeper"),
        Case("config", "a chain of 33 base files", ["train", chain("edge", 33), "--quiet"], "base chain deeper"),
        Case("config", "base empty", ["train", _put(folder, "empty-base.toml", 'base = ""\n')], "base must be"),
        Case("config", "base a number", ["train", _put(folder, "num-base.toml", "base = 3\n")], "base must be"),
        Case("config", "base a folder", ["train", _put(folder, "dir-base.toml", f'base = "{folder}"\n')], "a folder"),
        Case("config", "base not UTF-8", ["train", _put(folder, "nu-base.toml", 'base = "nu.toml"\n')], "not UTF-8",
             setup=lambda: _put(folder, "nu.toml", b"name = '\xff'\n")),
        Case("config", "control: a chain of 5 base files", ["train", chain("ok", 5), "--quiet", "--no-eval",
                                                            "--out", str(scratch / "ok-chain")], ACCEPT),
    ]


def ensemble_cases(run: Path, root: Path, scratch: Path) -> list[Case]:
    """hmtc ensemble: weights, members and where it goes."""
    folder = _folder(scratch, "ensemble")
    other = scratch / "migrate" / "ok-rename"     # a run over another taxonomy (the migrate control's)

    def ens(*extra, out=None, members=(run, run)):
        return ["ensemble", *map(str, members), "-o", str(out or folder / "ens"), *extra]
    weights = {"nan,1": "finite numbers", "inf,1": "finite numbers", "-1,1": "finite numbers", "0,0": "not all 0",
               "a,b": "comma-separated numbers", "1": "1 weight(s) for 2 members", "1,2,3": "3 weight(s) for 2"}
    cases = [Case("ensemble", f"--weights {w}", ens("--weights", w), expect) for w, expect in weights.items()]
    return cases + [
        Case("ensemble", "one member", ens(members=(run,)), "at least 2 members"),
        Case("ensemble", "-o a member", ens(out=run), "-o is one of the members"),
        Case("ensemble", "-o another trained run", ens(out=other, members=(run, run / "best")),
             "holds a trained run"),
        Case("ensemble", "members over different taxonomies", ens(members=(run, other)), "label index differs"),
        Case("ensemble", "a member missing", ens(members=(run, folder / "gone")), "neither a run folder"),
        Case("ensemble", "control: two members", ens(out=folder / "ok"), ACCEPT),
    ]


def exclusive_cases(root: Path, cfg: Path, scratch: Path) -> list[Case]:
    """``!exclusive`` marks: misspelt, misplaced, on a leaf, and training data that breaks one."""
    folder = _folder(scratch, "exclusive")
    bad = {
        "!Exclusive": ("ROOT\n  a !Exclusive\n    b\n    c\n", "0.tax:2: unknown mark '!Exclusive'"),
        "a mark without a space": ("ROOT\n  animal!exclusive\n    b\n    c\n", "1.tax:2: misplaced !exclusive"),
        "a mark on a line of its own": ("ROOT\n  a\n    !exclusive\n    c\n", "2.tax:3: misplaced !exclusive"),
        "an unknown mark": ("ROOT\n  a !only\n    b\n", "3.tax:2: unknown mark '!only'"),
        "a mark on a leaf": ("ROOT\n  a\n    b !exclusive\n", "4.tax:3: !exclusive on a leaf"),
        "a tab in an id": ("ROOT\n  a\tb\n", "5.tax:2: a tab or control character in id"),
    }
    cases = [Case("exclusive", f"validate: {name}", ["taxonomy", "validate", _put(folder, f"{i}.tax", text)], expect,
                  guard=None if "leaf" in name else "taxonomy line")
             for i, (name, (text, expect)) in enumerate(bad.items())]
    data = _folder(scratch, "exclusive-data")
    shutil.copytree(root / "data", data, dirs_exist_ok=True)
    (data / "tiny.tax").write_text(testing.TAXONOMY.replace("  animal\n", "  animal !exclusive\n"), encoding="utf-8")
    both = '{"text": "cat dog", "labels": ["animal-cat", "animal-dog"]}\n'
    (data / "train.jsonl").write_text((root / "data" / "train.jsonl").read_text(encoding="utf-8") + both,
                                      encoding="utf-8")
    cases += [
        Case("exclusive", "training data with two children of an exclusive group",
             ["train", str(cfg), "--quiet", "--set", f"data.dataset='{data / 'tiny.toml'}'"],
             "two children of 'animal', which the taxonomy marks !exclusive", guard="exclusive data"),
        Case("exclusive", "control: validate a marked taxonomy", ["taxonomy", "validate", _put(
            folder, "ok.tax", testing.LABEL_CLASS_TAXONOMY)], ACCEPT),
    ]
    return cases


def deep_cases(run: Path, root: Path, scratch: Path) -> list[Case]:
    """Inputs that nest deep: JSON files of a checkpoint, records and taxonomies."""
    folder = _folder(scratch, "deep")
    deep = b"[" * 200_000 + b"]" * 200_000

    def ckpt(name: str, file: str, drop_manifest: bool = True) -> str:
        target = folder / name

        def make():
            shutil.copytree(run / "best", target, dirs_exist_ok=True)
            (target / file).write_bytes(deep if file != "manifest.json" else b'{"sha256": ' + deep + b"}")
            if drop_manifest:
                (target / "manifest.json").unlink(missing_ok=True)
        return make, str(target)
    cases = []
    for file, drop, expect in (("checkpoint.json", True, "nested too deeply"), ("labels.json", True, "nested too deeply"),
                               ("decode.json", False, "nested too deeply"), ("manifest.json", False,
                                                                             "not a readable manifest")):
        make, target = ckpt(file.replace(".", "-"), file, drop)
        cases.append(Case("deep", f"predict: {file} nested 200,000 deep", ["predict", target, "cat"], expect, setup=make))
    recs = _folder(scratch, "deep-records")
    (recs / "x.json").write_bytes(deep)
    chain = "ROOT\n" + "".join("  " * (i + 1) + f"n{i}\n" for i in range(3000))
    cases += [
        Case("deep", "results: a record nested deep", ["results", "--records", str(recs), "--out",
                                                       str(folder / "R.md")], "x.json: not a run record: nested over",
             guard="record depth"),
        Case("deep", "taxonomy: a line indented 400,000 deep", ["taxonomy", "validate", _put(
            folder, "indent.tax", "ROOT\n" + " " * 400_000 + "a\n")], "indent"),
        Case("deep", "control: a 3,000-level taxonomy chain", ["taxonomy", "validate", _put(folder, "chain.tax", chain)],
             ACCEPT),
        Case("deep", "control: show the chain", ["taxonomy", "show", str(folder / "chain.tax")], ACCEPT),
    ]
    return cases


def decode_cases(run: Path, scratch: Path) -> list[Case]:
    """best/decode.json lies outside the manifest (eval rewrites it): every damage one line."""
    folder = _folder(scratch, "decode")
    values = {"method a list": ("method", [1]), "method a table": ("method", {"a": 1}),
              "method unknown": ("method", "nope"), "threshold a word": ("threshold", "x"),
              "threshold inf": ("threshold", "Infinity"), "per-label thresholds too few": ("per_label_thresholds", [1.0]),
              "temperatures zero": ("temperatures", [0.0, 0.0]), "single_path a word": ("single_path", "yes"),
              "complete a number": ("complete", 1)}
    cases = []
    for name, (key, value) in values.items():
        target = folder / re.sub(r"\W+", "-", name)

        def make(target=target, key=key, value=value):
            shutil.copytree(run / "best", target, dirs_exist_ok=True)
            dec = json.loads((target / "decode.json").read_text(encoding="utf-8"))
            (target / "decode.json").write_text(json.dumps({**dec, key: value}).replace('"Infinity"', "Infinity"),
                                                encoding="utf-8")
        expect = "method must be one of" if key == "method" else f"{key} must be"
        cases.append(Case("decode", f"predict: decode.json {name}", ["predict", str(target), "cat"], expect,
                          setup=make, guard="decode" if name in ("method a list", "threshold a word") else None))
    folder_dec = folder / "a-folder"

    def make_folder():
        shutil.copytree(run / "best", folder_dec, dirs_exist_ok=True)
        (folder_dec / "decode.json").unlink()
        (folder_dec / "decode.json").mkdir()
    return cases + [
        Case("decode", "predict: decode.json a folder", ["predict", str(folder_dec), "cat"], "Is a directory",
             setup=make_folder),
        Case("decode", "control: no decode.json (defaults)", ["predict", str(folder / "none"), "cat"], ACCEPT,
             setup=lambda: (shutil.copytree(run / "best", folder / "none", dirs_exist_ok=True),
                            (folder / "none" / "decode.json").unlink())),
    ]


def new_cases(root: Path, cfg: Path, data: Path, run: Path, scratch: Path, server: Server) -> list[Case]:
    """The cases of issue 35: serve, the estimator, seeds and resume, predict streams, migrate,
    suggest, Label Studio, few-shot, windows, ensembles, exclusive marks, deep inputs, decode.json."""
    cases = (serve_cases(run, scratch) + http_cases(server) + estimator_cases(root, run, scratch)
             + seeds_resume_cases(cfg, scratch) + predict_stream_cases(run, root, scratch)
             + migrate_cases(run, root, scratch) + suggest_cases(run, root, scratch)
             + label_studio_cases(root, scratch) + config_value_cases(cfg, root, scratch)
             + ensemble_cases(run, root, scratch) + exclusive_cases(root, cfg, scratch)
             + deep_cases(run, root, scratch) + decode_cases(run, scratch))
    for i, case in enumerate(cases):        # a training case without --out trains a run of its own
        if case.argv[:1] == ["train"] and "--out" not in case.argv:
            case.argv += ["--out", str(scratch / f"new-run-{i}")]
    return cases


def _through(*args, **kwargs):
    """A removed check: lets everything through."""
    return None


def _naive_seeds(value):
    """parse_seeds without its checks: split and convert."""
    return [int(s) for s in value.split(",")] if isinstance(value, str) and value else list(value or [])


# guard -> (what to patch, its stand-in without the check); each names a case's ``guard``. The
# cheap ones come first (--guards N takes the first N); "record" last: without it a case retrains
# the drill's own run.
MUTANTS = {
    "output file": [("hmtc.io.check_output_file", _through)],
    "decode": [("hmtc.checkpoint.check_decode", lambda decode, index, path: decode)],
    "manifest": [("hmtc.checkpoint.check_manifest", _through)],
    "server": [("hmtc.serve.check_server", _through)],
    "limits": [("hmtc.serve.Limits.__post_init__", _through)],
    "seeds": [("hmtc.seeds.parse_seeds", _naive_seeds)],
    "migrate out": [("hmtc.migrate.check_new_folder", lambda out: Path(out))],
    "encoder weights": [("hmtc.models.encoder.check_loaded", _through)],
    "schema": [("hmtc.config.check_config", _through)],
    "run name": [("hmtc.config.check_run_name", _through)],
    "estimator save": [("hmtc.checkpoint.is_checkpoint", lambda folder: True)],
    "estimator params": [("hmtc.estimator.HierarchicalClassifier.set_params", BaseEstimator.set_params)],
    "label spaces": [("hmtc.estimator._unpadded", lambda label, i: label)],
    "taxonomy line": [("hmtc.taxonomy._check_line", _through)],
    "record depth": [("hmtc.results.json_depth", lambda text: 0)],
    "exclusive data": [("hmtc.data.catalog._check_groups", _through)],
    "record": [("hmtc.record.check_record_free", _through)],
}


def mutation_check(cases: list[Case], root: Path, base: Path, guards: list[str]) -> list[dict]:
    """For each guard: its cases pass as they are, and fail with the guard patched out."""
    out = []
    for guard in guards:
        mine = [c for c in cases if c.guard == guard]
        plain = [run_case(c, root, base)["outcome"] for c in mine]
        with contextlib.ExitStack() as stack:
            for target, stand_in in MUTANTS[guard]:
                stack.enter_context(mock.patch(target, stand_in))
            mutated = [run_case(c, root, base) for c in mine]
        killed = [r["outcome"] not in GOOD for r in mutated]
        out.append({"guard": guard, "cases": [c.name for c in mine], "plain": plain,
                    "mutated": [r["outcome"] for r in mutated], "messages": [r["message"][:160] for r in mutated],
                    "killed": bool(mine) and all(killed) and all(p in GOOD for p in plain)})
    return out


def _drill(tmp: Path) -> tuple:
    """The drill's own encoder, dataset, config, inputs and trained run."""
    root, scratch = tmp / "drill", tmp / "scratch"
    scratch.mkdir()
    encoder = testing.tiny_encoder(root / "encoder")
    data = testing.tiny_dataset(root / "data")
    cfg = root / "tiny.toml"
    cfg.write_text(testing.tiny_config_text(data, encoder, root).replace("epochs = 2", "epochs = 1"), encoding="utf-8")
    (root / "inputs.jsonl").write_text('{"text": "meow cat"}\n{"text": "oak"}\n', encoding="utf-8")
    run = root / "runs" / "tiny-msml"
    own = run_case(Case("setup", "the drill's own run", ["train", str(cfg), "--quiet"], ACCEPT), scratch)
    if own["exit"] != 0:
        raise SystemExit(f"the drill's own run failed: {own['message']}")
    return root, scratch, cfg, data, run


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="Also write every case and the counts here (JSON).")
    ap.add_argument("--mutate", action="store_true", help="Check the drill: remove each guard, expect its cases to fail.")
    ap.add_argument("--guards", type=int, default=0, help="With --mutate: only the first N guards (0: all).")
    args = ap.parse_args(argv)
    command = " ".join(["python", "scripts/fault_matrix.py", *sys.argv[1:]])
    t0 = time.time()
    # offline: an unknown hub id must not wait on retries; a server that would start returns at once
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}), \
            mock.patch("uvicorn.run", _through):
        base = Path(tmp)
        root, scratch, cfg, data, run = _drill(base)
        server = Server(run)
        try:
            cases = build_cases(root, cfg, data, run, scratch) + new_cases(root, cfg, data, run, scratch, server)
            if args.mutate:
                guards = list(MUTANTS)[: args.guards or None]
                return _report_mutants(mutation_check(cases, root, base, guards), args, command, t0)
            # the protected set: everything of the drill's own (data, taxonomy, run, records, inputs),
            # and around each case's targets
            results = [run_case(case, root, base) for case in cases]
        finally:
            server.stop()
    return _report(results, cases, args, command, t0)


def _report(results: list[dict], cases: list[Case], args, command: str, t0: float) -> int:
    pending = [r for r in results if r.get("pending")]
    counted = [r for r in results if not r.get("pending")]
    counts = {k: sum(r["outcome"] == k for r in counted) for k in OUTCOMES}
    controls = sum(c.expect == ACCEPT for c in cases)
    print(f"{len(results)} cases ({len(results) - controls} bad inputs, {controls} controls) in "
          f"{time.time() - t0:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f"; {len(pending)} pending")
    for r in counted:
        if r["outcome"] not in GOOD:
            print(f"  [{r['outcome']}] {r['category']}: {r['case']} (exit {r['exit']}; expected {r['expect']!r}): "
                  f"{r['message'][:200]}")
    for r in pending:
        state = "now clear: drop its pending mark" if r["outcome"] in GOOD else r["outcome"]
        print(f"  [pending, {state}] {r['category']}: {r['case']}: {r['message'][:120]} ({r['pending']})")
    if args.out:
        _write(args.out, command, t0, {"cases": len(results), "controls": controls, "counts": counts,
                                       "pending": len(pending), "results": results})
    return 0 if all(r["outcome"] in GOOD for r in counted) and not any(r["outcome"] in GOOD for r in pending) else 1


def _report_mutants(checks: list[dict], args, command: str, t0: float) -> int:
    killed = sum(c["killed"] for c in checks)
    print(f"mutation check: {killed} of {len(checks)} guards removed made all their cases fail "
          f"({time.time() - t0:.0f} s)")
    for c in checks:
        print(f"  [{'killed' if c['killed'] else 'SURVIVED'}] {c['guard']}: "
              + "; ".join(f"{n}: {p} -> {m}" for n, p, m in zip(c["cases"], c["plain"], c["mutated"])))
    if args.out:
        _write(args.out, command, t0, {"guards": len(checks), "killed": killed, "mutants": checks})
    return 0 if killed == len(checks) else 1


def _write(path: Path, command: str, t0: float, body: dict) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    atomic_write_json(path, {"command": command, "seconds": round(time.time() - t0, 1), "machine": machine_info(),
                             "date": now(), "git_commit": commit + ("-dirty" if dirty else ""), **body})


if __name__ == "__main__":
    sys.exit(main_())
