"""One error family for user-facing problems: each names the file, line and item at fault."""

from __future__ import annotations

from pathlib import Path


class HmtcError(Exception):
    """A problem with user input, reported without a traceback by the CLI.

    Parameters
    ----------
    message : str
        What is wrong, in plain words.
    path : str or Path, optional
        The file at fault.
    line : int, optional
        1-based line number in ``path``.
    item : str, optional
        The node, label or key at fault.
    """

    def __init__(self, message: str, path: str | Path | None = None,
                 line: int | None = None, item: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.item = item
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        text = f"{where}: {self.message}" if where else self.message
        if self.item is not None and repr(self.item) not in self.message:
            text += f" (node {self.item!r})" if isinstance(self, TaxonomyError) else f" ({self.item!r})"
        return text


class TaxonomyError(HmtcError):
    """Invalid taxonomy: cycle, self-loop, unknown parent, duplicate id, second root, bad syntax."""


class DataError(HmtcError):
    """Invalid dataset input: malformed line, empty text, unknown label, bad encoding."""


class ConfigError(HmtcError):
    """Invalid configuration file or option."""
