"""download(): full fetch, Range resume, checksum mismatch, atomic extraction (local server)."""
import hashlib
import io
import random
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hsnet_lite.datasets.download import ChecksumError, download, extract_archive, main


def _targz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("mydata/a.txt", b"alpha" * 500), ("mydata/sub/b.txt", b"beta" * 700)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("zdata/c.txt", "gamma" * 300)
    return buf.getvalue()


FILES = {"/data.tar.gz": _targz(), "/data.zip": _zip(), "/plain.bin": bytes(range(256)) * 64}


class _Handler(BaseHTTPRequestHandler):
    seen_ranges: list = []

    def do_GET(self):  # noqa: N802 - http.server naming
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        _Handler.seen_ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_full_download_and_extract(server, tmp_path):
    sha = hashlib.sha256(FILES["/data.tar.gz"]).hexdigest()
    out = download(f"{server}/data.tar.gz", tmp_path, sha256=sha, progress=False)
    assert out == tmp_path
    assert (tmp_path / "mydata/a.txt").read_bytes() == b"alpha" * 500
    assert (tmp_path / "mydata/sub/b.txt").read_bytes() == b"beta" * 700
    assert not list(tmp_path.glob(".*extracting*")) and not list(tmp_path.glob("*.part"))
    download(f"{server}/data.zip", tmp_path, progress=False)
    assert (tmp_path / "zdata/c.txt").read_text() == "gamma" * 300


def test_resume_from_partial(server, tmp_path):
    body = FILES["/plain.bin"]
    (tmp_path / "plain.bin.part").write_bytes(body[:5000])
    _Handler.seen_ranges.clear()
    out = download(f"{server}/plain.bin", tmp_path, sha256=hashlib.sha256(body).hexdigest(), progress=False)
    assert _Handler.seen_ranges == ["bytes=5000-"]
    assert out.read_bytes() == body and not (tmp_path / "plain.bin.part").exists()


def test_checksum_mismatch(server, tmp_path):
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        download(f"{server}/plain.bin", tmp_path, sha256="0" * 64, progress=False)
    assert not list(tmp_path.iterdir())


def _truncated_targz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("mydata/first.bin", "mydata/second.bin"):
            data = random.Random(name).randbytes(20000)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()[:30000]


def test_atomic_extraction_on_failure(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    for i, data in enumerate((_truncated_targz(), FILES["/data.tar.gz"][:100])):
        bad = tmp_path / f"broken{i}.tar.gz"
        bad.write_bytes(data)
        with pytest.raises((tarfile.TarError, EOFError, ValueError, OSError)):
            extract_archive(bad, dest)
        assert list(dest.iterdir()) == []  # neither a half-extracted folder nor a temp dir
    good = tmp_path / "good.tar.gz"
    good.write_bytes(FILES["/data.tar.gz"])
    assert extract_archive(good, dest) == [dest / "mydata"]
    with pytest.raises(FileExistsError):
        extract_archive(good, dest)
    extract_archive(good, dest, overwrite=True)
    assert (dest / "mydata/a.txt").is_file()


def test_cli_dry_run(capsys, tmp_path):
    main(["--dataset", "coco", "--root", str(tmp_path), "--dry-run"])
    text = capsys.readouterr().out
    assert "images.cocodataset.org/zips/train2014.zip" in text and "[manual]" in text
    assert not list(tmp_path.iterdir())
