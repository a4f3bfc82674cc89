"""The fault drill (scripts/fault_matrix.py): every bad input ends in one clear error line."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_matrix.py"


def test_every_bad_input_is_a_clear_error(tmp_path, monkeypatch):
    drill = runpy.run_path(str(SCRIPT))
    out = tmp_path / "fm.json"
    monkeypatch.chdir(tmp_path)         # nothing a case writes may land in the project
    code = drill["main_"](["--out", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))
    bad = [r for r in report["results"] if r["outcome"] != "clear error"]
    assert report["cases"] >= 150 and not bad and code == 0, bad[:5]
    assert {r["category"] for r in report["results"]} == {"config", "data", "taxonomy", "training", "checkpoint",
                                                         "predict", "records"}
