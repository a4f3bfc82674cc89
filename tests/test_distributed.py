"""DDP: two gloo processes under torchrun reach what one process reaches with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import safetensors.torch
import torch

COMMON = ["--quiet", "--no-eval", "--set", "train.epochs=2", "--set", "train.batch_size=8",
          "--set", "train.record_dir=''", "--set", "train.threads=1",
          "--set", "model.encoder_options={hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0}"]


def _train(args: list[str]) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


# windows of 6 tokens (4 of the text) cut every tiny text (5 or 7 tokens of text): each process
# cuts, encodes and joins its own share
WINDOWS = ["--set", "data.max_length=32", "--set", "model.windows=true", "--set", "model.window_length=6",
           "--set", "model.window_stride=2"]


@pytest.mark.parametrize("windows", [False, True])
def test_two_gloo_processes_match_one_process(run_config, tmp_path, windows):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    common = COMMON + (WINDOWS if windows else [])
    _train([sys.executable, "-m", "hmtc", "train", str(run_config), "--out", str(single), *common])
    out = _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  "-m", "hmtc", "train", str(run_config), "--out", str(ddp), *common])
    assert "2 processes" in out
    a = safetensors.torch.load_file(str(single / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(ddp / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    # Adam turns float noise in near-zero gradients into steps of about lr (reduction order
    # differs between one and two processes), so single elements may differ by ~lr; on average
    # the weights agree far more closely than any two differently-trained models would.
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    moved = torch.cat([(a[k] - b[k]).abs().flatten() * 0 + a[k].abs().flatten() for k in a])
    assert diff.mean() < 1e-3 and diff.mean() < 0.01 * moved.mean()
    ha = json.loads((single / "last" / "train_state.json").read_text())["history"]
    hb = json.loads((ddp / "last" / "train_state.json").read_text())["history"]
    assert len(ha) == len(hb) == 2
    for ea, eb in zip(ha, hb):
        assert abs(ea["train_loss"] - eb["train_loss"]) < 0.01 * ea["train_loss"]
        assert abs(ea["dev_micro_f1"] - eb["dev_micro_f1"]) < 0.02
