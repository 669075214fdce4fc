"""Crash-safe result files: write to a temporary file in the same folder, fsync, rename.

A run killed mid-write leaves the previous version of a log, results JSON or CSV intact
(checkpoints use :func:`hsnet_lite.checkpoints.save_atomic`, the same idea for torch files).
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Sequence


def public_mode(path: str) -> None:
    """Give a ``mkstemp`` file (created 0600) the permissions a normal ``open`` would (0666 - umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_text_atomic(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename (never a half-written file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, obj: Any) -> None:
    """``json.dump`` (indented, keys in insertion order) through :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_csv_atomic(path: str, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """Write every row (a header first) as one CSV file, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_text_atomic(path, buf.getvalue())


def read_csv(path: str) -> list[dict[str, str]]:
    """All rows of a CSV file as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
