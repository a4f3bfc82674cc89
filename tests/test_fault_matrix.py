"""The fault drill (scripts/fault_matrix.py): every bad input ends in the one clear error line it
expects, every control is accepted, nothing around a case's targets is lost; and removing a guard
makes the cases that test it fail."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_matrix.py"


def test_every_bad_input_is_its_clear_error_and_every_control_is_accepted(tmp_path, monkeypatch):
    drill = runpy.run_path(str(SCRIPT))
    out = tmp_path / "fm.json"
    monkeypatch.chdir(tmp_path)         # nothing a case writes may land in the project
    code = drill["main_"](["--out", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))
    bad = [r for r in report["results"] if r["outcome"] not in ("clear error", "accepted") and "pending" not in r]
    assert report["cases"] >= 400 and report["controls"] >= 25 and not bad and code == 0, bad[:5]
    assert all(r["expect"] for r in report["results"])
    assert {r["category"] for r in report["results"]} >= {
        "config", "data", "taxonomy", "training", "checkpoint", "predict", "records", "serve", "estimator", "seeds",
        "resume", "migrate", "suggest", "label-studio", "windows", "ensemble", "exclusive", "deep", "decode"}


def test_removing_a_guard_fails_its_cases(tmp_path, monkeypatch):
    """A sample of the mutation check: each guard's cases pass with it and fail without it."""
    drill = runpy.run_path(str(SCRIPT))
    out = tmp_path / "mutants.json"
    monkeypatch.chdir(tmp_path)
    code = drill["main_"](["--mutate", "--guards", "5", "--out", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["guards"] == 5 and report["killed"] == 5 and code == 0, report["mutants"]
    assert all(m["cases"] and set(m["plain"]) <= {"clear error"} for m in report["mutants"])
