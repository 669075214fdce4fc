"""Errors raised by the dataset loaders."""
from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A benchmark folder (or a file inside it) is missing or incomplete.

    The message names the exact path that was expected and how to obtain the data.
    """

    def __init__(self, dataset: str, expected: Path | str, how_to_get: str, detail: str = ""):
        self.dataset = dataset
        self.expected = Path(expected)
        msg = f"{dataset}: expected data at '{self.expected}' but it is missing or incomplete."
        if detail:
            msg += f" {detail}"
        msg += f"\nHow to obtain it: {how_to_get}"
        super().__init__(msg)


def require_dir(dataset: str, path: Path, how_to_get: str, pattern: str = "*") -> Path:
    """Return ``path`` if it is a directory holding at least one ``pattern`` entry, else raise."""
    if not path.is_dir():
        raise DatasetNotFoundError(dataset, path, how_to_get, "The folder does not exist.")
    if next(iter(path.glob(pattern)), None) is None:
        raise DatasetNotFoundError(dataset, path, how_to_get, f"The folder holds no '{pattern}' files.")
    return path


def require_file(dataset: str, path: Path, how_to_get: str) -> Path:
    """Return ``path`` if it is an existing file, else raise :class:`DatasetNotFoundError`."""
    if not path.is_file():
        raise DatasetNotFoundError(dataset, path, how_to_get, "The file does not exist.")
    return path
