"""Models by name (``MODELS``), each implementing the protocol of :mod:`hmtc.models.base`."""

from __future__ import annotations

from .base import MODELS, EncoderModel, Model, ModelOutput, autocast, create_model, load_model, make_config

__all__ = ["MODELS", "EncoderModel", "Model", "ModelOutput", "autocast", "create_model", "load_model", "make_config"]

from . import ensemble, flat, global_, local, msml, tfidf, zeroshot  # noqa: E402,F401  (registers the built-in models)
