"""``hmtc serve``: a checkpoint behind HTTP (FastAPI), concurrent requests scored together.

    POST /predict    {"texts": [...], "top_k": 0, "all_scores": false}   (or {"inputs": "a text"}
                     or {"inputs": [...]}, the key of Hugging Face pipelines)
                     -> {"predictions": [{"labels", "paths", "scores", "top_k"?, "all_scores"?}],
                         "model": {"run", "git_commit", "taxonomy_sha256", "hmtc_version"}}
    GET  /health     liveness: run, model, engine, nodes, limits, the scoring counters, the model
    GET  /ready      200 once a warm-up text has been scored, 503 before (or if it failed)
    GET  /metrics    Prometheus: requests by path and status, latencies, texts per scoring call,
                     queue depth, texts scored
    GET  /taxonomy   the nodes in column order: id, name, level, parents, leaf
    GET  /docs       OpenAPI (Swagger UI; /redoc: ReDoc), the schema at /openapi.json; their
                     scripts are served from the ``fastapi-offline`` wheel, so they render offline

Every response carries the served model in headers (``X-Hmtc-Run``, ``X-Hmtc-Commit``,
``X-Hmtc-Taxonomy``). ``labels``, ``paths`` and ``scores`` are ``hmtc predict``'s
(:func:`hmtc.predict.predict_rows`); ``top_k`` adds the k most probable nodes of each level,
decoded or not, and ``all_scores`` every node's probability (:func:`hmtc.predict.ranked`; both
empty for a text ``hmtc predict`` does not score: an empty one). Requests are micro-batched
(:class:`Batcher`): texts queue up, one worker takes up to ``max_batch`` of them, waiting at most
``max_wait_ms`` after the first for more, scores them in one call in a thread and hands every
request its rows.

Limits, each refused with a JSON ``{"detail", "limit", "max"}``: more than ``max_texts`` texts
(413), a text longer than ``max_chars`` characters (422), a body larger than those two allow
(413, before it is read), a request that would queue more than ``max_queue`` texts (429 with
``Retry-After``: the seconds the queue ahead takes at the throughput so far). A malformed body,
``NaN`` included, is a 422 that lists what is wrong. Requests name no file: the server reads only
the checkpoint it was started on. ``fastapi``, ``uvicorn``, ``fastapi-offline`` and
``prometheus-client`` come with the ``serve`` extra (``pip install 'hmtc[serve]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoint import Checkpoint, locate
from .errors import HmtcError
from .inference import pick_device
from .loading import load_for_inference
from .predict import predict_rows, ranked

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi_offline import FastAPIOffline
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as e:
    raise HmtcError(f"hmtc serve needs fastapi and uvicorn ({e.name} is missing): pip install 'hmtc[serve]'") from None


MAX_WAIT_MS = 10_000.0       # a batch that waits longer for company than this is a mistake
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask and how requests are batched.

    Parameters
    ----------
    max_batch : int
        Texts scored in one call at most.
    max_wait_ms : float
        How long the first queued text waits for others to join its call.
    max_texts : int
        Texts per request (more: 413).
    max_chars : int
        Characters per text (more: 422).
    max_queue : int
        Texts waiting to be scored at most; a request that would queue more is answered 429
        with ``Retry-After`` instead of waiting without bound. At least ``max_texts``.
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_texts: int = 256
    max_chars: int = 20000
    max_queue: int = 1024

    def __post_init__(self):
        for name in ("max_batch", "max_texts", "max_chars", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HmtcError(f"{name} must be a whole number, at least 1, not {value!r}")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:       # also refuses NaN and inf
            raise HmtcError(f"max_wait_ms must be between 0 and {MAX_WAIT_MS:g}, not {self.max_wait_ms}")
        if self.max_queue < self.max_texts:
            raise HmtcError(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts}), "
                            "or a request of max_texts texts could never be queued")

    @property
    def max_body_bytes(self) -> int:
        """The largest body a request within the limits can need: every character written as a
        12-byte JSON escape (a surrogate pair), plus room for the keys."""
        return self.max_texts * (12 * self.max_chars + 4) + 4096


class LimitExceeded(HTTPException):
    """A request over one of the :class:`Limits`; answered as ``{"detail", "limit", "max"}``."""

    def __init__(self, status: int, limit: str, maximum: int, detail: str, headers: dict | None = None):
        super().__init__(status, detail, headers)
        self.limit, self.maximum = limit, maximum


# ---- the HTTP schema --------------------------------------------------------------------------
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    texts: list[str] | None = Field(None, description="Texts to classify.")
    inputs: str | list[str] | None = Field(
        None, description="Hugging Face pipelines' key: one text or a list (instead of texts).")
    top_k: int = Field(0, ge=0, description="Also return the k most probable nodes of each level.")
    all_scores: bool = Field(False, description="Also return every node's probability.")

    @model_validator(mode="after")
    def _one_key(self) -> "PredictRequest":
        if (self.texts is None) == (self.inputs is None):
            raise ValueError("give either texts (a list) or inputs (a text or a list), not both or neither")
        return self

    def text_list(self) -> list[str]:
        if self.texts is not None:
            return self.texts
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class NodeScore(BaseModel):
    id: str
    name: str
    score: float


class LevelTop(BaseModel):
    level: int
    nodes: list[NodeScore]


class LabelClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class", description="The class the decoded set keeps (the first where it keeps none).")
    score: float = Field(description="That class's probability in the label's softmax.")
    probs: dict[str, float] = Field(description="The label's softmax over its classes.")


class Prediction(BaseModel):
    labels: list[str] = Field(description="Predicted node ids, ancestors included, always consistent.")
    paths: list[list[str]] = Field(description="Root-to-node display names of each deepest predicted node.")
    scores: dict[str, float] = Field(description="Probability of each predicted node.")
    unsure: list[str] = Field([], description="Predicted nodes not above their tuned threshold, kept only because "
                                              "decoding forces an answer (at_least_one, complete): guesses.")
    empty: str | None = Field(None, description="Why the text was not scored (an empty or blank text).")
    top_k: list[LevelTop] | None = Field(None, description="The k most probable nodes of each level.")
    classes: dict[str, LabelClass] | None = Field(None, description="Each label with classes: its class and the label's softmax.")
    all_scores: dict[str, float] | None = None


class ModelInfo(BaseModel):
    run: str | None = Field(description="The run's name.")
    git_commit: str = Field(description="The commit that trained it (its run.json), or unknown.")
    taxonomy_sha256: str = Field(description="SHA-256 of the taxonomy's canonical text.")
    hmtc_version: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelInfo


# ---- scoring ----------------------------------------------------------------------------------
def score_texts(ckpt: Checkpoint, texts: list[str]) -> list[tuple[dict, np.ndarray | None]]:
    """Per text ``hmtc predict``'s row (without the text) and every node's probability (None for
    a text it does not score, an empty one)."""
    rows, probs = predict_rows(ckpt, texts)
    return [({k: v for k, v in row.items() if k != "text"}, p) for row, p in zip(rows, probs)]


class Batcher:
    """Texts of concurrent requests, scored together in calls of up to ``max_batch`` texts.

    Parameters
    ----------
    score : callable
        list of texts -> one result per text; runs in a worker thread.
    max_batch : int
    max_wait_s : float
        After the first queued text, how long to wait for a full batch.
    on_call : callable, optional
        (texts in the call, seconds it took), after each successful call.
    """

    def __init__(self, score: Callable[[list[str]], list], max_batch: int, max_wait_s: float,
                 on_call: Callable[[int, float], None] | None = None):
        self.score, self.max_batch, self.max_wait, self.on_call = score, max_batch, max_wait_s, on_call
        self.pending: deque[tuple[list[str], asyncio.Future]] = deque()
        self.queued = 0            # texts in pending
        self.calls = 0             # scoring calls made
        self.texts = 0             # texts scored
        self.seconds = 0.0         # spent scoring them
        self._task: asyncio.Task | None = None

    def wait_estimate(self, texts: int) -> int:
        """Whole seconds until ``texts`` more queued texts would be scored, at the throughput so
        far (1 before any call): the ``Retry-After`` of a 429."""
        rate = self.texts / self.seconds if self.seconds > 0 else 0.0
        return max(1, min(60, math.ceil((self.queued + texts) / rate))) if rate > 0 else 1

    def start(self) -> None:
        self._wake, self._full = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for _, fut in self.pending:
            fut.cancel()

    async def submit(self, texts: list[str]) -> list:
        """One result per text, in order, once their batches are scored."""
        loop = asyncio.get_running_loop()
        futures = []
        for i in range(0, len(texts), self.max_batch):      # a large request takes several calls
            futures.append(loop.create_future())
            self.pending.append((texts[i:i + self.max_batch], futures[-1]))
            self.queued += len(self.pending[-1][0])
        self._wake.set()
        if self.queued >= self.max_batch:
            self._full.set()
        try:
            return [row for fut in futures for row in await fut]
        finally:       # a request that has gone (or failed) leaves none of its texts queued
            for fut in futures:
                fut.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.queued < self.max_batch and self.max_wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_wait)
            batch, n = [], 0
            while self.pending and (not batch or n + len(self.pending[0][0]) <= self.max_batch):
                texts, fut = self.pending.popleft()
                self.queued -= len(texts)
                if not fut.cancelled():             # else its request has gone
                    batch.append((texts, fut))
                    n += len(texts)
            if not self.pending:
                self._wake.clear()
            if self.queued < self.max_batch:
                self._full.clear()
            if batch:
                await self._score(batch)

    async def _score(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        flat = [t for texts, _ in batch for t in texts]
        start = time.perf_counter()
        try:
            rows = await asyncio.to_thread(self.score, flat)
        except Exception as e:     # every waiting request gets the error, the worker goes on
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        seconds = time.perf_counter() - start
        self.calls += 1
        self.texts += len(flat)
        self.seconds += seconds
        if self.on_call is not None:
            self.on_call(len(flat), seconds)
        start = 0
        for texts, fut in batch:
            if not fut.done():
                fut.set_result(rows[start:start + len(texts)])
            start += len(texts)


# ---- the app ----------------------------------------------------------------------------------
class _BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with 413 before or while it is read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = 0

        async def limited():
            nonlocal received
            too_large = LimitExceeded(413, "max_body_bytes", self.max_bytes,
                                      f"request body over {self.max_bytes} bytes")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise too_large
            return message

        # FastAPI answers an HTTPException raised while it reads the body with its handler
        return await self.app(scope, limited, send)


def taxonomy_json(ckpt: Checkpoint) -> dict:
    """The taxonomy's nodes in the scores' column order (``GET /taxonomy``)."""
    index = ckpt.index
    nodes = [{"id": node, "name": name, "level": int(level),
              "parents": [index.ids[j] for j in index.parent_idx[index.parent_ptr[i]:index.parent_ptr[i + 1]]],
              "leaf": bool(leaf)}
             for i, (node, name, level, leaf) in enumerate(zip(index.ids, index.names, index.levels, index.leaf_mask))]
    return {"root": ckpt.taxonomy.root, "nodes": nodes}


def model_info(ckpt: Checkpoint) -> dict:
    """What is served: the run's name, the commit in its run.json (when the checkpoint sits in a
    run folder), the hash of its taxonomy and hmtc's version (``/health`` and every response)."""
    commit = "unknown"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        commit = str(json.loads((Path(ckpt.path).parent / "run.json").read_text(encoding="utf-8"))["git_commit"])
    digest = hashlib.sha256(ckpt.taxonomy.dumps().encode("utf-8")).hexdigest()
    return {"run": ckpt.config.name, "git_commit": commit, "taxonomy_sha256": digest,
            "hmtc_version": __version__}


class _Metrics:
    """The Prometheus series of one app (its own registry, so several apps in a process do not
    collide)."""

    def __init__(self, batcher: Batcher, max_batch: int):
        self.registry = CollectorRegistry()
        self.requests = Counter("hmtc_requests", "HTTP requests by route and status.", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("hmtc_request_seconds", "Time to answer a request, by route.", ["path"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch} - {b for b in (64, 128, 256) if b > max_batch})
        self.batch = Histogram("hmtc_batch_texts", "Texts per scoring call.", registry=self.registry,
                               buckets=buckets)
        self.scored = Counter("hmtc_texts_scored", "Texts scored.", registry=self.registry)
        self.scoring = Histogram("hmtc_scoring_seconds", "Time of one scoring call.", registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        Gauge("hmtc_queue_texts", "Texts waiting to be scored.", registry=self.registry
              ).set_function(lambda: batcher.queued)

    def on_call(self, texts: int, seconds: float) -> None:
        self.batch.observe(texts)
        self.scored.inc(texts)
        self.scoring.observe(seconds)


def create_app(ckpt: Checkpoint, limits: Limits = Limits(), engine: str = "torch") -> FastAPI:
    """The FastAPI app over a loaded checkpoint (``app.state.batcher`` holds the counters,
    ``app.state.ready`` whether the warm-up text was scored)."""
    def score(texts: list[str]) -> list:
        return score_texts(ckpt, texts)

    batcher = Batcher(score, limits.max_batch, limits.max_wait_ms / 1000)
    metrics = _Metrics(batcher, limits.max_batch)
    batcher.on_call = metrics.on_call
    taxonomy, info = taxonomy_json(ckpt), model_info(ckpt)
    headers = {"X-Hmtc-Run": str(info["run"]).encode("ascii", "backslashreplace").decode(),
               "X-Hmtc-Commit": info["git_commit"], "X-Hmtc-Taxonomy": info["taxonomy_sha256"]}

    async def warm_up(app: FastAPI) -> None:
        """Score one text outside the counters; /ready answers 200 from then on."""
        try:
            await asyncio.to_thread(score, ["warm up"])
            app.state.ready = True
        except Exception as e:     # the server stays up (health answers) and says why it is not ready
            app.state.not_ready = f"the warm-up text failed to score: {type(e).__name__}: {e}"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        task = asyncio.create_task(warm_up(app))
        yield
        task.cancel()
        await batcher.stop()

    app = FastAPIOffline(title="hmtc", summary="Hierarchical multi-label text classification: consistent label sets.",
                         lifespan=lifespan)
    app.state.batcher, app.state.ready, app.state.not_ready = batcher, False, "warming up"
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        response.headers.update(headers)
        return response

    @app.exception_handler(LimitExceeded)
    async def over_limit(request: Request, e: LimitExceeded) -> JSONResponse:
        return JSONResponse({"detail": e.detail, "limit": e.limit, "max": e.maximum}, status_code=e.status_code,
                            headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, e: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each offending input back, and a NaN in it cannot be
        # written as JSON (a 500); where and what is enough
        errors = [{"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")),
                   "type": str(err.get("type", ""))} for err in e.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              responses={413: {"description": "more than max_texts texts, or a body too large"},
                         422: {"description": "a text over max_chars characters, or a malformed body"},
                         429: {"description": "the queue is full (max_queue); retry after Retry-After seconds"}})
    async def predict(req: PredictRequest) -> dict:
        """Consistent label sets with paths and scores, as `hmtc predict` gives them."""
        texts = req.text_list()
        if len(texts) > limits.max_texts:
            raise LimitExceeded(413, "max_texts", limits.max_texts,
                                f"{len(texts)} texts; at most {limits.max_texts} per request")
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise LimitExceeded(422, "max_chars", limits.max_chars,
                                    f"text {i} has {len(text)} characters; at most {limits.max_chars}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:     # a lone surrogate (JSON "\ud800") reaches no tokenizer
                raise HTTPException(422, f"text {i} is not valid Unicode (a lone surrogate)") from None
        if batcher.queued + len(texts) > limits.max_queue:
            raise LimitExceeded(429, "max_queue", limits.max_queue,
                                f"{batcher.queued} texts are queued; {len(texts)} more would pass max_queue",
                                headers={"Retry-After": str(batcher.wait_estimate(len(texts)))})
        out = []
        for row, probs in await batcher.submit(texts):
            out.append(row | ranked(ckpt.index, probs, req.top_k, req.all_scores))
        return {"predictions": out, "model": info}

    @app.get("/health")
    async def health() -> dict:
        """Liveness, what is served, the limits and how many scoring calls and texts so far."""
        return {"status": "ok", "run": ckpt.config.name, "model": ckpt.config.model.name,
                "engine": engine, "nodes": ckpt.index.n_nodes, "levels": ckpt.index.depth,
                "limits": {**dataclasses.asdict(limits), "max_body_bytes": limits.max_body_bytes},
                "scoring_calls": batcher.calls, "texts_scored": batcher.texts, "queued": batcher.queued,
                "ready": app.state.ready, "served": info}

    @app.get("/ready", responses={503: {"description": "not ready yet: warming up, or the warm-up failed"}})
    async def ready() -> JSONResponse:
        """Readiness: 200 once a warm-up text has been scored (send traffic), 503 before."""
        if app.state.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "detail": app.state.not_ready}, status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/taxonomy")
    async def get_taxonomy() -> dict:
        """The taxonomy: every node with its display name, level, parents and whether it is a leaf."""
        return taxonomy

    return app


def load_served(target: str | Path, engine: str = "torch", threads: int = 0) -> Checkpoint:
    """The checkpoint of a run or checkpoint folder, scored by ``engine`` on the run's device."""
    _, ckpt_dir = locate(target)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    ckpt = load_for_inference(ckpt_dir, engine, threads)
    if isinstance(ckpt.model, torch.nn.Module):
        ckpt.model.to(pick_device(ckpt.config.train.device))
    return ckpt


def check_server(host: str, port: int, threads: int, log_level: str) -> None:
    """The server's own options, checked before anything is loaded (one line each)."""
    if not host:
        raise HmtcError("host must name an address (127.0.0.1, 0.0.0.0, ...)")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise HmtcError(f"port must be a whole number from 1 to 65535, not {port!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise HmtcError(f"threads must be 0 (every core) or more, not {threads!r}")
    if log_level not in LOG_LEVELS:
        raise HmtcError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")


def serve(target: str | Path, engine: str = "torch", host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits(), threads: int = 0, log_level: str = "warning",
          access_log: bool = False) -> None:
    """Load the checkpoint and serve it until interrupted (uvicorn's log at ``log_level``; one
    line per request only with ``access_log``)."""
    check_server(host, port, threads, log_level)
    app = create_app(load_served(target, engine, threads), limits, engine)
    print(f"hmtc serve: {target} on http://{host}:{port} (docs at /docs, readiness at /ready)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
