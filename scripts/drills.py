"""Faults under load, as drills (issue 35 item 3): what a user's machine does to a run, done on
purpose to the tiny test model, each drill's outcome written to a record.

1. ``seeds-kill``: ``hmtc train CFG --seeds 0,1,2`` killed with SIGKILL while its second seed
   trains, then ``--resume``: every seed's best weights and test figures equal those of an
   uninterrupted set.
2. ``serve-folder``: 32 clients post to ``hmtc serve RUN`` while the run folder is renamed away
   and replaced by another run, then has its weights truncated: every request is answered 200
   with the answer it got before the folder changed (the server holds what it loaded), and
   ``/ready``, ``/health`` and ``/taxonomy`` keep answering. The folder is replaced once a third
   of the requests are answered and damaged at two thirds, the rest in flight.
3. ``predict-sigterm``: ``hmtc predict RUN --input BIG --output OUT`` sent SIGTERM mid-stream: OUT
   is either absent or whole (never a partial file), and no temporary file is left beside it.

    python scripts/drills.py --out experiments/drills.json

Exit status 1 when a drill fails; the record says which and why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from hmtc.io import atomic_write_json
from hmtc.record import git_commit, machine_info
from hmtc.testing import make_texts, tiny_config_text, tiny_dataset, tiny_encoder

HMTC = [sys.executable, "-m", "hmtc"]
FIGURES = ("micro_f1", "macro_f1", "leaf_micro_f1", "leaf_macro_f1")


def run(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*HMTC, *args], cwd=cwd, capture_output=True, text=True, **kw)


def figures(folder: Path) -> dict:
    return {k: json.loads((folder / "metrics.json").read_text())["test"][k] for k in FIGURES}


def seeds_kill(work: Path, cfg: Path) -> dict:
    """Kill a --seeds set in its second seed and resume it; compare with an uninterrupted set."""
    seeds = "0,1,2"
    done = run("train", str(cfg), "--seeds", seeds, "--out", "runs/whole", "--quiet", cwd=work)
    if done.returncode:
        return {"ok": False, "why": f"the uninterrupted set failed: {done.stderr.strip()[-300:]}"}
    proc = subprocess.Popen([*HMTC, "train", str(cfg), "--seeds", seeds, "--out", "runs/killed", "--quiet"],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = work / "runs" / "killed" / "seed-1" / "last" / "train_state.json"
    deadline = time.time() + 300
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        return {"ok": False, "why": "the set finished before its second seed could be killed"}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_at_kill = json.loads(marker.read_text())["epoch"]
    resumed = run("train", str(cfg), "--seeds", seeds, "--out", "runs/killed", "--resume", "--quiet", cwd=work)
    if resumed.returncode:
        return {"ok": False, "why": f"--resume failed: {resumed.stderr.strip()[-300:]}"}
    diffs = []
    for s in (0, 1, 2):
        a, b = work / "runs" / "whole" / f"seed-{s}", work / "runs" / "killed" / f"seed-{s}"
        if (a / "best" / "model.safetensors").read_bytes() != (b / "best" / "model.safetensors").read_bytes():
            diffs.append(f"seed {s}: best weights differ")
        if figures(a) != figures(b):
            diffs.append(f"seed {s}: test figures differ ({figures(a)} vs {figures(b)})")
    return {"ok": not diffs, "killed_in": "seed 1", "epoch_at_kill": epoch_at_kill, "differences": diffs,
            "seed_figures": {s: figures(work / "runs" / "killed" / f"seed-{s}") for s in (0, 1, 2)}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, texts: list[str]) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"texts": texts}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:200]
    except OSError as e:
        return 0, str(e)


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def serve_folder(work: Path, cfg: Path, clients: int = 32, rounds: int = 6) -> dict:
    """32 clients on hmtc serve while its run folder is replaced, then damaged."""
    other = run("train", str(cfg), "--out", "runs/other", "--quiet", "--set", "train.seed=5", cwd=work)
    if other.returncode:
        return {"ok": False, "why": f"training the replacement failed: {other.stderr.strip()[-300:]}"}
    port = free_port()
    server = subprocess.Popen([*HMTC, "serve", "runs/whole/seed-0", "--port", str(port)], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while get(port, "/ready") != 200:
            if server.poll() is not None or time.time() > deadline:
                return {"ok": False, "why": f"the server never became ready: {server.stderr.read()[-300:]}"}
            time.sleep(0.2)
        texts = [row["text"] for row in make_texts(clients, 11)]
        before = {t: post(port, [t])[1] for t in texts}
        results: list[tuple[str, int, object]] = []
        lock = threading.Lock()
        phase = {"now": "steady"}

        def client(text: str) -> None:
            for _ in range(rounds):
                code, body = post(port, [text])
                with lock:
                    results.append((phase["now"], code, body == before[text]))

        threads = [threading.Thread(target=client, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        run_dir = work / "runs" / "whole" / "seed-0"
        total = clients * rounds

        def wait_for(share: float) -> None:      # a share of the requests answered, the rest in flight
            while len(results) < share * total and any(t.is_alive() for t in threads):
                time.sleep(0.01)

        wait_for(1 / 3)
        phase["now"] = "replaced"
        run_dir.rename(work / "runs" / "whole" / "seed-0.moved")
        (work / "runs" / "other").rename(run_dir)
        probes = {p: get(port, p) for p in ("/ready", "/health", "/taxonomy")}
        wait_for(2 / 3)
        phase["now"] = "damaged"
        weights = run_dir / "best" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        probes |= {f"{p} (damaged)": get(port, p) for p in ("/ready", "/health", "/taxonomy")}
        for t in threads:
            t.join()
        after = [post(port, [t])[1] == before[t] for t in texts]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    by_phase = {}
    for ph, code, same in results:
        d = by_phase.setdefault(ph, {"requests": 0, "ok_200": 0, "same_answer": 0})
        d["requests"] += 1
        d["ok_200"] += code == 200
        d["same_answer"] += bool(same)
    ok = (all(d["ok_200"] == d["requests"] == d["same_answer"] for d in by_phase.values()) and all(after)
          and all(code == 200 for code in probes.values()))
    return {"ok": ok, "clients": clients, "requests": len(results), "by_phase": by_phase, "probes": probes,
            "answers_after_unchanged": all(after), "server_exit": server.returncode}


def predict_sigterm(work: Path, n: int = 20000) -> dict:
    """SIGTERM to hmtc predict --output while it writes: no partial output, no temporary file."""
    src = work / "big.txt"
    src.write_text("".join(f"{row['text']} {i}\n" for i, row in enumerate(make_texts(n, 3))), encoding="utf-8")
    out = work / "out" / "pred.jsonl"
    out.parent.mkdir()
    proc = subprocess.Popen([*HMTC, "predict", "runs/whole/seed-1", "--input", str(src), "--output", str(out)],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)
    if proc.poll() is not None:
        return {"ok": False, "why": f"predict ended before SIGTERM (exit {proc.returncode}); use more texts"}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    left = sorted(p.name for p in out.parent.iterdir())
    whole = out.is_file() and len(out.read_text(encoding="utf-8").splitlines()) == n
    ok = (not out.exists() or whole) and left in ([], [out.name])
    return {"ok": ok, "exit": proc.returncode, "output_exists": out.exists(), "output_whole": whole,
            "files_left": left, "stderr_tail": proc.stderr.read().strip()[-200:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=6, help="epochs of each tiny seed")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"error: {out}: exists; a record is never overwritten")
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, enc = tiny_dataset(work / "data"), tiny_encoder(work / "enc")
        cfg = work / "tiny.toml"
        cfg.write_text(tiny_config_text(data, enc, work).replace("epochs = 2", f"epochs = {args.epochs}"),
                       encoding="utf-8")
        os.environ["OMP_NUM_THREADS"] = "1"          # tiny models: threads only add noise beside other work
        drills = {}
        for name, fn in (("seeds-kill", lambda: seeds_kill(work, cfg)), ("serve-folder", lambda: serve_folder(work, cfg)),
                         ("predict-sigterm", lambda: predict_sigterm(work))):
            t0 = time.time()
            drills[name] = fn() | {"seconds": round(time.time() - t0, 1)}
            print(name, json.dumps(drills[name])[:400], flush=True)
    record = {"command": shlex.join(["python", *sys.argv]), "git_commit": git_commit(), "machine": machine_info(),
              "python": platform.python_version(), "seconds": round(time.time() - started, 1),
              "ok": all(d["ok"] for d in drills.values()), "drills": drills}
    atomic_write_json(out, record)
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
