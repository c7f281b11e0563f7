"""``python -m jobs upload-server`` end to end: real curl, real archives, a real registry.

Each test runs the server in-process (``run_session``) on a free loopback
port against the session's ``registry`` fixture, uploads the way the user
guide shows (``curl -fS --progress-bar -H "Authorization: Bearer $TOKEN" -T
FILE "$UPLOAD_URL[?filename=NAME]"``), or with ``requests`` / a raw socket
for the edge cases, and then checks the artifact in the registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import zstandard

from devstack.models import (
    make_diffusers_tree,
    make_gguf,
    make_safetensors_model,
    safetensors_variants,
    truncate_copy,
)
from devstack.registry import RegistryServer, free_port
from jobs import cli
from jobs.upload_server import run_session
from lib.oci.client import RegistryClient
from lib.oci.errors import NotFound
from tests.test_archive import zeros_zip

TOKEN = "upload-token-" + "x" * 20


@dataclass
class Server:
    url: str
    port: int
    repo: str
    result_file: Path
    scratch: Path
    thread: threading.Thread
    stop: threading.Event
    rc: dict

    def wait(self, timeout: float = 30) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not exit"
        return self.rc["rc"]

    def result(self) -> dict:
        return json.loads(self.result_file.read_text())


def serve_in_thread(argv: list[str], port: int) -> tuple[threading.Thread, threading.Event, dict]:
    """``python -m jobs upload-server`` in a thread (``stop`` ends the session), once it listens."""
    args = cli.parser().parse_args(argv)
    stop, rc = threading.Event(), {}
    t = threading.Thread(target=lambda: rc.setdefault("rc", run_session(args, stop=stop)), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return t, stop, rc
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)


@pytest.fixture
def start(registry: RegistryServer, tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def make(
        *, expires_in: float | None = None, max_spool: int = 1 << 30, max_upload: int | None = None,
        model_name: str = "",
    ) -> Server:
        n = len(servers)
        port = free_port()
        repo = f"ai-models/catalog/namespaced/test/upload-{uuid.uuid4().hex[:8]}/{uuid.uuid4()}"
        (tmp_path / "token").write_text(TOKEN + "\n")
        expires = ""
        if expires_in is not None:
            expires = (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat().replace("+00:00", "Z")
        # The real command line, as the hooks build it.
        argv = [
            "upload-server",
            "--destination", f"{registry.host}/{repo}",
            "--listen", f"127.0.0.1:{port}",
            "--token-file", str(tmp_path / "token"),
            "--insecure-registry",
            "--result-file", str(tmp_path / f"result{n}.json"),
            "--scratch-dir", str(tmp_path / f"scratch{n}"),
            "--expires-at", expires,
            "--max-spool-bytes", str(max_spool),
        ]  # fmt: skip
        if max_upload is not None:
            argv += ["--max-upload-bytes", str(max_upload)]
        if model_name:
            argv += ["--model-name", model_name]
        t, stop, rc = serve_in_thread(argv, port)
        s = Server(
            f"http://127.0.0.1:{port}/upload",
            port,
            repo,
            tmp_path / f"result{n}.json",
            tmp_path / f"scratch{n}",
            t,
            stop,
            rc,
        )
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop.set()
        s.thread.join(30)


@pytest.fixture
def client(registry: RegistryServer) -> RegistryClient:
    return RegistryClient(registry.host, insecure=True)


def curl(file: Path | str, url: str, *extra: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    """The user guide's command, plus the HTTP status on the last line."""
    return subprocess.run(
        [
            "curl",
            "-fS",
            "--progress-bar",
            "-H",
            f"Authorization: Bearer {token}",
            "-T",
            str(file),
            url,
            "-w",
            "\n%{http_code}",
            *extra,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )


def curl_ok(file: Path, url: str) -> dict:
    p = curl(file, url)
    assert p.returncode == 0, p.stderr
    body, status = p.stdout.rsplit("\n", 1)
    assert status == "201"
    return json.loads(body)


def curl_status(p: subprocess.CompletedProcess) -> int:
    return int(p.stdout.rsplit("\n", 1)[-1])


def put(url: str, data, *, token: str = TOKEN, headers: dict | None = None, **kw) -> requests.Response:
    h = {"Authorization": f"Bearer {token}", **(headers or {})}
    return requests.put(url, data=data, headers=h, timeout=60, **kw)


def layers(client: RegistryClient, repo: str, result: dict) -> dict[str, dict]:
    digest = result["artifact"]["digest"]
    m = json.loads(client.get_manifest(repo, digest).body)
    return {layer["annotations"]["org.cncf.model.filepath"]: layer for layer in m["layers"]}


def assert_nothing_published(client: RegistryClient, repo: str) -> None:
    with pytest.raises(NotFound):
        client.get_manifest(repo, "latest")


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def tar_bytes(root: Path, kind: str = "tar") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz" if kind == "gz" else "w") as tf:
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=p.relative_to(root).as_posix(), recursive=False)
    data = raw.getvalue()
    return zstandard.ZstdCompressor().compress(data) if kind == "zst" else data


def zip_bytes(root: Path, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=compression) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return raw.getvalue()


@pytest.fixture(scope="module")
def st_model(tmp_path_factory) -> Path:
    return make_safetensors_model(tmp_path_factory.mktemp("st") / "model", sentence_transformers=True)


# ---------------------------------------------------------------- the user guide's uploads


def test_direct_gguf_with_curl(start, client, tmp_path):
    srv = start()
    gguf = make_gguf(tmp_path / "model.gguf", pooling=False, context_length=4096)
    result = curl_ok(gguf, srv.url)
    assert result["source"]["resolvedType"] == "Upload"
    assert result["resolved"]["format"] == "GGUF"
    assert result["artifact"]["digest"].startswith("sha256:")
    assert srv.wait() == 0
    assert srv.result() == result
    got = layers(client, srv.repo, result)
    assert list(got) == ["model.gguf"]
    assert got["model.gguf"]["digest"] == sha(gguf)


def test_zip_bundle_of_the_real_minilm(start, client, tmp_path, minilm_dir):
    srv = start()
    bundle = tmp_path / "model-bundle.zip"
    bundle.write_bytes(zip_bytes(minilm_dir, zipfile.ZIP_STORED))
    result = curl_ok(bundle, srv.url + "?filename=model-bundle.zip")
    assert result["resolved"]["format"] == "Safetensors"
    got = layers(client, srv.repo, result)
    assert got["model.safetensors"]["digest"] == sha(minilm_dir / "model.safetensors")
    assert got["config.json"]["digest"] == sha(minilm_dir / "config.json")
    assert srv.wait() == 0
    assert not any(srv.scratch.iterdir()), "the zip spool is removed"


def test_the_models_name_names_an_upload_that_has_none(start, client, tmp_path, st_model):
    """--model-name (the hook passes the Model's name) becomes the ModelPack descriptor.name."""
    srv = start(model_name="my-upload")
    f = tmp_path / "m.tar"
    f.write_bytes(tar_bytes(st_model))
    result = curl_ok(f, f"{srv.url}?filename=m.tar")
    m = json.loads(client.get_manifest(srv.repo, result["artifact"]["digest"]).body)
    with client.open_blob(srv.repo, m["config"]["digest"]) as chunks:
        config = json.loads(b"".join(chunks))
    assert config["descriptor"]["name"] == "my-upload"
    assert "sourceURL" not in config["descriptor"], "the spool file is no source URL"
    assert srv.wait() == 0


@pytest.mark.parametrize(
    "filename,kind",
    [
        ("m.tar", "tar"),
        ("m.tar.gz", "gz"),
        ("m.tgz", "gz"),
        ("m.tar.zst", "zst"),
        ("m.tar.zstd", "zst"),
        ("m.tzst", "zst"),
        ("m.zip", "zip"),
    ],  # fmt: skip
)
def test_every_archive_type(filename, kind, start, client, tmp_path, st_model):
    srv = start()
    f = tmp_path / filename
    f.write_bytes(zip_bytes(st_model) if kind == "zip" else tar_bytes(st_model, kind))
    result = curl_ok(f, f"{srv.url}?filename={filename}")
    assert result["resolved"]["format"] == "Safetensors"
    got = layers(client, srv.repo, result)
    assert got["model.safetensors"]["digest"] == sha(st_model / "model.safetensors")
    assert "1_Pooling/config.json" in got
    assert srv.wait() == 0


def test_diffusers_and_gguf_archives(start, client, tmp_path):
    tree = make_diffusers_tree(tmp_path / "diff")
    srv = start()
    f = tmp_path / "pipe.tar.zst"
    f.write_bytes(tar_bytes(tree, "zst"))
    result = curl_ok(f, srv.url + "?filename=pipe.tar.zst")
    assert result["resolved"]["format"] == "Diffusers"
    assert "unet/diffusion_pytorch_model.safetensors" in layers(client, srv.repo, result)
    srv2 = start()
    g = tmp_path / "g"
    make_gguf(g / "qwen-q4.gguf")
    f2 = tmp_path / "gguf.tgz"
    f2.write_bytes(tar_bytes(g, "gz"))
    result2 = curl_ok(f2, srv2.url + "?filename=gguf.tgz")
    assert result2["resolved"]["format"] == "GGUF"
    assert list(layers(client, srv2.repo, result2)) == ["qwen-q4.gguf"]


def test_chunked_body_from_stdin(start, client, tmp_path):
    srv = start()
    gguf = make_gguf(tmp_path / "model.gguf")
    p = subprocess.run(
        f'curl -fsS -H "Authorization: Bearer {TOKEN}" -T - "{srv.url}" < {gguf}',
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert layers(client, srv.repo, result)["model.gguf"]["digest"] == sha(gguf)


# ---------------------------------------------------------------- auth


def test_wrong_or_missing_token_then_a_good_upload(start, client, tmp_path):
    srv = start()
    gguf = make_gguf(tmp_path / "model.gguf")
    p = curl(gguf, srv.url, token="wrong")
    assert p.returncode == 22 and curl_status(p) == 401
    r = requests.put(srv.url, data=gguf.read_bytes(), timeout=10)
    assert r.status_code == 401 and r.json()["error"]["reason"] == "UploadRejected"
    r = requests.head(srv.url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401
    r = put(srv.url, gguf.read_bytes(), token=TOKEN[:-1])  # a prefix is not the token
    assert r.status_code == 401
    assert_nothing_published(client, srv.repo)
    curl_ok(gguf, srv.url)
    assert srv.wait() == 0


def test_refused_token_reads_no_body(start, tmp_path):
    """A 2 GB body with a wrong token is answered at once and the connection closed."""
    srv = start()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        b"PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\nContent-Length: 2147483648\r\n\r\n"
    )
    t0 = time.monotonic()
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401")
    sent = 0
    with pytest.raises(OSError):  # the server closes instead of draining 2 GB
        while time.monotonic() - t0 < 20:
            s.sendall(bytes(1 << 20))
            sent += 1 << 20
    assert sent < 64 << 20
    s.close()


def test_expect_100_continue_waits_for_the_token(start, tmp_path):
    srv = start()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        b"PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n"
        b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    assert s.recv(65536).startswith(b"HTTP/1.1 401")  # never a 100 first
    s.close()


# ---------------------------------------------------------------- refused content


def _tar_with(tmp_path: Path, base: Path, add) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for p in sorted(base.rglob("*")):
            tf.add(p, arcname=p.relative_to(base).as_posix(), recursive=False)
        add(tf)
    f = tmp_path / f"hostile-{uuid.uuid4().hex[:6]}.tar"
    f.write_bytes(raw.getvalue())
    return f


def _member(name: str, type_=tarfile.REGTYPE, data: bytes = b"", **kw):
    def add(tf: tarfile.TarFile) -> None:
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.size = len(data)
        for k, v in kw.items():
            setattr(ti, k, v)
        tf.addfile(ti, io.BytesIO(data) if data else None)

    return add


def _many(tf: tarfile.TarFile) -> None:
    # Directories count as members but are never pushed, so the cap is reached quickly.
    for i in range(10_001):
        ti = tarfile.TarInfo(f"junk/{i}")
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)


def hostile_uploads(tmp_path: Path, st_model: Path) -> dict[str, tuple[Path, str, int, str]]:
    """name → (file, ?filename=, expected status, words in the message)."""
    variants = safetensors_variants(tmp_path / "variants")
    lying = tmp_path / "lying"
    lying.mkdir()
    (lying / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    )
    (lying / "model.safetensors").write_bytes(variants["out_of_bounds"].read_bytes())
    gguf = make_gguf(tmp_path / "g.gguf")
    cut_gguf = truncate_copy(gguf, tmp_path / "cut.gguf", 40)
    bomb = tmp_path / "bomb.tar.zst"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        ti = tarfile.TarInfo("weights.bin")
        ti.size = 100 << 20
        tf.addfile(ti, io.BytesIO(bytes(ti.size)))
    bomb.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw.getvalue()))
    nested = tmp_path / "nested.zip"
    nested.write_bytes(zip_bytes(st_model))
    nested_dir = tmp_path / "nested_dir"
    nested_dir.mkdir()
    (nested_dir / "config.json").write_text("{}")
    (nested_dir / "inner.zip").write_bytes(nested.read_bytes())
    tar_gz = tmp_path / "real.tar.gz"
    tar_gz.write_bytes(tar_bytes(st_model, "gz"))
    bare = tmp_path / "model.safetensors"
    bare.write_bytes((st_model / "model.safetensors").read_bytes())
    # ~260 KB → 256 MiB, and 100 members each under the per-member floor that add up to a bomb
    zip_bomb = zeros_zip(tmp_path / "zip-bomb.zip", {f"w{i}.safetensors": 64 << 20 for i in range(4)})
    many_small = zeros_zip(tmp_path / "many.zip", {f"c{i}.json": 1 << 20 for i in range(100)})
    return {
        "traversal": (
            _tar_with(tmp_path, st_model, _member("../../evil.json", data=b"{}")),
            "b.tar",
            400,
            "..",
        ),
        "absolute": (
            _tar_with(tmp_path, st_model, _member("/etc/cron.d/x", data=b"x")),
            "b.tar",
            400,
            "absolute",
        ),
        "symlink-out": (
            _tar_with(tmp_path, st_model, _member("leak", tarfile.SYMTYPE, linkname="/etc/passwd")),
            "b.tar",
            400,
            "link",
        ),
        "hardlink": (
            _tar_with(tmp_path, st_model, _member("hard", tarfile.LNKTYPE, linkname="../x")),
            "b.tar",
            400,
            "link",
        ),
        "device": (_tar_with(tmp_path, st_model, _member("null", tarfile.CHRTYPE)), "b.tar", 400, "regular"),
        "duplicate": (
            _tar_with(tmp_path, st_model, _member("config.json", data=b"{}")),
            "b.tar",
            400,
            "twice",
        ),
        "nested": (_tar_with(tmp_path, nested_dir, lambda tf: None), "b.tar", 400, "nested"),
        "member-count": (_tar_with(tmp_path, st_model, _many), "b.tar", 400, "members"),
        "bomb": (bomb, "bomb.tar.zst", 413, "bomb"),
        "zip-bomb": (zip_bomb, "b.zip", 413, "bomb"),
        "zip-many-small": (many_small, "b.zip", 413, "the archive expands"),
        "lying-safetensors": (_tar_with(tmp_path, lying, lambda tf: None), "b.tar", 422, "model.safetensors"),
        "cut-gguf": (cut_gguf, "", 422, ""),
        "magic-mismatch": (tar_gz, "b.zip", 400, "should be a zip"),
        "archive-without-name": (tar_gz, "", 400, "filename"),
        "bare-safetensors": (bare, "model.safetensors", 415, "config.json"),
        "unknown-type": (gguf, "model.7z", 415, ".tar.zst"),
    }


def test_hostile_uploads_are_refused_and_the_session_goes_on(start, client, tmp_path, st_model):
    srv = start()
    for name, (f, filename, status, words) in hostile_uploads(tmp_path, st_model).items():
        url = srv.url + (f"?filename={filename}" if filename else "")
        p = curl(f, url)
        assert curl_status(p) == status, (name, p.stdout, p.stderr)
        r = put(url, f.read_bytes())
        assert r.status_code == status, name
        err = r.json()["error"]
        assert err["reason"] == "UploadRejected", name
        assert words in err["message"], (name, err["message"])
        assert srv.thread.is_alive()
    assert_nothing_published(client, srv.repo)
    assert not list(tmp_path.parent.rglob("evil.json")), "nothing is ever extracted"
    assert not srv.scratch.exists() or not any(srv.scratch.iterdir())
    good = make_gguf(tmp_path / "good.gguf")
    result = curl_ok(good, srv.url)
    assert srv.wait() == 0
    assert srv.result() == result


def test_zip_over_the_spool_limit(start, tmp_path, st_model):
    srv = start(max_spool=1000)
    f = tmp_path / "b.zip"
    f.write_bytes(zip_bytes(st_model))
    p = curl(f, srv.url + "?filename=b.zip")
    assert curl_status(p) == 413
    # chunked: no size up front, the spool itself stops at the limit
    r = put(srv.url + "?filename=b.zip", iter([f.read_bytes()]))
    assert r.status_code == 413
    assert not any(srv.scratch.iterdir())


# ---------------------------------------------------------------- one upload at a time, resumption


def _slow_body(data: bytes, gate: threading.Event) -> Iterator[bytes]:
    yield data[: len(data) // 2]
    gate.wait(20)
    yield data[len(data) // 2 :]


def test_second_upload_while_one_is_running_gets_409(start, client, tmp_path):
    srv = start()
    gguf = make_gguf(tmp_path / "model.gguf", tensor_elems=1 << 16)
    data = gguf.read_bytes()
    gate = threading.Event()
    first: dict = {}
    t = threading.Thread(target=lambda: first.setdefault("r", put(srv.url, _slow_body(data, gate))))
    t.start()
    deadline = time.monotonic() + 10
    while (
        requests.head(srv.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).headers[
            "Upload-State"
        ]
        != "receiving"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p = curl(gguf, srv.url)
    assert curl_status(p) == 409
    gate.set()
    t.join(30)
    assert first["r"].status_code == 201
    assert srv.wait() == 0


def _cut_upload(port: int, data: bytes, sent: int, query: str = "") -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        f"PUT /upload{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
    )
    s.sendall(data[:sent])
    time.sleep(0.2)
    s.close()


def _offset(url: str) -> int:
    r = requests.head(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200
    return int(r.headers["Upload-Offset"])


@pytest.mark.parametrize("archive", [False, True], ids=["gguf", "tar.gz"])
def test_resume_after_a_cut_connection(archive, start, client, tmp_path, st_model):
    srv = start()
    if archive:
        f = tmp_path / "b.tar.gz"
        f.write_bytes(tar_bytes(st_model, "gz"))
        query = "?filename=b.tar.gz"
    else:
        f = make_gguf(tmp_path / "model.gguf", tensor_elems=1 << 18)
        query = ""
    data = f.read_bytes()
    _cut_upload(srv.port, data, len(data) // 2, query)
    deadline = time.monotonic() + 10
    while (offset := _offset(srv.url)) < len(data) // 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert offset == len(data) // 2
    r = requests.head(srv.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.headers["Upload-State"] == "interrupted"
    assert r.headers["Range"] == f"bytes=0-{offset - 1}" and r.headers["Upload-Length"] == str(len(data))
    assert_nothing_published(client, srv.repo)
    # the wrong offset is refused and says where to resume
    r = put(srv.url + query, data[10:], headers={"Content-Range": f"bytes 10-{len(data) - 1}/{len(data)}"})
    assert r.status_code == 416 and r.headers["Upload-Offset"] == str(offset)
    # the documented resume: curl -C OFFSET -T FILE
    p = subprocess.run(
        ["curl", "-fsS", "-H", f"Authorization: Bearer {TOKEN}", "-C", str(offset), "-T", str(f), srv.url + query],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    got = layers(client, srv.repo, result)
    want = st_model / "model.safetensors" if archive else f
    assert got[want.name]["digest"] == sha(want)
    assert srv.wait() == 0


def test_a_fresh_put_replaces_an_interrupted_upload(start, client, tmp_path):
    srv = start()
    gguf = make_gguf(tmp_path / "model.gguf", tensor_elems=1 << 16)
    data = gguf.read_bytes()
    _cut_upload(srv.port, data, 5000)
    deadline = time.monotonic() + 10
    while True:  # 409 until the server has seen the cut connection go (slow on a loaded machine)
        r = put(srv.url, data[:100] + b"x", headers={"Content-Range": f"bytes 0-100/{len(data)}"})
        if r.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 202 and r.headers["Upload-Offset"] == "101"
    r = put(srv.url, data[101:], headers={"Content-Range": f"bytes 101-{len(data) - 1}/{len(data)}"})
    assert r.status_code == 422  # that body had a byte changed: a broken GGUF, never published
    assert_nothing_published(client, srv.repo)
    curl_ok(gguf, srv.url)
    assert srv.wait() == 0


# ---------------------------------------------------------------- expiry


def test_expiry_while_idle(start, client, tmp_path):
    srv = start(expires_in=1.0)
    assert srv.wait(15) == 2
    err = srv.result()["error"]
    assert err["reason"] == "UploadExpired" and "new token" in err["message"]


def test_expiry_drops_an_interrupted_upload(start, client, tmp_path):
    srv = start(expires_in=1.5)
    data = make_gguf(tmp_path / "model.gguf", tensor_elems=1 << 16).read_bytes()
    _cut_upload(srv.port, data, len(data) - 10)
    assert srv.wait(15) == 2
    assert srv.result()["error"]["reason"] == "UploadExpired"
    assert_nothing_published(client, srv.repo)


def test_an_upload_running_at_expiry_is_finished(start, client, tmp_path):
    gguf = make_gguf(tmp_path / "model.gguf", tensor_elems=1 << 16)
    data = gguf.read_bytes()
    srv = start(expires_in=2.0)
    gate = threading.Event()
    threading.Timer(3.0, gate.set).start()  # the second half arrives after the expiry
    r = put(srv.url, _slow_body(data, gate))  # chunked
    assert r.status_code == 201
    assert srv.wait() == 0
    assert layers(client, srv.repo, r.json())["model.gguf"]["digest"] == sha(gguf)


def test_other_paths_and_methods(start):
    srv = start()
    base = srv.url.rsplit("/", 1)[0]
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert requests.put(base + "/other", data=b"x", timeout=5).status_code == 404
    assert requests.post(srv.url, data=b"x", timeout=5).status_code == 405


def test_a_bundle_inside_a_top_directory_is_published_from_below_it(start, client, tmp_path, st_model):
    srv = start()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        tf.add(st_model, arcname="my-model")  # tar -czf b.tgz my-model/ (not its contents)
    r = put(srv.url + "?filename=b.tgz", raw.getvalue())
    assert r.status_code in (200, 201), r.text
    paths = layers(client, srv.repo, r.json())
    assert "config.json" in paths and not any(p.startswith("my-model/") for p in paths)


def test_both_framings_are_refused(start):
    srv = start()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        f"PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n4\r\nGGUF\r\n0\r\n\r\n".encode()
    )
    assert s.recv(65536).startswith(b"HTTP/1.1 400")
    s.close()


# ---------------------------------------------------------------- --max-upload-bytes


def _answer(s: socket.socket) -> tuple[int, dict[str, str], dict]:
    """One response read until the server closes: status, headers (lower-case names), JSON body."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else {}


def _raw_put(port: int, headers: str, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(
        f"PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{headers}\r\n".encode() + body
    )
    return s


def _chunks(data: bytes, size: int = 64 << 10) -> list[bytes]:
    """``data`` as HTTP/1.1 chunks of ``size`` bytes (without the final zero chunk)."""
    return [
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    ]


def _state(url: str) -> tuple[str, int]:
    r = requests.head(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    return r.headers["Upload-State"], int(r.headers["Upload-Offset"])


def _limit_message(body: dict, limit: int) -> str:
    err = body["error"]
    assert err["reason"] == "UploadRejected"
    assert f"at most {limit} bytes" in err["message"] and "AI_MODELS_UPLOAD_MAX_BYTES" in err["message"]
    return err["message"]


def test_max_upload_bytes_flag():
    base = ["upload-server", "--destination", "r/x", "--listen", "127.0.0.1:1", "--token-file", "t"]
    assert cli.parser().parse_args(base).max_upload_bytes == 1 << 40
    assert cli.parser().parse_args([*base, "--max-upload-bytes", "0"]).max_upload_bytes == 0  # no limit
    with pytest.raises(SystemExit):
        cli.parser().parse_args([*base, "--max-upload-bytes", "-1"])


def test_content_length_over_the_limit_is_refused_before_the_body(start, client, tmp_path):
    gguf = make_gguf(tmp_path / "model.gguf")
    limit = gguf.stat().st_size
    srv = start(max_upload=limit)
    # curl's large-file way: Expect: 100-continue. The 413 comes instead of the 100.
    s = _raw_put(srv.port, f"Content-Length: {limit + 1}\r\nExpect: 100-continue\r\n")
    status, _, body = _answer(s)
    assert status == 413
    assert f"the upload is {limit + 1} bytes" in _limit_message(body, limit)
    # 2 GB sent without waiting: answered at once, and the connection closed instead of read
    s = _raw_put(srv.port, "Content-Length: 2147483648\r\n")
    t0 = time.monotonic()
    assert s.recv(65536).startswith(b"HTTP/1.1 413")
    sent = 0
    with pytest.raises(OSError):
        while time.monotonic() - t0 < 20:
            s.sendall(bytes(1 << 20))
            sent += 1 << 20
    assert sent < 64 << 20
    s.close()
    # the size from Content-Range, and the real curl
    r = put(srv.url, b"GGUF", headers={"Content-Range": f"bytes 0-3/{limit + 1}"})
    assert r.status_code == 413 and _limit_message(r.json(), limit)
    over = tmp_path / "over.gguf"
    over.write_bytes(gguf.read_bytes() + b"\0")
    p = curl(over, srv.url)
    assert curl_status(p) == 413, p.stdout
    assert _state(srv.url) == ("idle", 0)
    assert_nothing_published(client, srv.repo)
    curl_ok(gguf, srv.url)  # exactly the limit
    assert srv.wait() == 0


def test_chunked_upload_over_the_limit_is_dropped_and_the_session_goes_on(start, client, tmp_path):
    big = make_gguf(tmp_path / "big.gguf", tensor_elems=1 << 16).read_bytes()  # 512 KiB
    limit = 200_000
    srv = start(max_upload=limit)
    s = _raw_put(srv.port, "Transfer-Encoding: chunked\r\n")
    for piece in _chunks(big)[:4]:  # 4 x 64 KiB: the 4th crosses the limit
        s.sendall(piece)
    status, _, body = _answer(s)
    assert status == 413
    _limit_message(body, limit)
    assert _state(srv.url) == ("idle", 0), "the upload is dropped, the session waits"
    assert_nothing_published(client, srv.repo)
    good = make_gguf(tmp_path / "model.gguf")
    p = subprocess.run(
        f'curl -fsS -H "Authorization: Bearer {TOKEN}" -T - "{srv.url}" < {good}',
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert layers(client, srv.repo, json.loads(p.stdout))["model.gguf"]["digest"] == sha(good)
    assert srv.wait() == 0


def test_resumed_parts_count_toward_the_limit(start, client, tmp_path):
    """No size announced up front: each resumed part is checked as offset + part."""
    big = make_gguf(tmp_path / "big.gguf", tensor_elems=1 << 16).read_bytes()
    limit, held = 300_000, 128 << 10
    srv = start(max_upload=limit)
    # a chunked upload (no total) cut after 128 KiB: interrupted, resumable
    s = _raw_put(srv.port, "Transfer-Encoding: chunked\r\n")
    for piece in _chunks(big[:held]):
        s.sendall(piece)
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 10
    while _state(srv.url) != ("interrupted", held):
        assert time.monotonic() < deadline, _state(srv.url)
        time.sleep(0.05)
    # a part whose headers say it ends past the limit: refused before its body; the upload stays
    part = 200_000
    s = _raw_put(
        srv.port,
        f"Content-Range: bytes {held}-{held + part - 1}/*\r\nContent-Length: {part}\r\nExpect: 100-continue\r\n",
    )
    status, headers, body = _answer(s)
    assert status == 413 and headers["upload-offset"] == str(held)
    assert f"the upload is {held + part} bytes" in _limit_message(body, limit)
    assert _state(srv.url) == ("interrupted", held)
    # a chunked part (no end announced): counted as it arrives, the upload dropped past the limit
    s = _raw_put(srv.port, f"Content-Range: bytes {held}-*/*\r\nTransfer-Encoding: chunked\r\n")
    for piece in _chunks(big[held:])[:3]:  # 128 + 3 x 64 KiB = 320 KiB > 300,000
        s.sendall(piece)
    status, _, body = _answer(s)
    assert status == 413
    _limit_message(body, limit)
    assert _state(srv.url) == ("idle", 0)
    assert_nothing_published(client, srv.repo)
    curl_ok(make_gguf(tmp_path / "model.gguf"), srv.url)
    assert srv.wait() == 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_upload_that_exactly_fits_the_limit_passes(framing, start, client, tmp_path):
    gguf = make_gguf(tmp_path / "model.gguf", tensor_elems=1 << 16)
    srv = start(max_upload=gguf.stat().st_size)
    source = [str(gguf), srv.url] if framing == "content-length" else ["-", srv.url]
    with gguf.open("rb") as stdin:
        p = subprocess.run(
            ["curl", "-fsS", "-H", f"Authorization: Bearer {TOKEN}", "-T", *source],
            stdin=stdin, capture_output=True, timeout=60,
        )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert layers(client, srv.repo, json.loads(p.stdout))["model.gguf"]["digest"] == sha(gguf)
    assert srv.wait() == 0


def test_conflicting_content_lengths_are_refused(start, client):
    """Two lengths: a proxy could frame (and size-check) by one while we read by the other."""
    srv = start(max_upload=1000)
    for first, second in ((10, 5000), (5000, 10)):
        s = _raw_put(srv.port, f"Content-Length: {first}\r\nContent-Length: {second}\r\n", b"GGUF" + bytes(6))
        status, _, body = _answer(s)
        assert status == 400 and "more than once" in body["error"]["message"]
    assert _state(srv.url) == ("idle", 0)
    assert_nothing_published(client, srv.repo)
