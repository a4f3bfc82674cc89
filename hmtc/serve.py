"""``hmtc serve``: a checkpoint behind HTTP (FastAPI), concurrent requests scored together.

    POST /predict    {"texts": [...], "top_k": 0, "all_scores": false}
                     -> {"predictions": [{"labels", "paths", "scores", "top_k"?, "all_scores"?}]}
    GET  /health     run name, model, engine, nodes, limits and the scoring counters
    GET  /taxonomy   the nodes in column order: id, name, level, parents, leaf
    GET  /docs       OpenAPI (Swagger UI), the schema at /openapi.json

``labels``, ``paths`` and ``scores`` are ``hmtc predict``'s (:func:`hmtc.predict.predict_rows`);
``top_k`` adds the k most probable nodes of each level, decoded or not, and ``all_scores`` every
node's probability (:func:`hmtc.predict.ranked`; both empty for a text ``hmtc predict`` does not
score: an empty one). Requests are micro-batched (:class:`Batcher`): texts queue up, one worker takes up to
``max_batch`` of them, waiting at most ``max_wait_ms`` after the first for more, scores them in
one call in a thread and hands every request its rows.

Limits, each refused with a JSON ``{"detail", "limit", "max"}``: more than ``max_texts`` texts
(413), a text longer than ``max_chars`` characters (422), a body larger than those two allow
(413, before it is read). Requests name no file: the server reads only the checkpoint it was
started on. ``fastapi`` and ``uvicorn`` come with the ``serve`` extra (``pip install 'hmtc[serve]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint
from .data.prepare import locate
from .errors import HmtcError
from .export import load_for_inference
from .inference import pick_device
from .predict import predict_rows, ranked

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as e:
    raise HmtcError(f"hmtc serve needs fastapi and uvicorn ({e.name} is missing): pip install 'hmtc[serve]'") from None


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
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_texts: int = 256
    max_chars: int = 20000

    def __post_init__(self):
        for name in ("max_batch", "max_texts", "max_chars"):
            if getattr(self, name) < 1:
                raise HmtcError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise HmtcError(f"max_wait_ms must be 0 or more, not {self.max_wait_ms}")

    @property
    def max_body_bytes(self) -> int:
        """The largest body a request within the limits can need: every character written as a
        12-byte JSON escape (a surrogate pair), plus room for the keys."""
        return self.max_texts * (12 * self.max_chars + 4) + 4096


class LimitExceeded(HTTPException):
    """A request over one of the :class:`Limits`; answered as ``{"detail", "limit", "max"}``."""

    def __init__(self, status: int, limit: str, maximum: int, detail: str):
        super().__init__(status, detail)
        self.limit, self.maximum = limit, maximum


# ---- the HTTP schema --------------------------------------------------------------------------
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(description="Texts to classify.")
    top_k: int = Field(0, ge=0, description="Also return the k most probable nodes of each level.")
    all_scores: bool = Field(False, description="Also return every node's probability.")


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
    empty: str | None = Field(None, description="Why the text was not scored (an empty or blank text).")
    top_k: list[LevelTop] | None = Field(None, description="The k most probable nodes of each level.")
    classes: dict[str, LabelClass] | None = Field(None, description="Each label with classes: its class and the label's softmax.")
    all_scores: dict[str, float] | None = None


class PredictResponse(BaseModel):
    predictions: list[Prediction]


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
    """

    def __init__(self, score: Callable[[list[str]], list], max_batch: int, max_wait_s: float):
        self.score, self.max_batch, self.max_wait = score, max_batch, max_wait_s
        self.pending: deque[tuple[list[str], asyncio.Future]] = deque()
        self.queued = 0            # texts in pending
        self.calls = 0             # scoring calls made
        self.texts = 0             # texts scored
        self._task: asyncio.Task | None = None

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
        try:
            rows = await asyncio.to_thread(self.score, flat)
        except Exception as e:     # every waiting request gets the error, the worker goes on
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.calls += 1
        self.texts += len(flat)
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


def create_app(ckpt: Checkpoint, limits: Limits = Limits(), engine: str = "torch") -> FastAPI:
    """The FastAPI app over a loaded checkpoint (``app.state.batcher`` holds the counters)."""
    batcher = Batcher(lambda texts: score_texts(ckpt, texts), limits.max_batch, limits.max_wait_ms / 1000)
    taxonomy = taxonomy_json(ckpt)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="hmtc", summary="Hierarchical multi-label text classification: consistent label sets.",
                  lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(LimitExceeded)
    async def over_limit(request: Request, e: LimitExceeded) -> JSONResponse:
        return JSONResponse({"detail": e.detail, "limit": e.limit, "max": e.maximum}, status_code=e.status_code)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              responses={413: {"description": "more than max_texts texts, or a body too large"},
                         422: {"description": "a text over max_chars characters, or a malformed body"}})
    async def predict(req: PredictRequest) -> dict:
        """Consistent label sets with paths and scores, as `hmtc predict` gives them."""
        if len(req.texts) > limits.max_texts:
            raise LimitExceeded(413, "max_texts", limits.max_texts,
                                f"{len(req.texts)} texts; at most {limits.max_texts} per request")
        for i, text in enumerate(req.texts):
            if len(text) > limits.max_chars:
                raise LimitExceeded(422, "max_chars", limits.max_chars,
                                    f"text {i} has {len(text)} characters; at most {limits.max_chars}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:     # a lone surrogate (JSON "\ud800") reaches no tokenizer
                raise HTTPException(422, f"text {i} is not valid Unicode (a lone surrogate)") from None
        out = []
        for row, probs in await batcher.submit(req.texts):
            out.append(row | ranked(ckpt.index, probs, req.top_k, req.all_scores))
        return {"predictions": out}

    @app.get("/health")
    async def health() -> dict:
        """Liveness, what is served, the limits and how many scoring calls and texts so far."""
        return {"status": "ok", "run": ckpt.config.get("name"), "model": ckpt.config["model"]["name"],
                "engine": engine, "nodes": ckpt.index.n_nodes, "levels": ckpt.index.depth,
                "limits": {**dataclasses.asdict(limits), "max_body_bytes": limits.max_body_bytes},
                "scoring_calls": batcher.calls, "texts_scored": batcher.texts, "queued": batcher.queued}

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
        ckpt.model.to(pick_device(ckpt.config["train"].get("device", "auto")))
    return ckpt


def serve(target: str | Path, engine: str = "torch", host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits(), threads: int = 0) -> None:
    """Load the checkpoint and serve it until interrupted."""
    app = create_app(load_served(target, engine, threads), limits, engine)
    uvicorn.run(app, host=host, port=port, log_level="info")
