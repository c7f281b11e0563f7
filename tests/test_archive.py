"""The archive walker and the upload adapter, without a server or a registry.

Archives are made by the real tarfile / zipfile / zstandard from real model
files; hostile variants are made with the same tools (or patched bytes where
a tool refuses to write the lie), and read through a reader that returns
short, irregular chunks like a socket does.
"""

from __future__ import annotations

import gzip
import io
import random
import stat
import struct
import tarfile
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from devstack.models import make_diffusers_tree, make_gguf, make_safetensors_model
from lib.archive import (
    ArchiveError,
    ArchiveKind,
    Limits,
    confirm_magic,
    kind_from_filename,
    member_path,
    walk_gguf,
    walk_tar,
    walk_zip,
)
from lib.sources import upload


class Trickle:
    """A non-seekable reader returning irregular short reads, like a socket."""

    def __init__(self, data: bytes, seed: int = 0):
        self.buf = io.BytesIO(data)
        self.rng = random.Random(seed)

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            n = 1 << 20
        return self.buf.read(max(1, min(n, self.rng.randint(1, 300_000))))


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_tar(files: dict[str, bytes], kind: ArchiveKind = ArchiveKind.TAR, extra=None) -> bytes:
    """A tar (optionally compressed) of ``files``; ``extra(tf)`` adds hostile entries."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        if extra:
            extra(tf)
    return compress(raw.getvalue(), kind)


def compress(data: bytes, kind: ArchiveKind) -> bytes:
    if kind == ArchiveKind.TAR_GZ:
        return gzip.compress(data, compresslevel=1)
    if kind == ArchiveKind.TAR_ZST:
        return zstandard.ZstdCompressor(level=1).compress(data)
    return data


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=compression, compresslevel=1) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return raw.getvalue()


def read_all(members: Iterator) -> dict[str, bytes]:
    return {m.path: b"".join(m.chunks()) for m in members}


def walk_bytes(data: bytes, kind: ArchiveKind, tmp_path: Path, limits: Limits = Limits()) -> dict[str, bytes]:
    if kind == ArchiveKind.ZIP:
        p = tmp_path / "a.zip"
        p.write_bytes(data)
        return read_all(walk_zip(str(p), limits))
    return read_all(walk_tar(Trickle(data), kind, limits))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> dict[str, bytes]:
    root = make_safetensors_model(tmp_path_factory.mktemp("st") / "m")
    return tree_files(root)


# ---------------------------------------------------------------- type detection


@pytest.mark.parametrize(
    "name,kind",
    [
        (None, ArchiveKind.GGUF),
        ("m.gguf", ArchiveKind.GGUF),
        ("b.tar", ArchiveKind.TAR),
        ("b.tar.gz", ArchiveKind.TAR_GZ),
        ("B.TGZ", ArchiveKind.TAR_GZ),
        ("b.zip", ArchiveKind.ZIP),
        ("b.tar.zst", ArchiveKind.TAR_ZST),
        ("b.tar.zstd", ArchiveKind.TAR_ZST),
        ("b.tzst", ArchiveKind.TAR_ZST),
    ],
)
def test_kind_from_filename(name, kind):
    assert kind_from_filename(name) == kind


@pytest.mark.parametrize("name", ["model.safetensors", "model.bin", "x.gz", "x.7z", "x.tar.xz"])
def test_unsupported_names_list_what_is_accepted(name):
    with pytest.raises(ArchiveError) as e:
        kind_from_filename(name)
    assert e.value.status == 415
    assert ".tar.zst" in e.value.message and ".gguf" in e.value.message


def test_bare_safetensors_says_why():
    with pytest.raises(ArchiveError, match="config.json"):
        kind_from_filename("model.safetensors")


def test_magic_confirms_each_kind(small_model):
    tar = make_tar(small_model)
    heads = {
        ArchiveKind.TAR: tar,
        ArchiveKind.TAR_GZ: compress(tar, ArchiveKind.TAR_GZ),
        ArchiveKind.TAR_ZST: compress(tar, ArchiveKind.TAR_ZST),
        ArchiveKind.ZIP: make_zip(small_model),
        ArchiveKind.GGUF: b"GGUF\x03\x00\x00\x00" + bytes(300),
    }
    for kind, data in heads.items():
        confirm_magic(kind, data[:262], "x")
        for other in ArchiveKind:
            if other != kind:
                with pytest.raises(ArchiveError) as e:
                    confirm_magic(other, data[:262], "x")
                assert e.value.status == 400


def test_archive_without_filename_gets_a_hint(small_model):
    with pytest.raises(ArchiveError, match=r"\?filename="):
        confirm_magic(ArchiveKind.GGUF, make_zip(small_model)[:262], None)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/../../x",
        "a/..",
        "/etc/passwd",
        "C:/x",
        "c:x",
        "a\\b",
        "..\\x",
        "a\x00b",
        "a\nb",
        "x" * 2000,
    ],
    ids=[
        "dotdot",
        "inner-dotdot",
        "trailing-dotdot",
        "absolute",
        "drive",
        "drive-rel",
        "backslash",
        "win-dotdot",
        "nul",
        "newline",
        "long",
    ],  # fmt: skip
)
def test_hostile_names(name):
    with pytest.raises(ArchiveError) as e:
        member_path(name)
    assert e.value.status == 400


@pytest.mark.parametrize(
    "name,want", [("./a/b", "a/b"), ("a//b", "a/b"), ("a/./b", "a/b"), (".", None), ("./", None)]
)
def test_names_normalised(name, want):
    assert member_path(name) == want


def test_too_deep():
    with pytest.raises(ArchiveError, match="deeper"):
        member_path("/".join(["d"] * 40), Limits(max_depth=32))


# ---------------------------------------------------------------- good archives


@pytest.mark.parametrize("kind", [ArchiveKind.TAR, ArchiveKind.TAR_GZ, ArchiveKind.TAR_ZST, ArchiveKind.ZIP])
def test_every_archive_type_yields_the_files(kind, small_model, tmp_path):
    gguf = make_gguf(tmp_path / "g" / "model.gguf").read_bytes()
    files = {**small_model, "extra/model.gguf": gguf}
    data = make_zip(files) if kind == ArchiveKind.ZIP else make_tar(files, kind)
    assert walk_bytes(data, kind, tmp_path) == files


def test_real_minilm_tar_zst(minilm_dir, tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        tf.add(minilm_dir, arcname=".")
    data = compress(raw.getvalue(), ArchiveKind.TAR_ZST)
    got = {
        m.path: (m.size, sum(len(c) for c in m.chunks()))
        for m in walk_tar(Trickle(data), ArchiveKind.TAR_ZST)
    }
    want = {k: (len(v), len(v)) for k, v in tree_files(minilm_dir).items() if not k.startswith(".")}
    assert got == want
    assert "1_Pooling/config.json" in got


def test_real_diffusers_zip_stored(tmp_path):
    root = make_diffusers_tree(tmp_path / "d")
    files = tree_files(root)
    assert walk_bytes(make_zip(files, zipfile.ZIP_STORED), ArchiveKind.ZIP, tmp_path) == files


def test_gnu_tar_format_and_directories(small_model, tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo("./sub")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        long = "sub/" + "n" * 150 + ".json"  # needs a GNU long-name header
        ti = tarfile.TarInfo(long)
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"{}"))
    assert walk_bytes(raw.getvalue(), ArchiveKind.TAR, tmp_path) == {long: b"{}"}


def test_dotfiles_and_macos_forks_are_skipped(tmp_path):
    files = {
        "config.json": b"{}",
        ".gitattributes": b"x",
        "__MACOSX/._config.json": b"y",
        "a/.DS_Store": b"z",
    }
    assert walk_bytes(make_zip(files), ArchiveKind.ZIP, tmp_path) == {"config.json": b"{}"}
    assert walk_bytes(make_tar(files), ArchiveKind.TAR, tmp_path) == {"config.json": b"{}"}


def test_member_is_readable_once_and_only_while_current(small_model):
    walker = walk_tar(Trickle(make_tar(small_model)), ArchiveKind.TAR)
    first = next(walker)
    b"".join(first.chunks())
    with pytest.raises(ArchiveError, match="only once"):
        next(first.chunks())
    second = next(walker)
    next(walker)
    with pytest.raises(ArchiveError, match="moved past"):
        b"".join(second.chunks())


def test_unread_members_are_skipped(small_model):
    paths = [m.path for m in walk_tar(Trickle(make_tar(small_model, ArchiveKind.TAR_GZ)), ArchiveKind.TAR_GZ)]
    assert paths == list(small_model)


# ---------------------------------------------------------------- hostile tar


def _entry(name: str, type_: bytes, **kw):
    def add(tf: tarfile.TarFile) -> None:
        ti = tarfile.TarInfo(name)
        ti.type = type_
        for k, v in kw.items():
            setattr(ti, k, v)
        tf.addfile(ti)

    return add


HOSTILE_TAR = {
    "symlink-out": (_entry("evil", tarfile.SYMTYPE, linkname="../../etc/passwd"), "link"),
    "symlink-in": (_entry("alias.json", tarfile.SYMTYPE, linkname="config.json"), "link"),
    "hardlink": (_entry("hard", tarfile.LNKTYPE, linkname="/etc/shadow"), "link"),
    "char-device": (_entry("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "regular files"),
    "block-device": (_entry("blk", tarfile.BLKTYPE), "regular files"),
    "fifo": (_entry("fifo", tarfile.FIFOTYPE), "regular files"),
    "traversal": (_entry("../../escape.json", tarfile.REGTYPE), "'..'"),
    "absolute": (_entry("/tmp/abs.json", tarfile.REGTYPE), "absolute"),
    "backslash": (_entry("..\\..\\win.json", tarfile.REGTYPE), "backslash"),
    "duplicate": (_entry("config.json", tarfile.REGTYPE), "twice"),
    "file-and-dir": (_entry("config.json/x", tarfile.REGTYPE), "is a file"),
}


@pytest.mark.parametrize("case", list(HOSTILE_TAR))
@pytest.mark.parametrize("kind", [ArchiveKind.TAR, ArchiveKind.TAR_GZ])
def test_hostile_tar_entries(case, kind, small_model, tmp_path):
    add, match = HOSTILE_TAR[case]
    data = make_tar(small_model, kind, extra=add)
    with pytest.raises(ArchiveError, match=match) as e:
        walk_bytes(data, kind, tmp_path)
    assert e.value.status == 400
    assert not any(tmp_path.rglob("*escape*")) and not Path("/tmp/abs.json").exists()


def test_nested_archive_by_name_and_by_magic(small_model, tmp_path):
    inner = make_tar(small_model, ArchiveKind.TAR_GZ)
    for name in ("inner.tar.gz", "weights.dat"):
        with pytest.raises(ArchiveError, match="nested"):
            walk_bytes(make_tar({**small_model, name: inner}), ArchiveKind.TAR, tmp_path)
    with pytest.raises(ArchiveError, match="nested"):
        walk_bytes(make_zip({"blob": make_zip(small_model)}), ArchiveKind.ZIP, tmp_path)


def test_pytorch_zip_checkpoints_are_not_nested_archives(tmp_path):
    files = {
        "model_index.json": b"{}",
        "unet/diffusion_pytorch_model.bin": make_zip({"archive/data.pkl": b"x"}),
    }
    assert walk_bytes(make_tar(files), ArchiveKind.TAR, tmp_path) == files


def test_member_count_cap(tmp_path):
    files = {f"f{i}.json": b"{}" for i in range(12)}
    for kind in (ArchiveKind.TAR, ArchiveKind.ZIP):
        data = make_zip(files) if kind == ArchiveKind.ZIP else make_tar(files)
        with pytest.raises(ArchiveError, match="more than 10 members|over the 10"):
            walk_bytes(data, kind, tmp_path, Limits(max_members=10))


def test_member_and_total_size_caps(tmp_path):
    files = {"a.bin": bytes(600), "b.bin": bytes(600)}
    for kind in (ArchiveKind.TAR, ArchiveKind.ZIP):
        data = make_zip(files) if kind == ArchiveKind.ZIP else make_tar(files)
        with pytest.raises(ArchiveError, match="over the 500-byte limit") as e:
            walk_bytes(data, kind, tmp_path, Limits(max_member_bytes=500))
        assert e.value.status == 413
        with pytest.raises(ArchiveError, match="expands to more than") as e:
            walk_bytes(data, kind, tmp_path, Limits(max_total_bytes=1000))
        assert e.value.status == 413


@pytest.mark.parametrize("kind", [ArchiveKind.TAR_GZ, ArchiveKind.TAR_ZST, ArchiveKind.ZIP])
def test_compression_bomb(kind, tmp_path):
    files = {"zeros.bin": bytes(4 << 20)}
    data = make_zip(files) if kind == ArchiveKind.ZIP else make_tar(files, kind)
    assert len(data) < (4 << 20) // 100
    with pytest.raises(ArchiveError, match="bomb") as e:
        walk_bytes(data, kind, tmp_path, Limits(ratio_floor=1 << 20, max_ratio=50))
    assert e.value.status == 413
    # one rule for tar and zip: the whole archive, with the same limit names and words
    assert e.value.message.startswith("the archive expands") and "over the 50x limit" in e.value.message
    # the same archive is fine under the default limits (the archive's ratio is checked past
    # 64 MiB; a zip member's past 4 MiB, and this one is exactly 4 MiB)
    assert walk_bytes(data, kind, tmp_path) == files


ZERO_MIB = bytes(1 << 20)


def zeros_zip(path: Path, zeros: dict[str, int], other: dict[str, bytes] | None = None) -> Path:
    """A deflated zip of zero-filled members, written 1 MiB at a time (never a whole member in memory)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in (other or {}).items():
            zf.writestr(name, data)
        for name, size in zeros.items():
            with zf.open(name, "w") as f:
                for _ in range(size >> 20):
                    f.write(ZERO_MIB)
    return path


def drain_sizes(members: Iterator) -> dict[str, int]:
    """Read every member to the end, keeping only its length (bounded memory)."""
    return {m.path: sum(len(c) for c in m.chunks()) for m in members}


@contextmanager
def bounded(max_bytes: int, max_seconds: float) -> Iterator[None]:
    """The block allocates at most ``max_bytes`` (tracemalloc peak) and takes at most ``max_seconds``."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= max_bytes, f"peak allocation {peak} bytes > {max_bytes}"
    assert took <= max_seconds, f"took {took:.2f} s > {max_seconds} s"


def test_zip_bomb_of_members_under_the_old_floor_is_refused_before_inflating(tmp_path):
    """The finding: a ~260 KB zip of four 64 MiB zero members expanded to 256 MiB."""
    bomb = zeros_zip(
        tmp_path / "bomb.zip",
        {f"model-0000{i}-of-00004.safetensors": 64 << 20 for i in range(1, 5)},
        {"config.json": b'{"model_type": "llama"}'},
    )
    assert bomb.stat().st_size < 300_000
    with bounded(4 << 20, 1.0), pytest.raises(ArchiveError) as e:
        drain_sizes(walk_zip(str(bomb)))
    assert e.value.status == 413
    msg = e.value.message  # the first member already fails its own check (the archive's would too)
    assert msg.startswith("member 'model-00001-of-00004.safetensors' expands") and "bomb" in msg
    assert "over the 100x limit" in msg
    assert "zip -0" in msg, "the message says what a user with genuine files can do"


def test_zip_of_many_small_high_ratio_members_is_refused(tmp_path):
    """Each 1 MiB member is under the per-member floor; together they are a bomb."""
    bomb = zeros_zip(tmp_path / "many.zip", {f"shards/{i:03}.json": 1 << 20 for i in range(100)})
    assert bomb.stat().st_size < 200_000
    with bounded(4 << 20, 1.0), pytest.raises(ArchiveError, match="the archive expands .* bomb") as e:
        drain_sizes(walk_zip(str(bomb)))
    assert e.value.status == 413


def test_zip_member_ratio_is_checked_for_members_under_64_mib(tmp_path):
    weights = random.Random(1).randbytes(1 << 20)
    # Zero-filled configs and placeholders up to the 4 MiB floor expand freely...
    fine = zeros_zip(
        tmp_path / "fine.zip",
        {"config.json": 1 << 20, "tokenizer.json": 4 << 20},
        {"model.safetensors": weights},
    )
    assert drain_sizes(walk_zip(str(fine))) == {
        "model.safetensors": 1 << 20, "config.json": 1 << 20, "tokenizer.json": 4 << 20,
    }  # fmt: skip
    # ...a larger member may not, even when the whole archive's ratio is tame (9 MiB from 1 MiB).
    hidden = zeros_zip(tmp_path / "hidden.zip", {"pad.bin": 8 << 20}, {"model.safetensors": weights})
    with pytest.raises(ArchiveError) as e:
        drain_sizes(walk_zip(str(hidden)))
    assert e.value.status == 413
    assert e.value.message.startswith("member 'pad.bin' expands") and "bomb" in e.value.message


def test_zip_whole_archive_limit_that_exactly_fits_passes(tmp_path):
    path = zeros_zip(tmp_path / "z.zip", {"a.bin": 2 << 20, "b.bin": 2 << 20})
    total, size = 4 << 20, path.stat().st_size
    exact = Limits(ratio_floor=total)
    assert drain_sizes(walk_zip(str(path), exact)) == {"a.bin": 2 << 20, "b.bin": 2 << 20}
    with pytest.raises(ArchiveError, match=f"the archive expands .* for more than {total - 1} bytes"):
        drain_sizes(walk_zip(str(path), Limits(ratio_floor=total - 1)))
    ratio = total / size
    assert drain_sizes(walk_zip(str(path), Limits(ratio_floor=0, max_ratio=ratio + 0.01)))
    with pytest.raises(ArchiveError, match="bomb"):
        drain_sizes(walk_zip(str(path), Limits(ratio_floor=0, max_ratio=ratio - 0.01)))


def test_zip_member_lying_about_its_compressed_size_is_refused(tmp_path):
    """A compress_size claimed 50x too large would pass the ratio check; zipfile never notices the lie."""
    path = zeros_zip(tmp_path / "lie.zip", {"pad.bin": 8 << 20})
    data = _patch_central(path.read_bytes(), 0, 20, "<I", (8 << 20) // 50)  # compressed size
    path.write_bytes(data)
    with pytest.raises(ArchiveError, match="central directory") as e:
        drain_sizes(walk_zip(str(path)))
    assert e.value.status == 400


def test_oversized_pax_header(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("x.json")
        ti.pax_headers = {"comment": "c" * 4096}
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"{}"))
    with pytest.raises(ArchiveError, match="extended header"):
        walk_bytes(raw.getvalue(), ArchiveKind.TAR, tmp_path, Limits(max_header_bytes=1024))


def test_gnu_sparse_refused(tmp_path):
    data = bytearray(make_tar({"s.bin": b"x" * 10}))
    data[156:157] = tarfile.GNUTYPE_SPARSE
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(ArchiveError, match="sparse|regular"):
        walk_bytes(bytes(data), ArchiveKind.TAR, tmp_path)


@pytest.mark.parametrize("kind", [ArchiveKind.TAR, ArchiveKind.TAR_GZ, ArchiveKind.TAR_ZST])
def test_cut_archive(kind, small_model, tmp_path):
    data = make_tar(small_model, kind)
    with pytest.raises(ArchiveError, match="cut short|corrupt|ended after|readable") as e:
        walk_bytes(data[: len(data) // 2], kind, tmp_path)
    assert e.value.status == 400


def test_data_after_the_tar_end(small_model, tmp_path):
    data = make_tar(small_model) + make_tar({"sneaky.json": b"{}"})
    with pytest.raises(ArchiveError, match="after the end"):
        walk_bytes(data, ArchiveKind.TAR, tmp_path)


def test_corrupt_gzip_crc(small_model, tmp_path):
    data = bytearray(make_tar(small_model, ArchiveKind.TAR_GZ))
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    with pytest.raises(ArchiveError, match="corrupt"):
        walk_bytes(bytes(data), ArchiveKind.TAR_GZ, tmp_path)


# ---------------------------------------------------------------- hostile zip


def _patch_central(data: bytes, index: int, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite a field of the index-th central directory entry."""
    pos = -1
    for _ in range(index + 1):
        pos = data.index(b"PK\x01\x02", pos + 1)
    buf = bytearray(data)
    struct.pack_into(fmt, buf, pos + offset, value)
    return bytes(buf)


def test_zip_symlink_and_device(tmp_path):
    for mode, match in ((stat.S_IFLNK | 0o777, "link"), (stat.S_IFCHR | 0o644, "regular files")):
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as zf:
            zf.writestr("config.json", b"{}")
            zi = zipfile.ZipInfo("evil")
            zi.create_system = 3
            zi.external_attr = mode << 16
            zf.writestr(zi, b"../../etc/passwd")
        with pytest.raises(ArchiveError, match=match):
            walk_bytes(raw.getvalue(), ArchiveKind.ZIP, tmp_path)


def test_zip_traversal_and_duplicates(tmp_path):
    with pytest.raises(ArchiveError, match="'..'"):
        walk_bytes(make_zip({"config.json": b"{}", "../../x.json": b"{}"}), ArchiveKind.ZIP, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it writes
        data = make_zip({"config.json": b"{}"}) if False else None
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as zf:
            zf.writestr("config.json", b"{}")
            zf.writestr("config.json", b"{'other': 1}")
        data = raw.getvalue()
    with pytest.raises(ArchiveError, match="twice"):
        walk_bytes(data, ArchiveKind.ZIP, tmp_path)


def test_zip_encrypted_entry(tmp_path):
    data = _patch_central(make_zip({"config.json": b"{}"}), 0, 8, "<H", 0x1)
    with pytest.raises(ArchiveError, match="encrypted"):
        walk_bytes(data, ArchiveKind.ZIP, tmp_path)


def test_zip_overlapping_entries(tmp_path):
    data = make_zip({"a.json": b"{}" * 100, "b.json": b"[]" * 100})
    data = _patch_central(data, 1, 42, "<I", 0)  # b's local header offset → a's
    with pytest.raises(ArchiveError, match="overlapping"):
        walk_bytes(data, ArchiveKind.ZIP, tmp_path)


def test_zip_lying_sizes_are_caught(tmp_path):
    files = {"config.json": b'{"a": 1}' * 100}
    data = _patch_central(make_zip(files, zipfile.ZIP_STORED), 0, 24, "<I", 100)  # uncompressed size
    with pytest.raises(ArchiveError):
        walk_bytes(data, ArchiveKind.ZIP, tmp_path)


def test_not_a_zip(tmp_path):
    with pytest.raises(ArchiveError, match="zip") as e:
        walk_bytes(b"PK\x03\x04" + bytes(100), ArchiveKind.ZIP, tmp_path)
    assert e.value.status == 400


# ---------------------------------------------------------------- the upload adapter


def snapshot_files(data: bytes, up: upload.Upload, tmp_path: Path, **kw) -> dict[str, bytes]:
    scratch = tmp_path / "scratch"
    snap = upload.snapshot(
        Trickle(data), up, scratch_dir=str(scratch), max_spool_bytes=kw.pop("spool", 1 << 30)
    )
    assert snap.streaming and snap.stream is not None and snap.files == []
    out = {}
    try:
        listing = snap.stream.listing()  # what the pipeline checks the layout on, when known up front
        for f in snap.stream:
            with f.open(0) as chunks:
                out[f.path] = b"".join(chunks)
            assert f.size in (None, len(out[f.path]))
        assert listing is None or sorted(listing) == sorted(out)
    finally:
        snap.stream.close()
        snap.stream.close()  # safe twice
    assert not scratch.exists() or not any(scratch.iterdir()), "the spool must be removed"
    assert snap.resolved_type == "Upload"
    return out


def test_direct_gguf(tmp_path):
    data = make_gguf(tmp_path / "m.gguf").read_bytes()
    got = snapshot_files(data, upload.Upload(ArchiveKind.GGUF, "Qwen-Q4.gguf", len(data)), tmp_path)
    assert got == {"Qwen-Q4.gguf": data}
    got = snapshot_files(data, upload.Upload(ArchiveKind.GGUF, None, None), tmp_path)
    assert got == {"model.gguf": data}


def test_direct_gguf_cut_short_is_refused(tmp_path):
    data = make_gguf(tmp_path / "m.gguf").read_bytes()
    with pytest.raises(ArchiveError, match="ended after"):
        snapshot_files(data[:-10], upload.Upload(ArchiveKind.GGUF, None, len(data)), tmp_path)


def test_zip_spooled_and_removed(small_model, tmp_path):
    data = make_zip(small_model)
    assert snapshot_files(data, upload.Upload(ArchiveKind.ZIP, "b.zip", len(data)), tmp_path) == small_model
    with pytest.raises(ArchiveError, match="spool limit") as e:
        snapshot_files(data, upload.Upload(ArchiveKind.ZIP, "b.zip", None), tmp_path, spool=len(data) - 1)
    assert e.value.status == 413


def test_zip_spool_removed_when_the_walk_fails(tmp_path):
    data = make_zip({"config.json": b"{}", "../x": b"{}"})
    with pytest.raises(ArchiveError):
        snapshot_files(data, upload.Upload(ArchiveKind.ZIP, "b.zip", len(data)), tmp_path)


def test_empty_archive_and_empty_upload(tmp_path):
    with pytest.raises(ArchiveError, match="no model files"):
        snapshot_files(make_tar({".hidden": b"x"}), upload.Upload(ArchiveKind.TAR, "b.tar"), tmp_path)
    with pytest.raises(ArchiveError, match="empty"):
        snapshot_files(b"", upload.Upload(ArchiveKind.GGUF), tmp_path)


def test_magic_mismatch_before_any_file(small_model, tmp_path):
    with pytest.raises(ArchiveError, match="should be a zip"):
        snapshot_files(
            make_tar(small_model, ArchiveKind.TAR_GZ), upload.Upload(ArchiveKind.ZIP, "b.zip"), tmp_path
        )


def test_gguf_walker_needs_the_magic():
    with pytest.raises(ArchiveError, match="GGUF"):
        list(walk_gguf(io.BytesIO(b"NOPE" + bytes(10)), "m.gguf", 14))


def test_reopening_at_an_offset_is_refused(tmp_path):
    data = make_gguf(tmp_path / "m.gguf").read_bytes()
    snap = upload.snapshot(
        io.BytesIO(data), upload.Upload(ArchiveKind.GGUF), scratch_dir=str(tmp_path), max_spool_bytes=1
    )
    assert snap.stream is not None
    f = next(iter(snap.stream))
    with pytest.raises(Exception, match="cannot be re-read"):
        with f.open(5):
            pass
