"""Load test of ``hmtc serve`` on loopback, next to in-process prediction on the same checkpoint.

Starts ``hmtc serve RUN`` on 127.0.0.1 (a free port), then for each number of concurrent
clients sends one-text requests over keep-alive connections until ``--requests`` are answered
or ``--time-limit`` seconds pass, and reports throughput, p50 / p99 latency and the mean texts
per scoring call (the micro-batching at work). In-process figures, measured first: ``predict``
over all the texts in one call (throughput) and one text at a time (latency).

    python benchmarks/load_serve.py runs/duee-msml [--engine onnx-int8] [--clients 1,8,32]
        [--requests 200] [--time-limit 60] [--input texts.jsonl] [--max-batch 32] [--max-wait-ms 5]
        [--max-queue 1024] [--max-texts 256] [--json]

Texts: ``--input`` (a .jsonl with a "text" key, or one text per line), else a few built-in ones.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hmtc.io import atomic_write_json
from hmtc.record import git_commit, machine_info, now

from hmtc.predict import predict_texts
from hmtc.serve import load_served

SAMPLE = ["the kitten was very small", "a puppy would bark today", "petal and thorn of a rose",
          "an oak leaf is here", "雀巢裁员4000人", "Apple 发布新款手机", "the big dog and the small cat",
          "a rose under the oak tree"]


def read_input(path: Path, limit: int) -> list[str]:
    """Up to ``limit`` non-blank texts: a .jsonl file's "text" fields, else its lines."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if len(out) >= limit:
                break
            if line.strip():
                out.append(json.loads(line)["text"] if path.suffix == ".jsonl" else line.rstrip("\n"))
    return out


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def in_process(run: str, engine: str, threads: int, texts: list[str], time_limit: float) -> list[dict]:
    """``predict`` in this process: all texts in one call, then one text per call."""
    ckpt = load_served(run, engine, threads)
    list(predict_texts(ckpt, texts[:8]))                     # warm-up
    t0 = time.perf_counter()
    list(predict_texts(ckpt, texts))
    bulk = time.perf_counter() - t0
    latencies, stop = [], time.perf_counter() + time_limit
    for text in texts:
        if time.perf_counter() > stop:
            break
        t = time.perf_counter()
        list(predict_texts(ckpt, [text]))
        latencies.append(time.perf_counter() - t)
    single = sum(latencies)
    return [{"mode": "in-process, one call", "clients": 1, "requests": 1, "texts": len(texts),
             "seconds": round(bulk, 2), "texts_per_s": round(len(texts) / bulk, 1)},
            {"mode": "in-process, one text a call", "clients": 1, "requests": len(latencies),
             "texts": len(latencies), "seconds": round(single, 2),
             "texts_per_s": round(len(latencies) / single, 1), **percentiles(latencies)}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hmtc", "serve", args.run, "--host", "127.0.0.1", "--port", str(port),
           "--engine", args.engine, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--threads", str(args.threads), "--max-queue", str(args.max_queue),
           "--max-texts", str(args.max_texts)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + args.start_timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/ready")                # 200 once the warm-up text is scored
            if conn.getresponse().status == 200:
                return proc
            time.sleep(0.2)
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise SystemExit(f"the server did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)


def load(port: int, clients: int, texts: list[str], requests: int, time_limit: float) -> dict:
    """``clients`` threads, each on its own keep-alive connection, until ``requests`` are sent or
    ``time_limit`` passes."""
    source, lock = itertools.cycle(texts), threading.Lock()
    sent, latencies, errors, rejected = [0], [], [0], [0]
    stop = time.perf_counter() + time_limit

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if sent[0] >= requests or time.perf_counter() > stop:
                    return
                sent[0] += 1
                body = json.dumps({"texts": [next(source)]})
            t = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            with lock:
                latencies.append(time.perf_counter() - t)
                rejected[0] += r.status == 429          # the queue was full: answered at once, not scored
                errors[0] += r.status not in (200, 429)

    before = get(port, "/health")
    t0 = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(clients)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    seconds = time.perf_counter() - t0
    after = get(port, "/health")
    calls = after["scoring_calls"] - before["scoring_calls"]
    return {"mode": "hmtc serve", "clients": clients, "requests": len(latencies),
            "texts": len(latencies) - rejected[0], "rejected_429": rejected[0], "errors": errors[0],
            "seconds": round(seconds, 2), "texts_per_s": round((len(latencies) - rejected[0]) / seconds, 1),
            **percentiles(latencies),
            "texts_per_scoring_call": round((after["texts_scored"] - before["texts_scored"]) / max(1, calls), 2)}


def table(rows: list[dict]) -> str:
    cols = ["mode", "clients", "requests", "texts", "seconds", "texts_per_s", "p50_ms", "p99_ms", "texts_per_scoring_call",
            "rejected_429", "errors"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder (uses best/) or checkpoint folder")
    p.add_argument("--engine", default="torch", help="torch, onnx or onnx-int8")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    p.add_argument("--requests", type=int, default=200, help="requests per client count (and in-process texts)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per measurement at most")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds the server may take to start")
    p.add_argument("--input", type=Path, help="texts: .jsonl with a text key, or one per line")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=1024, help="the server's queue cap (more: 429)")
    p.add_argument("--max-texts", type=int, default=256, help="the server's texts per request (at most max-queue)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the server and of in-process predict")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", type=Path, help="also record the rows here (JSON) with the command, commit and machine")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out record")
    args = p.parse_args()
    if args.out and args.out.exists() and not args.overwrite:
        p.error(f"{args.out}: a record is already there; pass --overwrite to replace it")
    command = " ".join(["python", "benchmarks/load_serve.py", *sys.argv[1:]])
    pool = read_input(args.input, args.requests) if args.input else SAMPLE
    texts = list(itertools.islice(itertools.cycle(pool), args.requests))
    rows = in_process(args.run, args.engine, args.threads, texts, args.time_limit)
    port = free_port()
    server = start_server(args, port)
    try:
        load(port, 1, texts, 10, args.time_limit)              # warm-up
        rows += [load(port, int(c), texts, args.requests, args.time_limit) for c in args.clients.split(",")]
    finally:
        server.terminate()
        server.wait(30)
    meta = {"run": args.run, "engine": args.engine, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
            "max_queue": args.max_queue, "max_texts": args.max_texts,
            "cores": os.cpu_count()}
    print(json.dumps({**meta, "rows": rows}, ensure_ascii=False) if args.json else
          f"{json.dumps(meta)}\n{table(rows)}")
    if args.out:
        atomic_write_json(args.out, {**meta, "command": command, "git_commit": git_commit(), "date": now(),
                                     "machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
