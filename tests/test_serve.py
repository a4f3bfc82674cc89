"""``hmtc serve`` over a real socket: uvicorn on a free loopback port, a tiny trained checkpoint,
real HTTP requests; predictions, health, taxonomy, limits, bad bodies and micro-batching."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn

from hmtc.calibration import calibrated
from hmtc.config import load_config
from hmtc.evaluate import evaluate_run
from hmtc.predict import predict_texts
from hmtc.errors import HmtcError
from hmtc.serve import Limits, check_server, create_app, load_served, score_texts
from hmtc.train import Trainer

from conftest import tiny_config_text

TEXTS = ["meow kitten here", "oak leaf today", "rose petal thorn and a puppy", "dog bark", ""]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_encoder, tiny_dataset):
    folder = tmp_path_factory.mktemp("serve")
    (folder / "tiny.toml").write_text(tiny_config_text(tiny_dataset, tiny_encoder, folder), encoding="utf-8")
    cfg = load_config(folder / "tiny.toml", ["train.epochs=1", "train.record_dir=''"])
    run = Trainer(cfg, folder / "run", quiet=True).fit()
    evaluate_run(run, quiet=True)
    return run


@pytest.fixture(scope="module")
def ckpt(tiny_run):
    return load_served(tiny_run, threads=1)


class Server:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app):
        self.app = app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve(ckpt):
    servers = []

    def start(**limits) -> Server:
        servers.append(Server(create_app(ckpt, Limits(**limits))))
        return servers[-1]
    yield start
    for s in servers:
        s.stop()


def request(url: str, body=None, raw: bytes | None = None, headers: dict | None = None,
            with_headers: bool = False) -> tuple:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out = r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        out = e.code, json.loads(e.read() or b"null"), e.headers
    return out if with_headers else out[:2]


def get_text(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


def test_predict_matches_in_process(serve, ckpt):
    s = serve()
    status, out = request(s.url + "/predict", {"texts": TEXTS})
    assert status == 200
    expected = [{k: v for k, v in row.items() if k != "text"} for row in predict_texts(ckpt, TEXTS)]
    assert out["predictions"] == expected
    assert all("top_k" not in p and "all_scores" not in p for p in out["predictions"])

    status, out = request(s.url + "/predict", {"texts": TEXTS, "top_k": 3, "all_scores": True})
    assert status == 200
    assert out["predictions"][-1]["top_k"] == [] and out["predictions"][-1]["all_scores"] == {}
    for p in out["predictions"][:-1]:
        assert [t["level"] for t in p["top_k"]] == [1, 2] and list(p["all_scores"]) == list(ckpt.index.ids)
        for level, sl in zip(p["top_k"], ckpt.index.level_slices):      # the k best of each level, best first
            top = [t["score"] for t in level["nodes"]]
            assert len(top) == min(3, sl.stop - sl.start) and top == sorted(top, reverse=True)
            assert top[0] == max(list(p["all_scores"].values())[sl])
        for node, score in p["scores"].items():
            assert p["all_scores"][node] == score
    status, out = request(s.url + "/predict", {"texts": []})
    assert status == 200 and out["predictions"] == []


def test_rows_keep_their_scores_around_unscored_texts(ckpt):
    texts = ["cat meow", "", "cat meow", "  ", "oak"]
    rows = score_texts(ckpt, texts)
    assert [row.get("empty") is not None for row, _ in rows] == [False, True, False, True, False]
    assert rows[1][1] is None and rows[3][1] is None
    expected = calibrated(ckpt.scores(["cat meow", "oak"]), ckpt.decode.get("temperatures"), ckpt.index)
    for i, j in ((0, 0), (2, 0), (4, 1)):
        np.testing.assert_allclose(rows[i][1], expected[j], rtol=1e-4, atol=1e-6)


def test_health_taxonomy_and_docs(serve, ckpt):
    s = serve(max_texts=7)
    status, health = request(s.url + "/health")
    assert status == 200 and health["status"] == "ok" and health["nodes"] == ckpt.index.n_nodes
    assert health["model"] == "msml" and health["engine"] == "torch" and health["limits"]["max_texts"] == 7
    status, tax = request(s.url + "/taxonomy")
    assert status == 200 and tax["root"] == "ROOT"
    assert [n["id"] for n in tax["nodes"]] == list(ckpt.index.ids)
    cat = next(n for n in tax["nodes"] if n["id"] == "animal-cat")
    assert cat == {"id": "animal-cat", "name": "cat", "level": 2, "parents": ["animal"], "leaf": True}
    status, spec = request(s.url + "/openapi.json")
    assert status == 200 and {"/predict", "/health", "/taxonomy"} <= set(spec["paths"])
    with urllib.request.urlopen(s.url + "/docs", timeout=30) as r:
        assert r.status == 200 and b"swagger" in r.read().lower()


def test_limits(serve):
    s = serve(max_texts=4, max_chars=50)
    status, out = request(s.url + "/predict", {"texts": ["cat"] * 5})
    assert status == 413 and out["limit"] == "max_texts" and out["max"] == 4 and "5 texts" in out["detail"]
    status, out = request(s.url + "/predict", {"texts": ["cat", "x" * 51]})
    assert status == 422 and out["limit"] == "max_chars" and out["max"] == 50 and "text 1" in out["detail"]
    assert request(s.url + "/predict", {"texts": ["x" * 50] * 4})[0] == 200
    big = Limits(max_texts=4, max_chars=50).max_body_bytes
    status, out = request(s.url + "/predict", raw=b" " * (big + 1))
    assert status == 413 and out["limit"] == "max_body_bytes" and out["max"] == big
    # a chunked body declares no length: it is counted as it arrives
    conn = http.client.HTTPConnection(*s.url.removeprefix("http://").split(":"), timeout=30)
    chunks = [b'{"texts": ["', *[b"x" * 1000] * (big // 1000 + 1), b'"]}']
    conn.request("POST", "/predict", body=iter(chunks), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["limit"] == "max_body_bytes"


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[1, 2]", b"null", b'{"texts": "one"}', b'{"texts": [1, 2]}', b'{"text": ["a"]}',
    b'{"texts": ["a"], "top_k": -1}', b'{"texts": ["a"], "top_k": "many"}', b'{"texts": ["a"], "extra": 1}',
    b'{"texts": ["\\ud800"]}', b'{"texts": [null]}', b'\xff\xfe', b'{"texts": ["a"]',
    b'{"texts": ["a"], "all_scores": {"path": "/etc/passwd"}}', b'{"texts": ["a"], "top_k": NaN}',
    b'{"texts": ["a"], "top_k": Infinity}', b'{"texts": ["a"], "top_k": 1.5}', b'{"inputs": 1}', b'{}',
    b'{"texts": ["a"], "inputs": "b"}', b'{"inputs": [null]}', b'{"inputs": ["a"], "top_k": -Infinity}'])
def test_bad_bodies_are_4xx(serve, raw):
    s = serve()
    status, out = request(s.url + "/predict", raw=raw)
    assert 400 <= status < 500, (status, out)


def test_wrong_content_type_is_4xx(serve):
    s = serve()
    status, _ = request(s.url + "/predict", raw=b'{"texts": ["a"]}', headers={"Content-Type": "text/plain"})
    assert 400 <= status < 500


def test_concurrent_requests_are_batched(serve, ckpt):
    s = serve(max_batch=32, max_wait_ms=400)
    before = request(s.url + "/health")[1]["scoring_calls"]
    texts = [f"{a} {b}" for a in ("cat", "dog", "oak", "rose") for b in ("meow", "bark", "leaf", "petal")]
    start = threading.Barrier(len(texts))

    def one(text):
        start.wait()
        return request(s.url + "/predict", {"texts": [text]})

    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(one, texts))
    assert all(status == 200 for status, _ in answers)
    expected = [{k: v for k, v in row.items() if k != "text"} for row in predict_texts(ckpt, texts)]
    assert [out["predictions"][0] for _, out in answers] == expected
    health = request(s.url + "/health")[1]
    calls = health["scoring_calls"] - before
    assert 1 <= calls < len(texts) / 2, calls
    assert health["texts_scored"] >= len(texts)


def test_large_request_is_split_into_batches(serve, ckpt):
    s = serve(max_batch=4, max_wait_ms=0)
    texts = [f"cat {i}" for i in range(10)]
    status, out = request(s.url + "/predict", {"texts": texts})
    assert status == 200 and len(out["predictions"]) == 10
    assert request(s.url + "/health")[1]["scoring_calls"] == 3


def test_cli_serve(tiny_run):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "hmtc", "serve", str(tiny_run), "--port", str(port),
                             "--max-texts", "2", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                status, health = request(url + "/health")
                break
            except urllib.error.URLError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
                time.sleep(0.2)
        assert status == 200 and health["limits"]["max_texts"] == 2
        status, out = request(url + "/predict", {"texts": ["cat meow", "oak"]})
        assert status == 200 and len(out["predictions"]) == 2
        assert request(url + "/predict", {"texts": ["a", "b", "c"]})[0] == 413
    finally:
        proc.terminate()
        proc.wait(30)


def test_missing_run_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hmtc", "serve", str(tmp_path / "nothing")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "neither a run folder" in r.stderr and "Traceback" not in r.stderr


def test_inputs_key_as_in_hf_pipelines(serve, ckpt):
    s = serve()
    expected = request(s.url + "/predict", {"texts": ["cat meow", "oak"]})[1]["predictions"]
    assert request(s.url + "/predict", {"inputs": ["cat meow", "oak"]})[1]["predictions"] == expected
    assert request(s.url + "/predict", {"inputs": "cat meow"})[1]["predictions"] == expected[:1]
    status, out = request(s.url + "/predict", {"texts": ["a"], "inputs": "b"})
    assert status == 422 and "not both" in json.dumps(out)


def test_nan_is_a_422_that_says_where(serve):
    s = serve()
    status, out = request(s.url + "/predict", raw=b'{"texts": ["a"], "top_k": NaN}')
    assert status == 422 and out["detail"][0]["loc"] == ["body", "top_k"], out


def test_every_response_names_the_model(serve, ckpt, tiny_run):
    import hashlib
    s = serve()
    digest = hashlib.sha256(ckpt.taxonomy.dumps().encode()).hexdigest()
    commit = json.loads((tiny_run / "run.json").read_text())["git_commit"]
    status, out, headers = request(s.url + "/predict", {"texts": ["cat"]}, with_headers=True)
    assert out["model"] == {"run": ckpt.config.name, "git_commit": commit, "taxonomy_sha256": digest,
                            "hmtc_version": __import__("hmtc").__version__}
    assert headers["X-Hmtc-Taxonomy"] == digest and headers["X-Hmtc-Commit"] == commit
    status, health, headers = request(s.url + "/health", with_headers=True)
    assert health["served"] == out["model"] and headers["X-Hmtc-Run"] == ckpt.config.name
    assert request(s.url + "/nowhere", with_headers=True)[2]["X-Hmtc-Taxonomy"] == digest


def test_ready_after_warm_up_and_metrics(serve):
    s = serve(max_batch=8)
    deadline = time.time() + 60
    while (answer := request(s.url + "/ready"))[0] != 200:
        assert answer[0] == 503 and answer[1]["status"] == "not ready" and time.time() < deadline, answer
        time.sleep(0.05)
    assert answer == (200, {"status": "ready"})
    assert request(s.url + "/health")[1]["scoring_calls"] == 0          # the warm-up is not counted
    for _ in range(2):
        assert request(s.url + "/predict", {"texts": ["cat", "dog", "oak"]})[0] == 200
    status, text = get_text(s.url + "/metrics")
    assert status == 200
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert series['hmtc_requests_total{path="/predict",status="200"}'] == 2
    assert series["hmtc_texts_scored_total"] == 6 and series["hmtc_batch_texts_count"] == 2
    assert series['hmtc_batch_texts_bucket{le="2.0"}'] == 0 and series['hmtc_batch_texts_bucket{le="4.0"}'] == 2
    assert series['hmtc_request_seconds_count{path="/predict"}'] == 2 and series["hmtc_queue_texts"] == 0


def test_a_full_queue_answers_429_with_retry_after(serve):
    s = serve(max_batch=32, max_wait_ms=3000, max_texts=4, max_queue=4)
    first = threading.Thread(target=request, args=(s.url + "/predict", {"texts": ["cat", "dog", "oak"]}))
    first.start()
    deadline = time.time() + 30
    while request(s.url + "/health")[1]["queued"] < 3:      # the first request waits for company
        assert time.time() < deadline
        time.sleep(0.02)
    status, out, headers = request(s.url + "/predict", {"texts": ["rose", "leaf"]}, with_headers=True)
    assert status == 429 and out["limit"] == "max_queue" and out["max"] == 4
    assert int(headers["Retry-After"]) >= 1
    assert request(s.url + "/predict", {"texts": ["rose"]})[0] == 200     # one more still fits
    first.join(30)


def test_docs_render_from_local_assets(serve):
    s = serve()
    for page in ("/docs", "/redoc"):
        status, html = get_text(s.url + page)
        assert status == 200 and "cdn" not in html.lower()
        scripts = [part.split('"')[0] for part in html.split('src="')[1:]]
        assert scripts and all(src.startswith("/") for src in scripts), scripts
        for src in scripts:
            status, body = get_text(s.url + src)
            assert status == 200 and len(body) > 100_000         # the real bundle, not an error page


@pytest.mark.parametrize("limits, message", [
    ({"max_wait_ms": float("inf")}, "max_wait_ms"), ({"max_wait_ms": float("nan")}, "max_wait_ms"),
    ({"max_wait_ms": -1}, "max_wait_ms"), ({"max_queue": 10, "max_texts": 20}, "max_queue"),
    ({"max_batch": 0}, "max_batch"), ({"max_texts": 2.5}, "max_texts")])
def test_limits_are_checked(limits, message):
    with pytest.raises(HmtcError, match=message):
        Limits(**limits)


@pytest.mark.parametrize("args, message", [
    (("127.0.0.1", 70000, 0, "warning"), "port"), (("127.0.0.1", -1, 0, "warning"), "port"),
    (("127.0.0.1", 8000, -2, "warning"), "threads"), (("127.0.0.1", 8000, 0, "loud"), "log level"),
    (("", 8000, 0, "warning"), "host")])
def test_server_options_are_checked(args, message):
    with pytest.raises(HmtcError, match=message):
        check_server(*args)


@pytest.mark.parametrize("flags", [["--port", "70000"], ["--threads", "-2"], ["--max-wait-ms", "inf"],
                                   ["--log-level", "loud"]])
def test_cli_serve_refuses_bad_options_in_one_line(tiny_run, flags):
    r = subprocess.run([sys.executable, "-m", "hmtc", "serve", str(tiny_run), *flags],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
