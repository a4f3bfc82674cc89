"""Where hmtc keeps what it makes: ``$HMTC_HOME`` (default ``~/.cache/hmtc``) for what runs share
(installed encoders, frozen layers' states, converted taxonomies), and a run's own folder."""

from __future__ import annotations

import os
from pathlib import Path

from .config import RunConfig


def home() -> Path:
    """``$HMTC_HOME``, or ``~/.cache/hmtc`` when it is unset or empty."""
    return Path(os.environ.get("HMTC_HOME") or "~/.cache/hmtc").expanduser()


def run_folder(cfg: RunConfig, out: str | Path | None = None) -> Path:
    """A run's folder: ``out`` when given, else ``train.output_dir / name``."""
    return Path(out) if out else Path(cfg.train.output_dir) / cfg.name
