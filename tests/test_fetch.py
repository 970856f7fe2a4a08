"""fetch-coco / fetch-lsp against a real HTTP server on 127.0.0.1 started by the tests,
serving zips built from synthetic COCO-format data."""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import make_lsp_folder
from typer.testing import CliRunner

from poser.cli import app
from poser.data.cache import Cache
from poser.data.coco import read_coco
from poser.data.fetch import download as fetch_mod
from poser.data.fetch.download import RemoteFile, download, extract_zip, extracted
from poser.data.fetch.sources import fetch_coco, fetch_lsp
from poser.errors import PoserError


class FileServer:
    """Serves `files` (path -> bytes) with HEAD, GET and single Range requests.

    fail[path] = n: answer the first n GETs with 503. cut[path] = n: once, announce the full length
    but send only n bytes and drop the connection. requests: (method, path, Range header).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.fail, self.cut, self.requests = dict(files), {}, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((self.command, path, rng))
                if path not in server.files:
                    return self.send_error(404)
                if body and server.fail.get(path, 0) > 0:
                    server.fail[path] -= 1
                    return self.send_error(503)
                data, start = server.files[path], 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not body:
                    return
                if body and path in server.cut:
                    self.wfile.write(data[start: start + server.cut.pop(path)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def gets(self, path: str) -> list:
        return [r for r in self.requests if r[0] == "GET" and r[1] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coco_zips(tmp_path_factory) -> dict[str, bytes]:
    """The three official COCO zips, made from a synthetic COCO-format dataset."""
    from poser.synth.dataset import SynthConfig, generate

    src = tmp_path_factory.mktemp("coco-src") / "ds"
    generate(src, SynthConfig(images=30, seed=5))
    out = {}
    for split in ("train", "val"):
        out[f"zips/{split}2017.zip"] = _zip({f"{split}2017/{p.name}": p.read_bytes()
                                              for p in sorted((src / split).glob("*.jpg"))})
    out["annotations/annotations_trainval2017.zip"] = _zip({
        f"annotations/person_keypoints_{s}2017.json": (src / "annotations" / f"person_keypoints_{s}.json").read_bytes()
        for s in ("train", "val")})
    return out


@pytest.fixture
def server(coco_zips):
    s = FileServer(coco_zips)
    yield s
    s.close()


def test_fetch_coco_end_to_end_then_second_run_is_a_no_op(server, tmp_path):
    root, js = tmp_path / "coco", tmp_path / "summary.json"
    res = CliRunner().invoke(app, ["fetch-coco", "--data", str(root), "--base-url", server.url, "--json", str(js)])
    assert res.exit_code == 0, res.output
    summary = json.loads(js.read_text())
    assert summary["files"] == {"annotations_trainval2017.zip": "downloaded", "train2017.zip": "downloaded",
                                "val2017.zip": "downloaded"}
    for split, n_img in (("train", 24), ("val", 6)):
        assert len(list((root / f"{split}2017").glob("*.jpg"))) == n_img
        inst = read_coco(root / "annotations" / f"person_keypoints_{split}2017.json", root / f"{split}2017")
        cache = Cache(Path(summary["splits"][split]["cache"]))
        assert len(cache) == len(inst) == summary["splits"][split]["instances"]
        assert cache.image(0).shape == (3, 256, 256)
    assert not list((root / ".downloads").glob("*.zip"))         # zips removed after extraction
    before = len(server.requests)
    res2 = CliRunner().invoke(app, ["fetch-coco", "--data", str(root), "--base-url", server.url])
    assert res2.exit_code == 0 and "nothing to do" in res2.output
    assert len(server.requests) == before                        # not one request


def test_resume_from_half_written_file_uses_range(server, tmp_path):
    root = tmp_path / "coco"
    full = server.files["zips/val2017.zip"]
    part = root / ".downloads" / "val2017.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(full[: len(full) // 2])
    summary = fetch_coco(root, server.url, splits=("val",), prepare=False, backoff=0.01)
    assert summary["files"]["val2017.zip"] == "resumed"
    assert server.gets("zips/val2017.zip") == [("GET", "zips/val2017.zip", f"bytes={len(full) // 2}-")]
    assert len(list((root / "val2017").glob("*.jpg"))) == 6


def test_retries_503_and_resumes_a_dropped_connection(server, tmp_path):
    server.fail["zips/val2017.zip"] = 2
    server.cut["annotations/annotations_trainval2017.zip"] = 1000
    summary = fetch_coco(tmp_path, server.url, splits=("val",), backoff=0.01)
    assert len(server.gets("zips/val2017.zip")) == 3             # 503, 503, 200
    ann = server.gets("annotations/annotations_trainval2017.zip")
    assert ann == [("GET", "annotations/annotations_trainval2017.zip", None),
                   ("GET", "annotations/annotations_trainval2017.zip", "bytes=1000-")]
    assert summary["splits"]["val"]["instances"] > 0


def test_corrupt_zip_is_a_clear_error_and_nothing_is_marked(server, tmp_path):
    good = server.files["zips/val2017.zip"]
    server.files["zips/val2017.zip"] = good[: len(good) * 2 // 3]          # truncated
    res = CliRunner().invoke(app, ["fetch-coco", "--data", str(tmp_path), "--base-url", server.url, "--splits", "val"])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "val2017.zip" in errors[0] and "Traceback" not in res.output
    assert not extracted(tmp_path, "val2017.zip") and not (tmp_path / "val2017").exists()
    assert not (tmp_path / ".downloads" / "val2017.zip").exists()          # deleted: the next run re-fetches
    server.files["zips/val2017.zip"] = good
    fetch_coco(tmp_path, server.url, splits=("val",), backoff=0.01)          # and then it works
    assert extracted(tmp_path, "val2017.zip")


def test_bad_crc_inside_zip_is_reported(tmp_path):
    data = bytearray(_zip({"val2017/a.jpg": bytes(range(256)) * 400}))
    data[100] ^= 0xFF                                                       # flip bits in the payload
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(PoserError, match="corrupt zip|not a readable zip"):
        extract_zip(tmp_path / "bad.zip", tmp_path / "root")
    assert not extracted(tmp_path / "root", "bad.zip") and not (tmp_path / "root" / "val2017").exists()


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "ok/../../evil", "C:/evil"])
def test_zip_slip_is_rejected(tmp_path, name):
    (tmp_path / "slip.zip").write_bytes(_zip({"fine.txt": b"x", name: b"pwned"}))
    root = tmp_path / "root"
    with pytest.raises(PoserError, match="unsafe entry"):
        extract_zip(tmp_path / "slip.zip", root)
    assert not (tmp_path / "evil").exists() and not (root / "fine.txt").exists()
    assert not extracted(root, "slip.zip")


def test_a_dot_slash_entry_extracts_like_any_other(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("./", b"")                                   # some zip tools write the archive's folder
        z.writestr("./lspet/joints.mat", b"m")
    (tmp_path / "dot.zip").write_bytes(buf.getvalue())
    assert extract_zip(tmp_path / "dot.zip", tmp_path / "root") == ["lspet"]
    assert (tmp_path / "root" / "lspet" / "joints.mat").read_bytes() == b"m"


def test_not_enough_disk_space_stops_before_downloading(server, tmp_path, monkeypatch):
    class Usage:
        free = 10_000

    monkeypatch.setattr(fetch_mod.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(PoserError, match="not enough disk space"):
        fetch_coco(tmp_path, server.url, splits=("val",))
    assert server.gets("zips/val2017.zip") == []


def test_checksum_mismatch_and_http_errors(server, tmp_path):
    data = server.files["zips/val2017.zip"]
    f = RemoteFile(f"{server.url}/zips/val2017.zip", tmp_path / "v.zip", size=len(data), md5="0" * 32)
    with pytest.raises(PoserError, match="MD5 mismatch"):
        download(f, backoff=0.01)
    assert not (tmp_path / "v.zip").exists() and not (tmp_path / "v.zip.part").exists()
    with pytest.raises(PoserError, match="HTTP 404"):
        download(RemoteFile(f"{server.url}/nope.zip", tmp_path / "n.zip"), backoff=0.01)
    assert len(server.gets("nope.zip")) == 1                      # a 404 is not retried
    server.fail["zips/val2017.zip"] = 99
    with pytest.raises(PoserError, match="giving up after 2 retries"):
        download(RemoteFile(f"{server.url}/zips/val2017.zip", tmp_path / "w.zip"), retries=2, backoff=0.01)


def test_fetch_lsp_from_folder_zip_and_url(tmp_path):
    src = tmp_path / "src" / "lspet_dataset"
    src.mkdir(parents=True)
    make_lsp_folder(src, "lspet", n=12)
    data = tmp_path / "data"
    s1 = fetch_lsp(str(src), data_root=data)
    assert s1["layout"] == "lspet" and s1["dest"] == str(data / "lspet") and s1["imported"] == "imported"
    assert s1["splits"]["train"]["instances"] == 12 and s1["splits"]["val"]["instances"] == 0
    assert len(Cache(Path(s1["splits"]["train"]["cache"]))) == 12
    s2 = fetch_lsp(str(src), data_root=data)
    assert s2["imported"] == "already present" and s2["splits"]["train"]["reused"]
    files = sorted(p for p in src.rglob("*") if p.is_file())
    zbytes = _zip({f"lspet_dataset/{p.relative_to(src)}": p.read_bytes() for p in files})
    (tmp_path / "lspet.zip").write_bytes(zbytes)
    s3 = fetch_lsp(str(tmp_path / "lspet.zip"), dest=tmp_path / "fromzip", data_root=data)
    assert s3["images"] == 12 and (tmp_path / "fromzip" / "images" / "im00012.jpg").is_file()
    srv = FileServer({"lspet.zip": zbytes})
    try:
        s4 = fetch_lsp(f"{srv.url}/lspet.zip", dest=tmp_path / "fromurl", data_root=data, backoff=0.01)
    finally:
        srv.close()
    assert s4["download"] == "downloaded" and s4["splits"]["train"]["instances"] == 12
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoserError, match="no joints.mat"):
        fetch_lsp(str(tmp_path / "empty"), data_root=data)
    # --data elsewhere: nothing appears in ./data.
    work = tmp_path / "cwd"
    work.mkdir()
    old = os.getcwd()
    os.chdir(work)
    try:
        fetch_lsp(str(src), dest=tmp_path / "elsewhere" / "lspet", prepare=False)
    finally:
        os.chdir(old)
    assert not (work / "data").exists() and (tmp_path / "elsewhere" / "lspet" / "joints.mat").is_file()


def test_fetch_lsp_real_lspet(lspet, tmp_path):
    res = CliRunner().invoke(app, ["fetch-lsp", "--from", str(lspet), "--data", str(tmp_path / "lspet"),
                                   "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["layout"] == "lspet" and s["images"] == 9000
    assert s["splits"]["train"]["instances"] == 8000 and s["splits"]["val"]["instances"] == 1000


def test_a_zip_bomb_is_no_space_before_a_byte_is_written_and_the_zip_is_kept(tmp_path, monkeypatch):
    """A small zip whose member unpacks to more than the disk has free: refused up front as
    'no space' (never 'corrupt'), nothing extracted, and fetch keeps the good download."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("annotations/big.json", b"\0" * (64 << 20))          # 64 MiB of zeros: 65 KB zipped
    import shutil

    monkeypatch.setattr(fetch_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 0, 32 << 20))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(fetch_mod.NoSpace, match="unpack to 0.07 GB.*0.03 GB free; nothing was extracted"):
        extract_zip(bomb, root)
    assert not (root / "annotations").exists() and not extracted(root, "bomb.zip") and bomb.is_file()


def test_fetch_lsp_downloads_are_keyed_by_url_and_an_unsafe_one_is_deleted(tmp_path):
    src = tmp_path / "src" / "lspet_dataset"
    src.mkdir(parents=True)
    make_lsp_folder(src, "lspet", n=12)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    good = _zip({f"lspet_dataset/{p.relative_to(src)}": p.read_bytes() for p in files})
    evil = _zip({"../evil.txt": b"x"})
    srv = FileServer({"a/lspet.zip": good, "b/lspet.zip": evil})
    data = tmp_path / "data"
    try:
        fetch_lsp(f"{srv.url}/a/lspet.zip", dest=tmp_path / "one", data_root=data, backoff=0.01, prepare=False)
        with pytest.raises(PoserError, match="unsafe entry.*download was deleted"):       # not a.zip's copy
            fetch_lsp(f"{srv.url}/b/lspet.zip", dest=tmp_path / "two", data_root=data, backoff=0.01, prepare=False)
    finally:
        srv.close()
    assert [r[1] for r in srv.requests if r[0] == "GET"] == ["a/lspet.zip", "b/lspet.zip"]
    left = [f.read_bytes() for f in (data / ".downloads").glob("*")] if (data / ".downloads").exists() else []
    assert evil not in left and not (tmp_path / "evil.txt").exists()


def test_ctrl_c_stops_a_download_within_a_second_and_keeps_the_part(tmp_path):
    import signal
    import time

    class Slow(BaseHTTPRequestHandler):     # 8 MB at 640 KB/s: 12 s to the end of the file
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(8 << 20))
            self.end_headers()
            try:
                for _ in range(128):
                    self.wfile.write(b"\0" * (64 << 10))
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/big.zip"
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))      # a real Ctrl-C
    # Python's own Ctrl-C handler, as in a terminal: a shell starts background jobs (`cmd &`,
    # nohup) with SIGINT ignored, and there Ctrl-C would never reach the download at all.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.time()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fetch_mod.download_all([RemoteFile(url, tmp_path / "big.zip")], backoff=0.01)
    finally:
        httpd.shutdown()
        signal.signal(signal.SIGINT, handler)
    assert time.time() - t0 < 3.0                    # not at the end of the file (12 s)
    part = tmp_path / "big.zip.part"
    assert part.is_file() and 0 < part.stat().st_size < 8 << 20 and not (tmp_path / "big.zip").exists()


def test_refused_connections_and_non_http_urls_fail_at_once(tmp_path):
    import time

    t0 = time.time()
    with pytest.raises(PoserError, match="connection refused"):
        download(RemoteFile("http://127.0.0.1:1/x.zip", tmp_path / "x.zip"), backoff=1.0)
    with pytest.raises(PoserError, match="not an http"):
        download(RemoteFile("file:///etc/passwd", tmp_path / "y.zip"), backoff=1.0)
    assert time.time() - t0 < 5          # no 61 s of retries


def test_a_redirect_to_ftp_is_named_as_such(tmp_path):
    """Issue 37, case 19: it was reported as "connection refused"."""
    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1:9/lspet.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PoserError, match=r"redirected to ftp://127.0.0.1:9/lspet.zip; poser follows http"):
            fetch_lsp(f"http://127.0.0.1:{httpd.server_address[1]}/lspet.zip", dest=tmp_path / "d",
                      data_root=tmp_path / "data", backoff=0.01)
    finally:
        httpd.shutdown()
        httpd.server_close()
