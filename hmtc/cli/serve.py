"""``hmtc serve``: a checkpoint behind HTTP (see :mod:`hmtc.serve`).

The library, fastapi and uvicorn are imported inside the command, so `hmtc --help` and the other
commands start at once and do without the ``serve`` extra.
"""

from __future__ import annotations

from pathlib import Path

import typer


def serve_command(run: Path = typer.Argument(..., help="Run folder (uses best/) or checkpoint folder."),
                  engine: str = typer.Option("torch", "--engine", help="torch, onnx or onnx-int8 (after `hmtc export`)."),
                  host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
                  port: int = typer.Option(8000, "--port", help="TCP port."),
                  max_batch: int = typer.Option(32, "--max-batch", min=1, help="Texts scored in one call at most."),
                  max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0.0,
                                                    help="How long the first queued text waits for others to join its call."),
                  max_texts: int = typer.Option(256, "--max-texts", min=1, help="Texts per request (more: 413)."),
                  max_chars: int = typer.Option(20000, "--max-chars", min=1, help="Characters per text (more: 422)."),
                  max_queue: int = typer.Option(1024, "--max-queue", min=1,
                                                help="Texts waiting to be scored at most (more: 429 with Retry-After)."),
                  threads: int = typer.Option(0, "--threads", help="CPU threads (0: all cores)."),
                  log_level: str = typer.Option("warning", "--log-level",
                                                help="critical, error, warning, info, debug or trace."),
                  access_log: bool = typer.Option(False, "--access-log/--no-access-log",
                                                  help="One log line per request.")) -> None:
    """Serve a checkpoint over HTTP: POST /predict, GET /health, /ready, /metrics (Prometheus),
    /taxonomy, OpenAPI at /docs and /redoc (rendered offline).

    Concurrent requests are scored together in batches; a full queue answers 429. Example:
    hmtc serve runs/duee-msml-default --engine onnx-int8 --port 8000
    """
    from ..serve import Limits, serve
    serve(run, engine, host, port, Limits(max_batch, max_wait_ms, max_texts, max_chars, max_queue), threads,
          log_level, access_log)
