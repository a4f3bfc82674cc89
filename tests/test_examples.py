"""The quickstart and the example of docs/api.md run, on the tiny random encoder."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tiny_encoder, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--encoder", str(tiny_encoder), "--epochs", "1"])
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    for line in ("nodes:", "predicted:", "probabilities:", "one text:", "top 2 per level:", "leaf micro-F1",
                 "micro-F1:", "clone:"):
        assert line in out


def test_api_doc_examples_run(tiny_encoder, monkeypatch, tmp_path, capsys):
    """docs/api.md's Python blocks, in order, in one namespace (the later ones use the first's data)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.setenv("HMTC_ENCODER", str(tiny_encoder))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "api_example"}
    for block in blocks:
        exec(compile(block, str(ROOT / "docs" / "api.md"), "exec"), namespace)
    out = capsys.readouterr().out
    for line in ("predicted:", "one text:", "top 2 per level:", "leaf micro-F1", "clone:", "best:"):
        assert line in out


def test_fewshot_example_config_trains_and_predicts(tiny_encoder, tmp_path, monkeypatch, invoke):
    """The README's few-shot first run, on the tiny encoder: 6 texts a leaf to train, 2 as dev."""
    monkeypatch.chdir(ROOT)
    run = tmp_path / "fewshot"
    invoke("train", "examples/fewshot/fewshot.toml", "--quiet", "--out", run,
           "--set", f"model.encoder={tiny_encoder}", "--set", "train.epochs=1", "--set", "model.freeze_layers=1",
           "--set", f"train.record_dir={tmp_path / 'records'}")
    import json
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["sampling"]["train_texts"] == 36 and metrics["sampling"]["dev_texts"] == 12
    r = invoke("predict", run, "I was charged twice, please give me my money back")
    assert json.loads(r.output.splitlines()[-1])["labels"][0] in ("billing", "technical")
