"""Cold starts, each a fresh process as a user meets it: ``from hmtc import HierarchicalClassifier``
and ``hmtc predict RUN "text"`` (per engine), median wall time and peak memory of --repeat runs.

    python benchmarks/cold_start.py runs/quickstart [--engine torch --engine onnx-int8] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hmtc.record import git_commit, machine_info


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; it must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)          # this child's own resource usage
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024               # KB on Linux


def measure(cmd: list[str], repeat: int) -> dict:
    runs = [timed(cmd) for _ in range(repeat)]
    return {"command": " ".join(cmd), "median_s": round(statistics.median(w for w, _ in runs), 2),
            "runs_s": [round(w, 2) for w, _ in runs], "peak_rss_mb": round(max(m for _, m in runs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--engine", action="append", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--text", default="雀巢裁员4000人")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"import": measure([sys.executable, "-c", "from hmtc import HierarchicalClassifier"], args.repeat)}
    for engine in args.engine or ["torch"]:
        out[f"predict {engine}"] = measure([sys.executable, "-m", "hmtc", "predict", args.run, args.text,
                                            "--engine", engine], args.repeat)
    out |= {"run": args.run, "git_commit": git_commit(), "machine": machine_info()}
    text = json.dumps(out, indent=2, ensure_ascii=False)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
