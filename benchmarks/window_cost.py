"""What a long text costs with windows (model.windows): MSML texts/s and peak memory by length.

    python benchmarks/window_cost.py [--encoder FOLDER] [--lengths 256,512,1024,2048] [--stride 0]
                                     [--out experiments/window-cost.json]

An untrained MSML model (default options) over the given encoder, or the tiny random BERT of the
tests (64 positions) when none is given, with ``data.max_length`` the longest length and
``model.windows`` on, reads texts of exactly L tokens (random content ids between the tokenizer's
own [CLS] and [SEP]); a text that fits one window takes the plain path, as it would in a run.

- Time, in one process, the lengths interleaved round by round: texts per CPU second of the
  process (one thread by default), the best round of inference (``score_ids``) and the best
  training step (forward, backward, AdamW). Batches hold ``--batch-tokens`` tokens (64 texts of
  256, 8 of 2,048): a CPU's cost per token grows with the size of a batch's tensors (they leave
  the caches), and an equal token count keeps that apart from the cost of length.
- Memory, in a fresh process per length and part: the peak resident memory above what the process
  held before (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) while scoring, or training
  on, one batch of ``--batch-size`` texts.

Ratios are to the first length: time per text and peak memory should grow at most linearly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hmtc.config import DataConfig, ModelConfig, RunConfig
from hmtc.io import atomic_write_json
from hmtc.models import create_model
from hmtc.record import git_commit, machine_info, now
from hmtc.taxonomy import Taxonomy
from hmtc.testing import TAXONOMY, tiny_encoder


def _rss_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split(field + ":")[1].split()[0])


def _reset_peak() -> int:
    """Reset the peak to the current resident size; return that size (KiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kib("VmRSS")


class Bench:
    """The model, random texts of a given length, and one training step."""

    def __init__(self, args):
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        cfg = RunConfig("window-cost", data=DataConfig(max_length=max(args.lengths)),
                        model=ModelConfig(name="msml", encoder=args.encoder, windows=True,
                                          window_length=args.window_length, window_stride=args.stride))
        self.index = Taxonomy.parse(TAXONOMY).compile()
        self.model = create_model(cfg, self.index)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-5)
        self.bf16 = args.bf16

    def texts(self, length: int, n: int) -> list[list[int]]:
        tok = self.model.tokenizer
        cls, sep = tok("")["input_ids"]
        g = torch.Generator().manual_seed(length)
        # content ids: any but the special tokens (XLM-R's <mask> is its last id, BERT's [MASK] is low)
        content = torch.ones(len(tok), dtype=torch.bool)
        content[tok.all_special_ids] = False
        ids = content.nonzero().squeeze(1)
        return [[cls, *ids[torch.randint(len(ids), (length - 2,), generator=g)].tolist(), sep] for _ in range(n)]

    def windows(self, length: int) -> int:
        one = torch.tensor(self.texts(length, 1))
        w = self.model.windows
        return 1 if w is None or length <= w.length else len(w.cut(one, torch.ones_like(one)).mask)

    def score(self, ids: list[list[int]], batch_size: int) -> None:
        self.model.eval().score_ids(ids, batch_size, self.bf16)

    def step(self, ids: list[list[int]]) -> None:
        self.model.train()
        x = torch.tensor(ids)
        labels = torch.zeros(len(ids), self.index.n_nodes)
        labels[:, 0] = 1
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(x, torch.ones_like(x), labels=labels).loss
        loss.backward()
        self.opt.step()


def time_lengths(args) -> dict:
    """Texts per CPU second of inference and training at every length."""
    bench = Bench(args)
    sets = {n: bench.texts(n, args.batches * max(1, args.batch_tokens // n)) for n in args.lengths}
    best = {(n, part): float("inf") for n in args.lengths for part in ("infer", "train")}
    for r in range(args.rounds + 1):                     # round 0 warms up
        # CPU time of this process: another job on a shared machine adds waiting to wall time;
        # the order alternates so that drift in the machine's speed favours no length
        for n in args.lengths if r % 2 else args.lengths[::-1]:
            per_batch = len(sets[n]) // args.batches
            t0 = time.process_time()
            bench.score(sets[n], per_batch)
            t1 = time.process_time()
            bench.step(sets[n][:per_batch])
            t2 = time.process_time()
            if r:
                best[n, "infer"] = min(best[n, "infer"], (t1 - t0) / len(sets[n]))
                best[n, "train"] = min(best[n, "train"], (t2 - t1) / per_batch)
    return {str(n): {"windows": bench.windows(n), "infer_texts_s": 1 / best[n, "infer"],
                     "train_texts_s": 1 / best[n, "train"]} for n in args.lengths}


def peak_mib(args, length: int, part: str) -> float:
    """Peak resident memory (MiB) above the loaded model while scoring or training on one batch."""
    bench = Bench(args)
    ids = bench.texts(length, args.batch_size)
    base = _reset_peak()
    bench.score(ids, len(ids)) if part == "infer" else bench.step(ids)    # training: AdamW's state included
    return (_rss_kib("VmHWM") - base) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="", help="encoder name or folder (default: the tests' tiny BERT)")
    ap.add_argument("--lengths", default="256,512,1024,2048")
    ap.add_argument("--window-length", type=int, default=0, help="model.window_length (0: the encoder's positions)")
    ap.add_argument("--stride", type=int, default=0, help="model.window_stride")
    ap.add_argument("--batch-tokens", type=int, default=16384, help="tokens per timed batch")
    ap.add_argument("--batches", type=int, default=4, help="timed inference batches per round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (the best counts)")
    ap.add_argument("--batch-size", type=int, default=8, help="texts of the batch whose peak memory is read")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--out", type=Path, help="also record the rows here (JSON) with the command, commit and machine")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out record")
    ap.add_argument("--part", default="", help=argparse.SUPPRESS)      # a child: "time" or "<infer|train>:<L>"
    args = ap.parse_args()
    args.lengths = [int(n) for n in str(args.lengths).split(",")]
    if args.out and args.out.exists() and not args.overwrite:     # checked before minutes of timing
        ap.error(f"{args.out}: a record is already there; pass --overwrite to replace it")
    if args.part:
        part, _, length = args.part.partition(":")
        print(json.dumps(time_lengths(args) if part == "time" else peak_mib(args, int(length), part)))
        return
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = args.encoder
        args.encoder = args.encoder or str(tiny_encoder(Path(tmp) / "tiny-bert"))
        child = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k not in ("lengths", "part", "bf16", "out", "overwrite")]
        child += ["--bf16"] * args.bf16 + [f"--lengths={','.join(map(str, args.lengths))}"]

        def run(part: str):
            out = subprocess.run([sys.executable, __file__, *child, f"--part={part}"], capture_output=True, text=True,
                                 check=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        rows = run("time")
        for n in args.lengths:              # a fresh process each: its own peak
            rows[str(n)].update(infer_peak_mib=run(f"infer:{n}"), train_peak_mib=run(f"train:{n}"))
    first = rows[str(args.lengths[0])]
    print(f"{'tokens':>6} {'windows':>7} | {'infer texts/s':>13} {'time ×':>6} {'train texts/s':>13} {'time ×':>6} | "
          f"{'infer peak +MiB':>15} {'×':>5} {'train peak +MiB':>15} {'×':>5}")
    for n in args.lengths:
        r = rows[str(n)]
        print(f"{n:>6} {r['windows']:>7} | {r['infer_texts_s']:>13.1f} "
              f"{first['infer_texts_s'] / r['infer_texts_s']:>6.2f} {r['train_texts_s']:>13.1f} "
              f"{first['train_texts_s'] / r['train_texts_s']:>6.2f} | {r['infer_peak_mib']:>15.1f} "
              f"{r['infer_peak_mib'] / first['infer_peak_mib']:>5.2f} {r['train_peak_mib']:>15.1f} "
              f"{r['train_peak_mib'] / first['train_peak_mib']:>5.2f}")
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k not in ("part", "out", "overwrite")} | {"encoder": encoder or "tiny"}
        atomic_write_json(args.out, {"command": "python " + " ".join(sys.argv), "git_commit": git_commit(),
                                     "date": now(), "machine": machine_info(), "seconds": round(time.time() - started),
                                     "settings": settings, "rows": rows})


if __name__ == "__main__":
    main()
