"""Locate the authors' split lists (``splits/<dataset>/...``) when the user provides them."""
from __future__ import annotations

from pathlib import Path


def resolve_split_file(split_dir, dataset: str, relative: str) -> Path:
    """Find ``relative`` under ``split_dir/<dataset>/`` or directly under ``split_dir``.

    ``split_dir`` may be the authors' ``splits`` folder or its ``<dataset>`` sub-folder.
    """
    base = Path(split_dir)
    for candidate in (base / dataset / relative, base / relative):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"split list '{relative}' not found under '{base / dataset}' or '{base}'")


def list_split_name(split: str) -> str:
    """The authors ship no separate test lists for PASCAL/COCO: ``test`` reads the ``val`` list."""
    return "val" if split == "test" else split
