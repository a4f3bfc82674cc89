"""Fault drill: bad inputs across config, data, taxonomy, training, checkpoints and predict, each
run through the real CLI entry point (``hmtc.cli.main``) on the tiny offline encoder and dataset
of :mod:`hmtc.testing`. Every case is classified:

    clear error       exit 2 and exactly one ``error:`` line (or typer's usage error), no traceback
    unclear           a non-zero exit without that one line
    traceback         an exception escaped, or a traceback was printed
    silently accepted exit 0 on a bad input
    data lost         a file that existed before the case (data, taxonomy, checkpoint, record,
                      input) changed or vanished; counted before anything else

    python scripts/fault_matrix.py [--out experiments/fault-matrix.json]

Prints the counts and each case that is not a clear error; ``--out`` also writes every case.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from hmtc import testing
from hmtc.cli import main
from hmtc.config import DEFAULTS
from hmtc.io import atomic_write_json
from hmtc.record import machine_info, now


@dataclass
class Case:
    category: str
    name: str
    argv: list[str]
    setup: object = None            # callable run just before the case (makes its bad files)
    env: dict = field(default_factory=dict)


def digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def run_case(case: Case, protected: Path) -> dict:
    if case.setup:
        case.setup()
    before = digest(protected)
    old_argv, old_env = sys.argv, {k: os.environ.get(k) for k in case.env}
    sys.argv = ["hmtc", *case.argv]
    os.environ.update(case.env)
    out, err, code, escaped = io.StringIO(), io.StringIO(), None, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:       # noqa: BLE001  (what the drill is looking for)
                escaped = traceback.format_exc()
    finally:
        sys.argv = old_argv
        for k, v in old_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = out.getvalue() + err.getvalue()
    after = digest(protected)
    lost = sorted(k for k, v in before.items() if after.get(k) != v)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    usage = code == 2 and "Usage:" in text
    if lost:
        outcome = "data lost"
    elif escaped or "Traceback (most recent call last)" in text:
        outcome = "traceback"
    elif code == 0:
        outcome = "silently accepted"
    elif code == 2 and (len(errors) == 1 or usage):
        outcome = "clear error"
    else:
        outcome = "unclear"
    shown = errors[0] if errors else (escaped or text).strip().splitlines()[-1:] or [""]
    return {"category": case.category, "case": case.name, "argv": case.argv, "exit": code, "outcome": outcome,
            "message": shown if isinstance(shown, str) else shown[0], "lost": lost}


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
                cases.append(Case("config", f"{section}.{key}: {label}", train + ["--set", f"{section}.{key}={text}"]))
    cases += [
        Case("config", "data.shots: negative", train + ["--set", "data.shots=-2"]),
        Case("config", "data.dev_shots: negative", train + ["--set", "data.dev_shots=-2"]),
        Case("config", "data.shots = 0 for a model that needs examples", train + ["--set", "data.shots=0"]),
        Case("config", "data.shots with data.train_fraction", train + ["--set", "data.shots=2",
                                                                       "--set", "data.train_fraction=0.5"]),
        Case("config", "unknown section", train + ["--set", "nope.key=1"]),
        Case("config", "unknown key", train + ["--set", "train.epoch=3"]),
        Case("config", "override without =", train + ["--set", "train.epochs"]),
        Case("config", "unknown model", train + ["--set", "model.name='forest'"]),
        Case("config", "unknown model option", train + ["--set", "model.options.nope=1"]),
        Case("config", "kernels of the wrong shape", train + ["--set", "model.options.kernels='x'"]),
        Case("config", "level_weights too short", train + ["--set", "model.options.level_weights=[1.0]"]),
        Case("config", "unknown loss", train + ["--set", "model.options.loss='hinge'"]),
        Case("config", "unknown label_init", train + ["--set", "model.options.label_init='names'"]),
        Case("config", "layers beyond the encoder", train + ["--set", "model.layers=[-9]"]),
        Case("config", "max_length beyond positions", train + ["--set", "data.max_length=100"]),
        Case("config", "freeze_layers beyond depth", train + ["--set", "model.freeze_layers=5"]),
        Case("config", "cache without frozen layers", train + ["--set", "train.cache_frozen=true"]),
        Case("config", "unknown encoder path", train + ["--set", "model.encoder='./no/such/encoder'"]),
        Case("config", "uncached hub id offline", train + ["--set", "model.encoder='nobody/no-model'"],
             env={"HF_HUB_OFFLINE": "1"}),
        Case("config", "config file missing", ["train", str(root / "missing.toml")]),
        Case("config", "config is a folder", ["train", str(root)]),
        Case("config", "config not TOML", ["train", str(scratch / "bad.toml")],
             setup=lambda: (scratch / "bad.toml").write_text("[train\nepochs = 3\n")),
        Case("config", "base cycle", ["train", str(scratch / "cyc-a.toml")],
             setup=lambda: ((scratch / "cyc-a.toml").write_text('base = "cyc-b.toml"\n'),
                            (scratch / "cyc-b.toml").write_text('base = "cyc-a.toml"\n'))),
        Case("config", "base missing", ["train", str(scratch / "orphan.toml")],
             setup=lambda: (scratch / "orphan.toml").write_text('base = "gone.toml"\n')),
        Case("config", "a name that escapes", train + ["--set", "name='../../escape'"]),
        Case("config", "an absolute name", train + ["--set", "name='/tmp/escape'"]),
        Case("config", "seeds not numbers", train + ["--seeds", "a,b"]),
        Case("config", "seeds repeated", train + ["--seeds", "1,1"]),
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
        cases.append(Case("data", name, train + ["--set", f"data.dataset='{path}'"], setup=make))
    cases += [
        Case("data", "dataset file missing", train + ["--set", f"data.dataset='{root / 'gone.toml'}'"]),
        Case("data", "unknown built-in dataset", train + ["--set", "data.dataset='due'"]),
        Case("data", "data folder missing", train + ["--set", "data.dataset='duee'", "--set", "data.data_dir='/no/such/dir'"]),
        Case("data", "dev fraction 0 without a dev split", train + ["--set", "data.dev_fraction=0.0"]),
        Case("data", "stats of a missing dataset", ["data", "stats", str(root / "gone.toml")]),
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
        cases.append(Case("taxonomy", f"validate: {name}", ["taxonomy", "validate", path]))
    tax = str(data.parent / "tiny.tax")
    cases += [
        Case("taxonomy", "validate a missing file", ["taxonomy", "validate", str(root / "gone.tax")]),
        Case("taxonomy", "show a folder", ["taxonomy", "show", str(root)]),
        Case("taxonomy", "add an existing node", ["taxonomy", "add", tax, "animal-cat", "--parent", "animal"]),
        Case("taxonomy", "add under a missing parent", ["taxonomy", "add", tax, "new", "--parent", "nope"]),
        Case("taxonomy", "remove a missing node", ["taxonomy", "remove", tax, "nope", "--subtree"]),
        Case("taxonomy", "remove with both modes", ["taxonomy", "remove", tax, "animal", "--subtree", "--reparent"]),
        Case("taxonomy", "move under its own child", ["taxonomy", "move", tax, "animal", "animal-cat"]),
        Case("taxonomy", "rename to an existing id", ["taxonomy", "rename", tax, "animal-cat", "animal-dog"]),
        Case("taxonomy", "merge into itself", ["taxonomy", "merge", tax, "animal", "animal"]),
        Case("taxonomy", "from-labels of a missing dataset", ["taxonomy", "from-labels", str(root / "gone.toml"),
                                                               "-o", str(scratch / "x.tax")]),
    ]

    # ---- training -----------------------------------------------------------------------------
    cases += [
        Case("training", "a diverging learning rate", train + ["--set", "train.lr=1e6", "--set", "train.head_lr=1e6",
                                                               "--out", str(scratch / "diverge")]),
        Case("training", "resume with nothing to resume", train + ["--resume", "--out", str(scratch / "nothing")]),
        Case("training", "the same run again", train + ["--out", str(run)]),
        Case("training", "resume a finished run's record", train + ["--resume", "--out", str(run)]),
        Case("training", "teacher folder missing", train + ["--set", f"train.teacher='{root / 'gone'}'",
                                                            "--out", str(scratch / "t1")]),
        Case("training", "teacher with R-Drop", train + ["--set", f"train.teacher='{run}'", "--set",
                                                         "train.rdrop_alpha=1.0", "--out", str(scratch / "t2")]),
        Case("training", "--out is a file", train + ["--out", str(cfg)]),
        Case("training", "train limit larger than nothing", train + ["--set", "data.train_limit=1", "--out",
                                                                     str(scratch / "tiny-limit")]),
    ]

    # ---- checkpoints: a damaged copy of the trained run each --------------------------------------
    def damaged(name: str, damage):
        folder = scratch / f"ckpt-{name}"

        def make():
            shutil.copytree(run, folder, symlinks=True, dirs_exist_ok=True)
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
        cases.append(Case("checkpoint", f"predict: {name}", ["predict", folder, "a cat"], setup=make))
        cases.append(Case("checkpoint", f"eval: {name}", ["eval", folder, "--quiet", "--overwrite"]))
    cases += [
        Case("checkpoint", "predict a folder without a checkpoint", ["predict", str(scratch), "cat"]),
        Case("checkpoint", "predict a file", ["predict", str(cfg), "cat"]),
        Case("checkpoint", "eval with an unknown engine", ["eval", str(run), "--engine", "tpu"]),
        Case("checkpoint", "eval with onnx never exported", ["eval", str(run), "--engine", "onnx"]),
        Case("checkpoint", "eval an unknown decode key", ["eval", str(run), "--set", "decode.nope=1", "--tag", "x"]),
        Case("checkpoint", "eval a bad tag", ["eval", str(run), "--set", "decode.complete=true", "--tag", "../x"]),
        Case("checkpoint", "eval again without --overwrite", ["eval", str(run), "--quiet"]),
        Case("checkpoint", "export a missing folder", ["export", str(root / "gone")]),
    ]

    # ---- predict inputs -----------------------------------------------------------------------
    def write(name: str, data_: bytes) -> str:
        path = scratch / name
        path.write_bytes(data_)
        return str(path)

    inputs = root / "inputs.jsonl"
    cases += [
        Case("predict", "input file missing", ["predict", str(run), "--input", str(root / "gone.jsonl")]),
        Case("predict", "input is a folder", ["predict", str(run), "--input", str(root)]),
        Case("predict", "output is the input", ["predict", str(run), "--input", str(inputs), "--output", str(inputs)]),
        Case("predict", "bad JSON line", ["predict", str(run), "--input", write("bad.jsonl", b'{"text": "a"}\n{oops\n')]),
        Case("predict", "line without text", ["predict", str(run), "--input", write("nt.jsonl", b'{"t": "a"}\n')]),
        Case("predict", "text not a string", ["predict", str(run), "--input", write("ns.jsonl", b'{"text": 3}\n')]),
        Case("predict", "not UTF-8", ["predict", str(run), "--input", write("nu.txt", b"cat\n\xff\xfe\n")]),
        Case("predict", "output folder missing", ["predict", str(run), "--input", str(inputs), "--output",
                                                  str(root / "no" / "such" / "out.jsonl")]),
        Case("predict", "output is a folder", ["predict", str(run), "--input", str(inputs), "--output", str(scratch)]),
        Case("predict", "unknown engine", ["predict", str(run), "cat", "--engine", "gpu"]),
    ]

    # ---- records and reports ----------------------------------------------------------------
    cases += [
        Case("records", "results with a broken record", ["results", "--records", str(scratch / "recs"), "--out",
                                                         str(scratch / "R.md")],
             setup=lambda: ((scratch / "recs").mkdir(exist_ok=True), (scratch / "recs" / "x.json").write_text("{"))),
        Case("records", "results with a foreign JSON", ["results", "--records", str(scratch / "recs2"), "--out",
                                                        str(scratch / "R2.md")],
             setup=lambda: ((scratch / "recs2").mkdir(exist_ok=True), (scratch / "recs2" / "x.json").write_text("[]"))),
        Case("records", "compare a folder that is no run", ["compare", str(scratch)]),
        Case("records", "report of an unevaluated folder", ["report", str(scratch)]),
        Case("records", "metrics of missing files", ["metrics", str(root / "g.jsonl"), str(root / "p.jsonl"),
                                                     "--taxonomy", tax]),
    ]
    for i, case in enumerate(cases):
        if case.argv[:3] == train and "--out" not in case.argv:
            case.argv += ["--out", str(scratch / f"run-{i}")]
    return cases


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="Also write every case and the counts here (JSON).")
    args = ap.parse_args(argv)
    command = " ".join(["python", "scripts/fault_matrix.py", *sys.argv[1:]])
    t0 = time.time()
    os.environ["HF_HUB_OFFLINE"] = "1"          # this machine is offline: an unknown hub id must not wait on retries
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "drill"
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        encoder = testing.tiny_encoder(root / "encoder")
        data = testing.tiny_dataset(root / "data")
        cfg = root / "tiny.toml"
        cfg.write_text(testing.tiny_config_text(data, encoder, root).replace("epochs = 2", "epochs = 1"),
                       encoding="utf-8")
        (root / "inputs.jsonl").write_text('{"text": "meow cat"}\n{"text": "oak"}\n', encoding="utf-8")
        run = root / "runs" / "tiny-msml"
        drill = Case("setup", "the drill's own run", ["train", str(cfg), "--quiet"])
        own = run_case(drill, scratch)
        if own["exit"] != 0:
            raise SystemExit(f"the drill's own run failed: {own['message']}")
        cases = build_cases(root, cfg, data, run, scratch)
        results = []
        for case in cases:
            # the protected set: everything of the drill's own (data, taxonomy, run, records, inputs)
            results.append(run_case(case, root))
    counts = {k: sum(r["outcome"] == k for r in results)
              for k in ("clear error", "unclear", "traceback", "silently accepted", "data lost")}
    print(f"{len(results)} bad inputs in {time.time() - t0:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for r in results:
        if r["outcome"] != "clear error":
            print(f"  [{r['outcome']}] {r['category']}: {r['case']} (exit {r['exit']}): {r['message'][:200]}")
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True).stdout.strip())
        atomic_write_json(args.out, {"command": command, "seconds": round(time.time() - t0, 1),
                                     "machine": machine_info(), "date": now(),
                                     "git_commit": commit + ("-dirty" if dirty else ""), "cases": len(results),
                                     "counts": counts, "results": results})
    return 0 if counts["clear error"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main_())
