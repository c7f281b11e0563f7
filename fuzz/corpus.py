"""Write seed corpora for the targets: ``python fuzz/corpus.py DIR`` → DIR/{gguf,safetensors,archive,hooks}/.

Seeds are real files (the ``gguf`` and ``safetensors`` writers, tarfile,
zipfile, zstandard) and the realistic hook requests of
``tests/test_hostile.py``, each with the selector byte(s) its target reads
first.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import _common  # noqa: F401
import zstandard


def write(root: Path) -> dict[str, Path]:
    from devstack.models import make_gguf, make_safetensors_file
    from fuzz.fuzz_hooks import ROUTES
    from tests.test_hostile import VALID

    dirs = {name: root / name for name in ("gguf", "safetensors", "archive", "hooks")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = make_gguf(Path(tmp) / "m.gguf", vocab=8).read_bytes()
        st = make_safetensors_file(Path(tmp) / "m.safetensors").read_bytes()
    # FuzzedDataProvider reads the chunk size and the flag first: 2 bytes + 1 byte, then the file.
    (dirs["gguf"] / "seed").write_bytes(b"\x00\x10\x00" + gguf)
    (dirs["safetensors"] / "seed").write_bytes(b"\x00\x10\x00" + st)
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": st}
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    zf_buf = io.BytesIO()
    with zipfile.ZipFile(zf_buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    import gzip

    (dirs["archive"] / "tar").write_bytes(b"\x00" + tar.getvalue())
    (dirs["archive"] / "tar.gz").write_bytes(b"\x01" + gzip.compress(tar.getvalue()))
    (dirs["archive"] / "tar.zst").write_bytes(b"\x02" + zstandard.ZstdCompressor().compress(tar.getvalue()))
    (dirs["archive"] / "zip").write_bytes(b"\x03" + zf_buf.getvalue())
    for route, bodies in VALID.items():
        for i, body in enumerate(bodies):
            name = route.strip("/").replace("/", "_") + f"_{i}"
            (dirs["hooks"] / name).write_bytes(bytes([ROUTES.index(route)]) + json.dumps(body).encode())
    return dirs


if __name__ == "__main__":
    for name, d in write(Path(sys.argv[1])).items():
        print(f"{name}: {d}")
