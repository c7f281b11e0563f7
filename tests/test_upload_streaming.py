"""Streaming uploads: what is checked before any byte is pushed, and what a refusal leaves.

A direct GGUF and a zip name all their files before their bytes (the zip's
central directory, read once it is spooled), so the layout is checked first
and nothing is pushed for a refused one; a tar stream names its files only
as it reaches them, so they are pushed as they arrive and the layout is
checked after the last one, before the config and manifest: a refused tar
leaves no tag and no manifest. Against the real upload server and registry.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile

import pytest
import requests

from lib.oci.client import RegistryClient
from lib.oci.errors import NotFound
from tests import test_upload_server
from tests.test_archive import make_tar, make_zip
from tests.test_upload_server import TOKEN, assert_nothing_published, layers
from tests.test_upload_server import client as client

start = test_upload_server.start  # the real upload server against the real registry (a fixture)

NO_LAYOUT = {"config.json": b'{"architectures": ["BertModel"]}', "README.md": b"# a card without weights\n"}


def put(url: str, data: bytes, filename: str) -> requests.Response:
    return requests.put(
        f"{url}?filename={filename}", data=data, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_no_tags(client: RegistryClient, repo: str) -> None:
    assert_nothing_published(client, repo)
    try:
        tags = client.list_tags(repo)
    except NotFound:  # the registry does not know a repository that holds no manifest
        tags = []
    assert tags == []


def test_a_refused_tar_stream_leaves_no_manifest_or_tag(start, client):
    """The tar's files were pushed as they arrived; the layout refusal tags nothing."""
    srv = start()
    r = put(srv.url, make_tar(NO_LAYOUT), "bundle.tar")
    assert r.status_code == 422, r.text
    assert "no *.safetensors weights" in r.json()["error"]["message"]
    assert_no_tags(client, srv.repo)
    # Pushed before the layout could be known: left untagged and unreferenced for the registry's GC.
    assert client.blob_exists(srv.repo, digest(NO_LAYOUT["config.json"])) is not None
    # The session goes on: a good upload in the same session is published.
    r = put(srv.url, make_tar({**NO_LAYOUT, "model.safetensors": _safetensors()}), "bundle.tar")
    assert r.status_code == 201, r.text
    assert srv.wait() == 0


@pytest.mark.parametrize("compression", ["deflate", "stored"])
def test_a_refused_zip_pushes_no_byte(compression, start, client):
    """A zip's layout is checked from its central directory before any member is pushed."""
    srv = start()
    mode = zipfile.ZIP_DEFLATED if compression == "deflate" else zipfile.ZIP_STORED
    r = put(srv.url, make_zip(NO_LAYOUT, mode), "bundle.zip")
    assert r.status_code == 422, r.text
    assert_no_tags(client, srv.repo)
    for data in NO_LAYOUT.values():
        assert client.blob_exists(srv.repo, digest(data)) is None


def test_files_a_zip_layout_leaves_out_are_never_pushed(start, client):
    srv = start()
    junk = b"print('custom code')\n"
    files = {**NO_LAYOUT, "model.safetensors": _safetensors(), "modeling_custom.py": junk}
    r = put(srv.url, make_zip(files), "bundle.zip")
    assert r.status_code == 201, r.text
    assert sorted(layers(client, srv.repo, r.json())) == ["README.md", "config.json", "model.safetensors"]
    assert client.blob_exists(srv.repo, digest(junk)) is None
    assert srv.wait() == 0


def _safetensors() -> bytes:
    """A minimal valid Safetensors file: one 4-element F32 tensor."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(16)
