"""Resumable, checksum-verified downloads with atomic archive extraction (stdlib + tqdm).

``download(url, dest_dir)`` streams to ``<file>.part``; if a partial file exists it resumes with
an HTTP ``Range`` request (restarting when the server ignores it), verifies an optional SHA-256,
renames the finished file into place, and extracts zip/tar archives into a temporary folder
beside the target before renaming the top-level entries into place, so an interrupted run never
leaves a half-extracted dataset looking complete.

CLI (prints the official sources; ``--dry-run`` downloads nothing)::

    python -m hsnet_lite.datasets.download --dataset pascal --root DATA [--dry-run]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class ChecksumError(ValueError):
    """The downloaded file's SHA-256 differs from the expected one (the file was deleted)."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is already complete
            return None
        raise


def _stream(url: str, part: Path, timeout: float, progress: bool) -> None:
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start, timeout)
    if response is None:
        return
    with response:
        if start and response.status != 206:  # server ignored the Range header: start over
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as fh, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5],
                disable=not progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                bar.update(len(block))


def _verify(path: Path, sha256: str | None) -> None:
    if sha256 is None:
        return
    actual = sha256_of(path)
    if actual.lower() != sha256.lower():
        path.unlink()
        raise ChecksumError(f"SHA-256 mismatch for '{path.name}': expected {sha256}, got {actual}; "
                            "the corrupt file was deleted, run the download again.")


def download(url: str, dest_dir, sha256: str | None = None, extract: bool = True,
             filename: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``dest_dir`` (resuming a ``.part`` file) and optionally extract it.

    Returns the archive path (``extract=False`` or not an archive) or the extraction folder
    ``dest_dir``. Raises :class:`ChecksumError` when ``sha256`` does not match.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = filename or Path(urllib.parse.urlparse(url).path).name or "download"
    final, part = dest_dir / name, dest_dir / f"{name}.part"
    if not final.exists():
        _stream(url, part, timeout, progress)
        _verify(part, sha256)
        os.replace(part, final)
    else:
        _verify(final, sha256)
    if extract and is_archive(final):
        extract_archive(final, dest_dir)
        return dest_dir
    return final


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a zip or tar (any compression) archive."""
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def _safe_members(names, root: Path) -> None:
    for name in names:
        target = (root / name).resolve()
        if root.resolve() not in (target, *target.parents):
            raise ValueError(f"archive member escapes the target folder: {name}")


def _extract_all(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _safe_members(zf.namelist(), into)
            zf.extractall(into)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")


def extract_archive(archive, dest_dir, overwrite: bool = False) -> list[Path]:
    """Extract atomically: into a hidden temp folder in ``dest_dir``, then rename each top-level
    entry into place. Existing entries raise ``FileExistsError`` unless ``overwrite``."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extracting-", dir=dest_dir))
    try:
        _extract_all(archive, tmp)
        entries = sorted(tmp.iterdir())
        if not entries:
            raise ValueError(f"'{archive}' is empty or unreadable; delete it and download again")
        clashes = [dest_dir / e.name for e in entries if (dest_dir / e.name).exists()]
        if clashes and not overwrite:
            raise FileExistsError(f"'{clashes[0]}' already exists; pass overwrite=True to replace it")
        for path in clashes:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for entry in entries:
            os.replace(entry, dest_dir / entry.name)
        return [dest_dir / e.name for e in entries]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Source:
    """One official source: ``url`` is fetched automatically unless ``manual``."""

    url: str
    note: str
    manual: bool = False


SOURCES = {
    "pascal": (
        Source("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
               "PASCAL VOC 2012 images; unpacks to VOCdevkit/VOC2012 (moved to <root>/VOC2012)"),
        Source("https://github.com/juhongm999/hsnet",
               "SegmentationClassAug (VOC + SBD masks): follow the README link (Google Drive), "
               "unpack into <root>/VOC2012/SegmentationClassAug", manual=True),
    ),
    "coco": (
        Source("http://images.cocodataset.org/zips/train2014.zip", "COCO 2014 train images"),
        Source("http://images.cocodataset.org/zips/val2014.zip", "COCO 2014 val images"),
        Source("https://github.com/juhongm999/hsnet",
               "per-image class-label PNG masks: follow the README links, unpack into "
               "<root>/COCO2014/annotations/{train2014,val2014}", manual=True),
    ),
    "fss": (
        Source("https://github.com/HKUSTCV/FSS-1000",
               "FSS-1000 (also linked from https://github.com/juhongm999/hsnet): unpack as "
               "<root>/FSS-1000/<class>/{1..10}.{jpg,png}", manual=True),
    ),
}
SUBDIR = {"pascal": "", "coco": "COCO2014", "fss": ""}


def _finish_pascal(root: Path) -> None:
    devkit = root / "VOCdevkit" / "VOC2012"
    if devkit.is_dir() and not (root / "VOC2012").exists():
        os.replace(devkit, root / "VOC2012")


def main(argv=None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Fetch the official few-shot segmentation data.")
    parser.add_argument("--dataset", choices=sorted(SOURCES), required=True)
    parser.add_argument("--root", type=Path, required=True, help="data root holding every benchmark")
    parser.add_argument("--dry-run", action="store_true", help="only print the sources")
    args = parser.parse_args(argv)
    for src in SOURCES[args.dataset]:
        tag = "manual" if src.manual else "auto"
        print(f"[{tag}] {src.url}\n         {src.note}")
        if not (src.manual or args.dry_run):
            download(src.url, args.root / SUBDIR[args.dataset])
    if args.dataset == "pascal" and not args.dry_run:
        _finish_pascal(args.root)


if __name__ == "__main__":
    main()
