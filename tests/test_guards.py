"""Training that diverges or trains nothing is an error, never a result; runs refuse bad states."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest






def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def test_a_diverging_run_stops_with_an_error_and_no_result(run_config, tmp_path, invoke):
    r = invoke("train", run_config, "--quiet", "--set", "train.lr=1e6", "--set", "train.head_lr=1e6",
               "--set", "train.epochs=3", code=2)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged at epoch 1, step" in errors[0]
    assert "3 consecutive steps with a non-finite loss or gradient (last finite loss" in errors[0]
    assert "Traceback" not in r.output
    run = tmp_path / "runs" / "tiny-msml"
    assert not (run / "best").exists() and not (run / "metrics.json").exists()
    assert digest(tmp_path / "records") == {}


def test_bad_steps_are_skipped_until_the_limit(run_config, tmp_path):
    import torch

    from hmtc.config import load_config
    from hmtc.errors import HmtcError
    from hmtc.train import Trainer
    cfg = load_config(run_config, ["train.epochs=1", "train.record_dir=''", "train.max_bad_steps=2"])
    trainer = Trainer(cfg, tmp_path / "r", quiet=True)
    calls = {"n": 0}
    real = trainer._batch_loss

    def flaky(*args, **kwargs):               # the 3rd step is non-finite once: skipped, training goes on
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * torch.tensor(float("nan")) if calls["n"] == 3 else loss
    trainer._batch_loss = flaky
    trainer.fit()
    batches = -(-len(trainer.data_.token_ids["train"]) // cfg.train.batch_size)
    assert calls["n"] == batches and trainer.state_.step == batches - 1     # one step skipped
    trainer = Trainer(cfg, tmp_path / "r2", quiet=True)
    trainer._batch_loss = lambda *a, **k: real(*a, **k) * torch.tensor(float("nan"))
    with pytest.raises(HmtcError, match=r"step 2: 2 consecutive steps .*\(last finite loss none\)"):
        trainer.fit()


def test_one_writer_per_run_folder(run_config, tmp_path, invoke):
    import fcntl
    import os
    run = tmp_path / "runs" / "tiny-msml"
    run.mkdir(parents=True)
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)          # a live writer holds the folder
    r = invoke("train", run_config, "--quiet", "--set", "train.epochs=1", code=2)
    assert "another hmtc process (pid 4242) is training or evaluating this run folder" in r.output
    assert not (run / "last").exists()
    os.close(fd)                                             # it dies: its lock is stale, taken over
    invoke("train", run_config, "--quiet", "--set", "train.epochs=1")
    fd = os.open(run / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)          # a trainer or evaluator holds it: no eval meanwhile
    before = (run / "metrics.json").read_bytes()
    r = invoke("eval", run, "--quiet", "--overwrite", code=2)
    assert "is training or evaluating this run folder" in r.output and (run / "metrics.json").read_bytes() == before
    r = invoke("report", run, code=2)                        # nor a report written into it
    assert "is training or evaluating this run folder" in r.output and not (run / "report.md").exists()
    r = invoke("export", run, code=2)                        # nor an export beside its weights
    assert "is training or evaluating this run folder" in r.output and not (run / "best" / "model.onnx").exists()
    r = invoke("migrate", run, run / "best" / "taxonomy.tax", "-o", tmp_path / "m", code=2)   # nor read midway
    assert "is training or evaluating this run folder" in r.output and not (tmp_path / "m").exists()
    os.close(fd)
    fd = os.open(run / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)          # a reader holds it: readers share, writers wait
    invoke("migrate", run, run / "best" / "taxonomy.tax", "-o", tmp_path / "m")
    r = invoke("eval", run, "--quiet", "--overwrite", code=2)
    assert "is training or evaluating this run folder" in r.output
    os.close(fd)
    invoke("eval", run, "--quiet", "--overwrite")
    assert (run / "best").is_dir() and (run / ".lock").read_text() == str(os.getpid())


def _tiny_checkpoint(run_config, tmp_path, epochs: int = 1) -> Path:
    from hmtc.config import load_config
    from hmtc.train import Trainer
    cfg = load_config(run_config, [f"train.epochs={epochs}", "train.record_dir=''"])
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    return tmp_path / "r"


def test_a_crash_between_any_two_file_operations_of_a_save_keeps_a_checkpoint(run_config, tmp_path, monkeypatch):
    import os
    import shutil

    import hmtc.io
    from hmtc.checkpoint import save_checkpoint
    from hmtc.loading import load_checkpoint
    from hmtc.io import check_manifest, newest_valid
    run = _tiny_checkpoint(run_config, tmp_path)
    ckpt = load_checkpoint(run / "best")
    ops = ("rename", "replace", "symlink", "unlink")

    class Crash(Exception):
        pass

    def crashing(after: int):
        count = {"n": 0}

        def wrap(fn):
            def inner(*a, **k):
                if count["n"] >= after:
                    raise Crash
                count["n"] += 1
                return fn(*a, **k)
            return inner
        return count, wrap

    done_all = False
    for after in range(40):                       # crash after 0, 1, 2, ... completed operations
        target = tmp_path / f"t{after}"
        save_checkpoint(target, ckpt.model, ckpt.taxonomy, ckpt.config)          # a whole one first
        count, wrap = crashing(after)
        with monkeypatch.context() as m:
            for op in ops:
                m.setattr(hmtc.io.os, op, wrap(getattr(os, op)))
            m.setattr(hmtc.io.shutil, "rmtree", wrap(shutil.rmtree))
            try:
                save_checkpoint(target, ckpt.model, ckpt.taxonomy, ckpt.config.merged({"name": "second"}))
                done_all = True
            except Crash:
                pass
        found = newest_valid(target, lambda f: check_manifest(f) is None and (f / "checkpoint.json").is_file())
        assert found is not None, f"no whole checkpoint after a crash at operation {after}"
        assert load_checkpoint(found).config.name in ("tiny-msml", "second")
        if done_all:
            assert load_checkpoint(target).config.name == "second"
            assert [p.name for p in target.parent.glob(f".{target.name}.v*")] == [os.readlink(target)]   # old gone
            break
    assert done_all


def test_damaged_checkpoints_are_refused_with_the_file_named(run_config, tmp_path, invoke):
    import safetensors.torch
    import torch
    run = _tiny_checkpoint(run_config, tmp_path)
    best = (run / "best").resolve()
    weights = best / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])                        # truncated
    r = invoke("predict", run, "cat", code=2)
    assert "model.safetensors: does not match the checkpoint's manifest" in r.output
    (best / "manifest.json").unlink()                                  # no manifest: the reader finds it
    r = invoke("predict", run, "cat", code=2)
    assert "model.safetensors: not readable weights" in r.output and "Traceback" not in r.output
    tensors = safetensors.torch.load_file(str(run / "last" / "model.safetensors"))
    tensors[next(iter(tensors))][0] = float("nan")
    safetensors.torch.save_file(tensors, str(weights))
    r = invoke("predict", run, "cat", code=2)
    assert "model.safetensors: weights hold NaN or inf" in r.output
    safetensors.torch.save_file({"foreign": torch.zeros(3)}, str(weights))
    r = invoke("predict", run, "cat", code=2)
    assert "model.safetensors: weights do not fit the model" in r.output
    (best / "checkpoint.json").write_text("{not json")
    r = invoke("predict", run, "cat", code=2)
    assert "checkpoint.json: not valid JSON" in r.output


def test_resume_finds_the_newest_whole_checkpoint(run_config, tmp_path, invoke):
    import os

    from hmtc.config import load_config
    from hmtc.train import Trainer
    cfg = load_config(run_config, ["train.epochs=2", "train.record_dir=''"])
    run = Trainer(cfg, tmp_path / "r", quiet=True, stop_after_epochs=1).fit()     # unfinished: can resume
    last = run / "last"
    version = last.parent / os.readlink(last)
    last.unlink()                                   # a crash left no last/ link, only the version
    r = invoke("train", run_config, "--out", run, "--quiet", "--set", "train.epochs=1", code=2)
    assert "run folder exists; pass --resume" in r.output                 # never a silent restart
    invoke("train", run_config, "--out", run, "--resume", "--quiet", "--no-eval", "--set", "train.epochs=2",
           "--set", "train.record_dir=''")
    assert not version.exists() and (last / "train_state.json").is_file()


def test_predict_keeps_one_line_per_input_line(run_config, tmp_path, invoke):
    import json
    run = _tiny_checkpoint(run_config, tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 7, "text": "meow kitten", "x": 1}\n\n{"id": "b", "text": "   "}\n{"text": "oak leaf"}\n',
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    invoke("predict", run, "--input", src, "--output", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4
    assert rows[0]["id"] == 7 and "x" not in rows[0] and rows[0]["labels"]
    assert rows[1] == {"text": "", "labels": [], "paths": [], "scores": {}, "unsure": [], "empty": "empty text"}
    assert rows[2]["id"] == "b" and rows[2]["empty"] == "blank text" and rows[2]["labels"] == []
    assert "id" not in rows[3] and rows[3]["labels"]
    plain = tmp_path / "in.txt"
    plain.write_text("cat\n\ndog\n", encoding="utf-8")
    r = invoke("predict", run, "--input", plain)
    assert [json.loads(line).get("empty") for line in r.output.splitlines() if line.startswith("{")] == \
        [None, "empty text", None]
    before = src.read_bytes()
    r = invoke("predict", run, "--input", src, "--output", src, code=2)
    assert "--output is the --input file" in r.output and src.read_bytes() == before
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "cat"}\n{"nope": 1}\n', encoding="utf-8")
    r = invoke("predict", run, "--input", bad, "--output", tmp_path / "p.jsonl", code=2)
    assert "bad.jsonl:2: expected an object with a string 'text'" in r.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".p.jsonl", "p.jsonl"))) == []


def test_empty_splits_are_refused_before_training(run_config, tmp_path, invoke):
    r = invoke("train", run_config, "--quiet", "--set", "data.dev_fraction=0.0", code=2)
    assert "the dev split is empty (data.dev_fraction = 0" in r.output
    assert not (tmp_path / "runs" / "tiny-msml" / "last").exists()


def test_eval_names_what_changed_in_the_taxonomy(run_config, tmp_path, tiny_dataset, invoke):
    import shutil
    run = _tiny_checkpoint(run_config, tmp_path)
    tax = tiny_dataset.parent / "tiny.tax"
    saved = tax.read_text(encoding="utf-8")
    try:
        tax.write_text(saved.replace('plant-tree "tree"', 'plant-tree "oak tree"') + "  fungus\n", encoding="utf-8")
        r = invoke("eval", run, "--quiet", code=2)
        assert "the dataset's taxonomy differs from the one the model was trained on (2 change(s)" in r.output
        assert "+ fungus" in r.output and "plant-tree: name 'tree' -> 'oak tree'" in r.output
    finally:
        tax.write_text(saved, encoding="utf-8")
    shutil.rmtree(tmp_path / "records", ignore_errors=True)


@pytest.mark.parametrize("setting, message", [
    ("data.max_length=100", "data.max_length 100 exceeds the encoder's 64 positions"),
    ("model.freeze_layers=5", "model.freeze_layers 5 exceeds the encoder's 2 layers"),
])
def test_config_that_does_not_fit_the_encoder(run_config, tmp_path, invoke, setting, message):
    r = invoke("train", run_config, "--quiet", "--set", setting, code=2)
    assert message in r.output and not (tmp_path / "runs" / "tiny-msml" / "last").exists()


def test_unknown_hub_id_fails_at_once_offline(monkeypatch):
    from hmtc.encoders import resolve_encoder
    from hmtc.encoders.registry import EncoderError
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")          # refused before any hub client is asked
    with pytest.raises(EncoderError, match="'nobody/no-such-model' is not a built-in encoder .* HF_HUB_OFFLINE"):
        resolve_encoder("nobody/no-such-model")


def test_markup_and_emoji_are_printed_as_written(tmp_path, invoke):
    tax = tmp_path / "odd.tax"
    tax.write_text('ROOT\n  a[/]b "x [bold]y"\n  c:x:d\n', encoding="utf-8")
    r = invoke("taxonomy", "show", tax)
    assert "x [bold]y" in r.output and "c:x:d" in r.output and "❌" not in r.output
    r = invoke("taxonomy", "add", tax, "c:x:d", "--parent", "a[/]b", code=2)
    assert "c:x:d" in r.output and "Traceback" not in r.output


def test_debug_shows_the_traceback(tmp_path, invoke):
    r = invoke("taxonomy", "validate", tmp_path / "gone.tax", code=2)
    assert r.output.startswith("error:") and "Traceback" not in r.output
    with pytest.raises(Exception, match="gone.tax"):
        invoke("taxonomy", "validate", tmp_path / "gone.tax", "--debug")


def test_predict_shows_progress_on_input_files_and_reads_stdin_strictly(run_config, tmp_path, invoke, monkeypatch):
    import io
    import json
    import sys
    run = _tiny_checkpoint(run_config, tmp_path)
    plain = tmp_path / "in.txt"
    plain.write_bytes("\ufeffmeow kitten\noak leaf\ndog".encode("utf-8"))      # a BOM, no newline at the end
    out = tmp_path / "out.jsonl"
    r = invoke("predict", run, "--input", plain, "--output", out)
    assert "predicting" in r.output and "3/3" in r.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == ["meow kitten", "oak leaf", "dog"]
    assert "predicting" not in invoke("predict", run, "--input", plain, "--output", out, "-q").output
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"cat\n\xff\xfe dog\n")))
    r = invoke("predict", run, code=2)
    assert "error: <stdin>:2: not UTF-8 (byte 0)" in r.output and "Traceback" not in r.output
    for bad in ("0", "-5"):
        r = invoke("predict", run, "cat", "--chunk", bad, code=2)
        assert f"chunk must be a whole number of texts, at least 1, not {bad}" in r.output


@pytest.mark.parametrize("backend", ["os", "marker"])
def test_run_lock_excludes_a_second_writer_and_is_taken_over_when_stale(tmp_path, monkeypatch, backend):
    import os
    import subprocess
    import sys

    import hmtc.io
    from hmtc.errors import HmtcError
    from hmtc.io import RunLock
    if backend == "marker":            # a platform with neither flock nor msvcrt
        monkeypatch.setattr(hmtc.io, "fcntl", None)
        monkeypatch.setattr(hmtc.io, "msvcrt", None)
    folder = tmp_path / "run"
    with RunLock(folder):
        assert (folder / ".lock").read_text() == str(os.getpid())
        if backend == "marker":        # the holder is this live process: refused
            with pytest.raises(HmtcError, match=f"pid {os.getpid()}"):
                RunLock(folder).__enter__()
        else:                          # another process cannot take it
            code = ("import sys; from hmtc.io import RunLock\n"
                    f"try:\n    RunLock({str(folder)!r}).__enter__()\nexcept Exception as e:\n    sys.exit(str(e))")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            assert f"another hmtc process (pid {os.getpid()})" in r.stderr
    if backend == "marker":
        assert not (folder / ".lock").exists()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        (folder / ".lock").write_text(dead)            # a killed holder left its marker
    with RunLock(folder):                              # taken over
        assert (folder / ".lock").read_text() == str(os.getpid())


def test_a_finished_run_keeps_one_copy_of_the_weights(run_config, tmp_path, invoke):
    import json
    import os
    run = tmp_path / "runs" / "tiny-msml"
    unset = ("--set", "train.keep_last=false")             # the default; the tests' tiny config keeps last/
    invoke("train", run_config, "--quiet", "--no-eval", "--set", "train.epochs=2", "--stop-after", "1", *unset)
    assert (run / "last" / "train_state.safetensors").is_file()        # can still resume: optimizer kept
    invoke("train", run_config, "--quiet", "--resume", "--set", "train.epochs=2", "--set", "train.record_dir=''",
           *unset)
    assert sorted(p.name for p in (run / "last").iterdir()) == ["manifest.json", "train_state.json"]
    state = json.loads((run / "last" / "train_state.json").read_text())
    assert state["finished"] and state["epoch"] == 2 and len(state["history"]) == 2
    assert [p.name for p in run.iterdir() if p.name.startswith(".last.v")] == [os.readlink(run / "last")]
    assert json.loads((run / "metrics.json").read_text())["test"]["micro_f1"] >= 0
    r = invoke("train", run_config, "--quiet", "--resume", "--set", "train.epochs=2", "--set", "train.record_dir=''",
               "--overwrite", *unset)
    assert "the run finished (2 epochs); nothing to resume" in r.output
    kept = tmp_path / "kept"
    invoke("train", run_config, "--quiet", "--no-eval", "--out", kept, "--set", "train.epochs=1")
    assert (kept / "last" / "model.safetensors").is_file() and (kept / "last" / "train_state.safetensors").is_file()


def test_resume_refuses_another_config_unless_told(run_config, tmp_path, invoke):
    import json
    run = tmp_path / "runs" / "tiny-msml"
    invoke("train", run_config, "--quiet", "--no-eval", "--set", "train.epochs=3", "--stop-after", "1")
    for flags, key in ((["--set", "train.lr=5e-3"], "train.lr: 0.001 -> 0.005"),
                       (["--set", "train.epochs=2"], "train.epochs: 3 -> 2"),
                       (["--set", "model.options.filters=8"], "model.options.filters: 16 -> 8"),
                       (["--set", "data.max_length=16"], "data.max_length: 32 -> 16")):
        r = invoke("train", run_config, "--quiet", "--resume", "--no-eval", "--set", "train.epochs=3", *flags, code=2)
        assert "--resume with another config than the run's" in r.output and key in r.output, r.output
        assert "Traceback" not in r.output
    state = json.loads((run / "last" / "train_state.json").read_text())
    assert state["epoch"] == 1                                       # nothing trained meanwhile
    # where records go and how many threads score are not the run: accepted as they are
    invoke("train", run_config, "--quiet", "--resume", "--no-eval", "--set", "train.epochs=3", "--stop-after", "1",
           "--set", "train.threads=2", "--set", "train.record_dir=''")
    r = invoke("train", run_config, "--quiet", "--resume", "--set", "train.epochs=3", "--set", "train.lr=5e-3",
               "--accept-changes")
    assert "resuming with 1 changed key(s): train.lr" in " ".join(r.output.split())    # record_dir is no change
    meta = json.loads((run / "run.json").read_text())
    assert meta["resumed_with_changes"][0]["changes"]["train.lr"] == [0.001, 0.005]
    record = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert record["resumed_with_changes"] == meta["resumed_with_changes"]


@pytest.mark.parametrize("flags, message", [
    (["--seeds", ""], "--seeds '' names no seed"),
    (["--seeds=-1,2"], "seeds must be whole numbers from 0 to 4294967295"),
    (["--stop-after", "0"], "stop after 0 epochs: give 1 or more"),
    (["--stop-after", "-1"], "stop after -1 epochs: give 1 or more"),
    (["--set", "train.device='cuda'"], "this machine has no CUDA device")])
def test_odd_run_options_are_one_line_errors(run_config, tmp_path, invoke, flags, message):
    import torch
    if "cuda" in message and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = invoke("train", run_config, "--quiet", *flags, code=2)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in " ".join(r.output.split()) and "Traceback" not in r.output, r.output
    assert not (tmp_path / "runs" / "tiny-msml" / "best").exists()


def test_json_nested_without_end_is_one_line(run_config, tmp_path, invoke):
    run = _tiny_checkpoint(run_config, tmp_path)
    deep = "[" * 200_000 + "]" * 200_000
    meta = run / "best" / "checkpoint.json"
    saved = meta.read_text()
    (run / "best" / "manifest.json").write_text('{"sha256": ' + deep + "}")
    r = invoke("predict", run, "cat", code=2)
    assert "manifest.json: not a readable manifest" in r.output and "Traceback" not in r.output
    (run / "best" / "manifest.json").unlink()
    meta.write_text(deep)
    r = invoke("predict", run, "cat", code=2)
    assert "checkpoint.json: not valid JSON: nested too deeply" in r.output and "Traceback" not in r.output
    meta.write_text(saved)
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "cat"}\n{"text": ' + deep + "}\n", encoding="utf-8")
    r = invoke("predict", run, "--input", src, "--output", tmp_path / "out.jsonl", code=2)
    assert "in.jsonl:2: invalid JSON: nested too deeply" in r.output and not (tmp_path / "out.jsonl").exists()


def test_predict_output_is_a_regular_file(run_config, tmp_path, invoke):
    import os
    run = _tiny_checkpoint(run_config, tmp_path)
    target = tmp_path / "kept.txt"
    target.write_text("mine")
    link = tmp_path / "link.jsonl"
    os.symlink(target, link)
    for out in (link, "/dev/null", tmp_path):
        r = invoke("predict", run, "cat", "--output", out, code=2)
        assert "is a link, a folder or a device" in r.output
    assert link.is_symlink() and target.read_text() == "mine"


def test_a_base_chain_without_end_is_one_line(tmp_path, invoke):
    for i in range(40):
        (tmp_path / f"c{i}.toml").write_text(f'base = "c{i + 1}.toml"\n')
    (tmp_path / "c40.toml").write_text("[train]\nepochs = 1\n")
    r = invoke("train", tmp_path / "c0.toml", code=2)
    assert "base chain deeper than 32 files (from c0.toml)" in r.output and "Traceback" not in r.output


def test_window_keys_without_windows_are_refused(run_config, tmp_path, invoke):
    r = invoke("train", run_config, "--quiet", "--set", "model.window_length=16", code=2)
    assert "model.window_length and model.window_stride apply only with model.windows = true" in r.output


def test_ensemble_refuses_odd_weights_and_a_member_or_trained_run_as_its_folder(run_config, tmp_path, invoke):
    a = _tiny_checkpoint(run_config, tmp_path)
    b = tmp_path / "b"
    import shutil
    shutil.copytree(a, b, symlinks=True)
    before = {p: p.read_bytes() for p in a.rglob("*") if p.is_file()}
    for weights in ("nan,1", "-1,2", "0,0", "inf,1"):
        r = invoke("ensemble", a, b, "-o", tmp_path / "ens", "--weights", weights, code=2)
        assert "finite numbers, 0 or more, not all 0" in r.output
    r = invoke("ensemble", a, b, "-o", a, code=2)
    assert "-o is one of the members" in r.output
    other = tmp_path / "other"
    shutil.copytree(a, other, symlinks=True)
    r = invoke("ensemble", a, b, "-o", other, code=2)
    assert "-o holds a trained run, not an ensemble" in r.output
    assert {p: p.read_bytes() for p in a.rglob("*") if p.is_file()} == before
    invoke("ensemble", a, b, "-o", tmp_path / "ens")
    invoke("ensemble", a, b, "-o", tmp_path / "ens")              # its own earlier output: replaced


def test_an_unwritable_record_dir_fails_before_training(run_config, tmp_path, invoke):
    """A record folder that cannot be made (a file stands in its path) is one error before any
    training, for a single run and a seeds set, and no run folder is left."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    for extra in ([], ["--seeds", "1,2"]):
        r = invoke("train", run_config, "--quiet", "--out", tmp_path / "run", "--set",
                   f"train.record_dir={blocker / 'records'}", *extra, code=2)
        assert "train.record_dir cannot be written" in r.output and "blocker" in r.output
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("decode, key", [({"method": "sideways"}, "method"), ({"threshold": "abc"}, "threshold"),
                                         ({"threshold": None}, "threshold"), ({"complete": "yes"}, "complete"),
                                         ({"per_label_thresholds": [0.1, 0.2]}, "per_label_thresholds"),
                                         ({"temperatures": [1.0, -2.0]}, "temperatures"),
                                         ({"temperatures": [1.0]}, "temperatures"),
                                         ({"method": [1]}, "method"), ({"method": {"a": 1}}, "method")])
def test_a_damaged_decode_json_is_one_line_naming_the_key(run_config, tmp_path, invoke, decode, key):
    """decode.json sits beside the manifest (hmtc eval rewrites it): what it holds is checked where
    it is read, not found by a traceback in decoding."""
    run = _tiny_checkpoint(run_config, tmp_path)
    path = run / "best" / "decode.json"
    path.write_text(json.dumps({"method": "best", "threshold": 0.0, "temperatures": [1.0, 1.0]} | decode))
    r = invoke("predict", run, "cat", code=2)
    assert "decode.json" in r.output and f"{key} must be" in r.output and "Traceback" not in r.output
    path.write_text(json.dumps({"method": "best", "threshold": 0.0, "temperatures": [1.0, 1.0]}))
    invoke("predict", run, "cat")


def test_sigterm_during_predict_output_leaves_no_file(run_config, tmp_path):
    """``kill`` of a predict writing --output: exit 143, no output and no partial file beside it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    run = _tiny_checkpoint(run_config, tmp_path)
    src = tmp_path / "in.txt"
    src.write_text("cat meow here and a tree\n" * 400_000, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "hmtc", "predict", str(run), "--input", str(src), "--output",
                             str(out), "-q", "--chunk", "64"], stderr=subprocess.PIPE)
    partial = tmp_path / ".out.jsonl.partial"
    deadline = time.time() + 120
    while not (partial.is_file() and partial.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "predict ended before it could be stopped"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, proc.stderr.read().decode()[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []


# ---- small frictions a new user met (issue 33, item 8) ----------------------------------------
def test_a_misspelt_key_offers_the_close_one(run_config):
    from hmtc.config import load_config
    from hmtc.errors import ConfigError
    with pytest.raises(ConfigError, match=r"unknown key train\.epoch \(did you mean train\.epochs\?\)"):
        load_config(run_config, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"did you mean decode\?"):
        load_config(run_config, ["decod.method='best'"])


def test_no_data_folder_names_what_train_can_use(monkeypatch):
    from hmtc.data.catalog import data_dir
    from hmtc.errors import DataError
    monkeypatch.delenv("HMTC_DATA", raising=False)
    with pytest.raises(DataError, match=r"HMTC_DATA.*data\.data_dir in the run config"):
        data_dir()


def test_report_of_a_missing_folder_says_so(invoke, tmp_path):
    r = invoke("report", tmp_path / "nope", code=2)
    assert "no such run folder" in r.output and "evaluate" not in r.output


def test_git_commit_is_the_packages_wherever_the_command_starts(tmp_path, monkeypatch):
    import hmtc
    from hmtc.record import git_commit
    here = git_commit(Path(hmtc.__file__).parent)
    monkeypatch.chdir(tmp_path)
    assert git_commit() == here


def test_new_files_get_the_umask_mode_not_0600(tmp_path):
    import stat

    from hmtc.io import _UMASK, atomic_write_text
    atomic_write_text(tmp_path / "report.md", "x")
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o666 & ~_UMASK
    (tmp_path / "report.md").chmod(0o600)               # an existing file keeps its own mode
    atomic_write_text(tmp_path / "report.md", "y")
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o600


def test_a_run_that_fails_leaves_no_folder_holding_only_its_lock(run_config, tmp_path):
    from hmtc.config import load_config
    from hmtc.errors import ConfigError
    from hmtc.train import Trainer
    cfg = load_config(run_config, ["data.shots=0", "train.record_dir=''"])
    with pytest.raises(ConfigError, match="data.shots = 0"):
        Trainer(cfg, tmp_path / "failed", quiet=True).fit()
    assert not (tmp_path / "failed").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError):
        Trainer(cfg, tmp_path / "kept", quiet=True).fit()
    assert (tmp_path / "kept").is_dir()                   # a folder it did not create stays


def test_a_decode_json_that_is_no_file_is_one_line(run_config, tmp_path, invoke):
    """A folder in decode.json's place is named, not passed over as 'no decoding tuned'."""
    run = _tiny_checkpoint(run_config, tmp_path)
    path = run / "best" / "decode.json"        # written by hmtc eval; this run has none yet
    path.mkdir()
    r = invoke("predict", run, "cat", code=2)
    assert "decode.json: Is a directory" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", [".", "./", ""])
def test_a_run_name_that_is_the_output_folder_itself_is_refused(run_config, name):
    from hmtc.config import load_config
    from hmtc.errors import ConfigError
    with pytest.raises(ConfigError, match="run name"):
        load_config(run_config, [f"name={json.dumps(name)}"])


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "cuda:-1", "cuda:0 "])
def test_a_device_that_names_no_cuda_index_is_refused_on_load(run_config, device):
    from hmtc.config import load_config
    from hmtc.errors import ConfigError
    with pytest.raises(ConfigError, match="train.device: expected"):
        load_config(run_config, [f"train.device={json.dumps(device)}"])


def test_an_encoder_folder_without_its_weights_is_refused(run_config, tiny_encoder, tmp_path, invoke):
    """A weights file that holds another model's tensors (or a pickle of anything) would leave
    transformers to start every weight from random values: one line instead, before training."""
    import shutil

    import safetensors.torch
    import torch
    folder = tmp_path / "foreign"
    shutil.copytree(tiny_encoder, folder)
    safetensors.torch.save_file({"other.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    r = invoke("train", run_config, "--quiet", "--set", f"model.encoder={json.dumps(str(folder))}", code=2)
    assert "the encoder's weights file lacks" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "runs" / "tiny-msml").exists()


def test_a_checkpoint_without_its_tokenizer_folder_names_it(run_config, tmp_path, invoke):
    import shutil
    run = _tiny_checkpoint(run_config, tmp_path)
    best = (run / "best").resolve()
    shutil.rmtree(best / "tokenizer")
    (best / "manifest.json").unlink()
    r = invoke("predict", run, "cat", code=2)
    assert "tokenizer: missing: the checkpoint is incomplete" in r.output and "Repo id" not in r.output


def test_a_record_nested_deep_is_one_line_naming_it(tmp_path, invoke):
    from hmtc.io import json_depth
    assert json_depth('{"a": [1, {"b": "]]\\"[["}]}') == 3 and json_depth("7") == 0 and json_depth("[]") == 1
    records = tmp_path / "records"
    records.mkdir()
    for depth in (65, 200_000):
        (records / "x.json").write_text("[" * depth + "]" * depth)
        r = invoke("results", "--records", records, "--out", tmp_path / "R.md", code=2)
        assert f"{records / 'x.json'}: not a run record: nested over 64 levels deep" in r.output
        assert "Traceback" not in r.output and not (tmp_path / "R.md").exists()


def test_a_taxonomy_chain_thousands_deep_validates_and_shows(tmp_path, invoke):
    chain = tmp_path / "chain.tax"
    chain.write_text("ROOT\n" + "".join("  " * (i + 1) + f"n{i}\n" for i in range(3000)), encoding="utf-8")
    assert "valid: 3000 nodes, 1 leaves, depth 3000" in invoke("taxonomy", "validate", chain).output
    out = " ".join(invoke("taxonomy", "show", chain).output.split())
    assert "└── n0 (1)" in out and "n2999" not in out and "of 3000 do not fit" in out and "L3000=1" in out
    dag = tmp_path / "dag.tax"                  # drawn in the file's pre-order: c is defined under b
    dag.write_text("ROOT\n  a\n    b\n      c\n  &c\n  d\n", encoding="utf-8")
    lines = [line.strip("│└├─ ") for line in invoke("taxonomy", "show", dag).output.splitlines()]
    assert lines[1:6] == ["a (1)", "b (1)", "c", "↗ c (also here)", "d"]


def test_data_that_breaks_an_exclusive_mark_is_refused_in_every_split(run_config, tiny_dataset, tmp_path, invoke):
    from hmtc.data.catalog import encode_labels
    from hmtc.data.readers import read_jsonl
    from hmtc.errors import DataError
    from hmtc.taxonomy import Taxonomy
    text = (tiny_dataset.parent / "tiny.tax").read_text(encoding="utf-8")
    animal = tmp_path / "animal.tax"
    animal.write_text(text.replace("  animal\n", "  animal !exclusive\n"), encoding="utf-8")
    rows = {split: [set(json.loads(line)["labels"]) for line in (tiny_dataset.parent / f"{split}.jsonl").open()]
            for split in ("train", "test")}
    first = next(i for i, labs in enumerate(rows["train"], 1) if {"animal-cat", "animal-dog"} <= labs)
    r = invoke("train", run_config, "--quiet", "--set", f"data.taxonomy='{animal}'", code=2)
    assert f"train.jsonl:{first}: labels 'animal-cat' and 'animal-dog'" in r.output
    assert "two children of 'animal', which the taxonomy marks !exclusive" in r.output and "any split" in r.output
    # the root's mark: two level-1 nodes on a text, in the test split as in training
    top = Taxonomy.parse(text.replace("ROOT\n", "ROOT !exclusive\n"))
    bad = {split: [i for i, labs in enumerate(sets) if {lab.split("-")[0] for lab in labs} == {"animal", "plant"}]
           for split, sets in rows.items()}
    assert bad["test"]
    with pytest.raises(DataError, match=rf"test.jsonl:{bad['test'][0] + 1}: labels 'animal' and 'plant' .* "
                                        "two children of the root"):
        encode_labels(read_jsonl(tiny_dataset.parent / "test.jsonl"), top)
    for split, want in bad.items():             # skipped: counted, and the sample left without labels
        ex = read_jsonl(tiny_dataset.parent / f"{split}.jsonl")
        y = encode_labels(ex, top, on_error="skip")
        assert ex.skipped_reasons["two children of an exclusive group"] == len(want)
        assert np.flatnonzero(~y.any(1)).tolist() == want
    assert encode_labels(read_jsonl(tiny_dataset.parent / "train.jsonl"), Taxonomy.parse(text)).any(1).all()


def test_a_full_disk_is_one_line_naming_what_survives(tmp_path, monkeypatch):
    """The machine refuses a write (ENOSPC): one error naming the file and what is left, the last
    whole version of a checkpoint folder and the previous file untouched."""
    import errno

    from hmtc.errors import HmtcError
    from hmtc.io import atomic_write_bytes, versioned_dir
    target = tmp_path / "best"
    with versioned_dir(target) as tmp:
        (tmp / "w.bin").write_bytes(b"v1")
    first = target.resolve().name
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(HmtcError, match=rf"No space left on device\); the last whole version \({first}\) is kept"):
        with versioned_dir(target) as tmp:
            (tmp / "w.bin").write_bytes(b"v2")
            raise full
    assert (target / "w.bin").read_bytes() == b"v1" and target.resolve().name == first
    safetensors = pytest.importorskip("safetensors")
    with pytest.raises(HmtcError, match="could not write a new version"):
        with versioned_dir(target):
            raise safetensors.SafetensorError("Error while serializing: IoError(StorageFull)")
    (tmp_path / "m.json").write_bytes(b"old")

    def no_space(fd):
        raise full
    monkeypatch.setattr("hmtc.io.os.fsync", no_space)
    with pytest.raises(HmtcError, match=r"No space left on device\); the previous file is unchanged"):
        atomic_write_bytes(tmp_path / "m.json", b"new")
    assert (tmp_path / "m.json").read_bytes() == b"old" and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
