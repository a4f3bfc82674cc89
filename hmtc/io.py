"""Atomic writes: write aside in the same folder, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from .errors import HmtcError

try:                                  # POSIX (Linux, macOS)
    import fcntl
except ImportError:                   # pragma: no cover - Windows
    fcntl = None
try:                                  # Windows
    import msvcrt
except ImportError:
    msvcrt = None

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_WIN_LOCK_OFFSET = 1 << 30            # msvcrt locks a byte range; one past the pid, so it stays readable
_UMASK = os.umask(0o022)              # read once (setting it is the only way to read it) and put back
os.umask(_UMASK)


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings aside),
    counted in one pass without recursion: ``json.loads`` recurses once per level, and so do the
    walks over what it returns, so a reader checks this first and refuses what nests absurdly."""
    steps = (1 if b in "[{" else -1 for b in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)))
    return max(itertools.accumulate(steps, initial=0))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        else:                          # mkstemp makes it 0600; a new file gets what open() would give
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):        # a full disk, a read-only folder: one line, and what is left
            raise HmtcError(f"could not write ({e.strerror or e}); "
                            + ("the previous file is unchanged" if path.exists() else "nothing was written"),
                            path) from None
        raise


def check_output_file(path: Path, source: Path | None = None, option: str = "--output",
                      source_option: str = "--input") -> None:
    """Refuse, before any work, an output that is the ``source`` file or a link, folder or device
    (an atomic write would replace it with a regular file)."""
    if source is not None and path.resolve() == Path(source).resolve():
        raise HmtcError(f"{option} is the {source_option} file; write elsewhere", path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise HmtcError(f"{option} is a link, a folder or a device, not a file to write to; name a regular file", path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text variant of :func:`atomic_write_bytes`; newlines are written as given."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted UTF-8 JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def atomic_dir(target: str | Path) -> "_AtomicDir":
    """Context manager yielding a temp folder that replaces ``target`` on success.

    A previous ``target`` is moved aside first and removed only after the rename succeeded.
    """
    return _AtomicDir(Path(target))


class _AtomicDir:
    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _try_lock(fd: int, shared: bool = False) -> bool:
    """Lock an open file for this process without waiting: True when locked, False when another
    process holds it. ``shared``: a reader's lock, which other readers share and a writer's
    excludes (``flock`` only; Windows locks a reader exclusively too). The kernel releases the
    lock when its holder dies (``flock`` on POSIX, a byte-range lock on Windows); where neither
    exists the caller falls back to a marker file."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False
    finally:
        os.lseek(fd, 0, os.SEEK_SET)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class RunLock:
    """A lock on a run folder: exclusive while one ``hmtc train``, ``eval``, ``report`` or ``export``
    writes it, shared (``shared=True``) while commands that only read it (``hmtc migrate``) do, so
    readers exclude writers and not one another.

    ``.lock`` in the folder is locked by the operating system (``flock`` on Linux and macOS, a
    byte-range lock on Windows), which releases it when its holder dies, so a lock left by a
    killed run is simply taken over; the file keeps the holder's pid for the message another
    writer gets. Without either (an exotic platform), the lock is ``.lock`` created exclusively
    with the pid inside, taken over when that process no longer runs.
    """

    def __init__(self, folder: str | Path, shared: bool = False):
        self.path = Path(folder) / ".lock"
        self.shared = shared
        self.fd: int | None = None
        self.marker = False
        self.created = False

    def _refuse(self, holder: str) -> HmtcError:
        return HmtcError(f"another hmtc process (pid {holder or '?'}) is training or evaluating this run folder "
                         "(or writing its report or export); wait for it to finish or choose another --out",
                         self.path.parent)

    def __enter__(self) -> "RunLock":
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None and msvcrt is None:
            return self._enter_marker()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd, self.shared):
            holder = os.read(fd, 64).decode("ascii", "replace").strip()
            os.close(fd)
            raise self._refuse(holder) from None
        if not self.shared:                 # the pid a refused writer is told (readers leave it)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def _enter_marker(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.path.read_text(encoding="ascii", errors="replace").strip()
                if holder.isdigit() and _pid_alive(int(holder)):
                    raise self._refuse(holder) from None
                self.path.unlink(missing_ok=True)          # its holder is gone: stale, taken over
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            self.marker = True
            return self
        raise self._refuse("?")

    def __exit__(self, exc_type, exc, tb) -> None:
        folder = self.path.parent
        # a run that failed in the folder it created leaves no folder holding only the lock
        empty = exc_type is not None and self.created and [p.name for p in folder.iterdir()] == [".lock"]
        if empty:
            self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)           # closing releases the lock; the file may stay
            self.fd = None
        if self.marker:
            self.path.unlink(missing_ok=True)
            self.marker = False
        if empty:
            with contextlib.suppress(OSError):
                folder.rmdir()


def run_locked(run_dir: str | Path, shared: bool = False):
    """The :class:`RunLock` of ``run_dir`` when it is a run folder (it holds ``run.json``), else a
    context that locks nothing (a bare checkpoint folder): what every command that writes into a
    run folder (train, eval, report, export) holds while it does, and ``shared`` what one that
    only reads it (migrate) holds."""
    return RunLock(run_dir, shared) if (Path(run_dir) / "run.json").is_file() else contextlib.nullcontext()


# ---- versioned folders: a valid one on disk at every instant ---------------------------------
MANIFEST = "manifest.json"



def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """``manifest.json``: the SHA-256 of every file in ``folder`` (written last)."""
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    atomic_write_json(folder / MANIFEST, {"sha256": files})


def check_manifest(folder: Path) -> None:
    """Raise HmtcError naming the first file that is missing or differs from the manifest
    (a folder without one, from an older version, is taken as it is)."""
    path = folder / MANIFEST
    if not path.is_file():
        return
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        raise HmtcError("not a readable manifest", path) from None
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            raise HmtcError("missing: the checkpoint is incomplete", f)
        if sha256_file(f) != digest:
            raise HmtcError("does not match the checkpoint's manifest (truncated, corrupted or replaced)", f)


def versions(target: Path) -> list[Path]:
    """The version folders of a versioned ``target``, newest first."""
    return sorted(target.parent.glob(f".{target.name}.v*"), reverse=True)


def newest_valid(target: str | Path, valid) -> Path | None:
    """``target`` when ``valid(target)``, else its newest version folder that is (a crash can
    leave the pointer behind or broken, never every version invalid)."""
    target = Path(target)
    for folder in [target, *versions(target)]:
        try:
            if folder.is_dir() and valid(folder):
                return folder
        except HmtcError:
            continue
    return None


def versioned_dir(target: str | Path) -> "_VersionedDir":
    """Context manager yielding a temp folder that becomes ``target``'s next version.

    ``target`` is a symlink to ``.<name>.v<N>``: the new version is built aside, renamed to its
    version name, and the symlink is swapped to it in one atomic rename; only then are older
    versions removed. At every instant ``target`` or a version folder holds a whole one, and
    :func:`newest_valid` finds it. A plain folder from an older layout becomes a version first.
    """
    return _VersionedDir(Path(target))


# what a write that the machine refuses raises (safetensors reports a full disk in its own class)
WRITE_ERRORS = (OSError, SafetensorError)


def _not_written(target: Path, e: Exception) -> HmtcError:
    """One line for a version that could not be written (a full disk): why, and what survives."""
    latest = target.resolve().name if target.is_symlink() and target.exists() else None
    kept = f"the last whole version ({latest}) is kept" if latest else "no earlier version exists"
    return HmtcError(f"could not write a new version ({getattr(e, 'strerror', None) or e}); {kept}", target)


class _VersionedDir:
    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if issubclass(exc_type, WRITE_ERRORS) and not isinstance(exc, HmtcError):
                raise _not_written(self.target, exc) from None
            return
        try:
            self._publish()
        except OSError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise _not_written(self.target, e) from None

    def _publish(self) -> None:
        target, parent = self.target, self.target.parent
        write_manifest(self.tmp)
        if target.is_dir() and not target.is_symlink():       # older layout: keep it as a version
            os.rename(target, parent / f".{target.name}.v{0:06d}")
        latest = versions(target)
        number = int(latest[0].name.rpartition(".v")[2]) + 1 if latest else 1
        version = parent / f".{target.name}.v{number:06d}"
        os.rename(self.tmp, version)
        link = parent / f".{target.name}.link-{os.getpid()}"
        if link.is_symlink():
            link.unlink()
        os.symlink(version.name, link)
        os.replace(link, target)
        for old in versions(target):
            if old != version:
                shutil.rmtree(old, ignore_errors=True)
