"""atheris target: the streaming Safetensors header check (``lib.formats.safetensors``).

Input: a chunk size, then either raw bytes or (half of the time) a JSON
header with a correct length prefix, so the fuzzer reaches the tensor table
checks (dtypes, shapes, offsets, overlaps). Anything but ``FormatError`` or
facts consistent with the file size is a crash.
"""

from __future__ import annotations

import struct
import sys

import _common  # noqa: F401
import atheris

with atheris.instrument_imports(include=["lib"]):
    from lib.formats.errors import FormatError
    from lib.formats.safetensors import SafetensorsInspector


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    chunk = fdp.ConsumeIntInRange(1, 4096)
    if fdp.ConsumeBool():
        header = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
        body = struct.pack("<Q", len(header)) + header + fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
    ins = SafetensorsInspector("fuzz.safetensors")
    try:
        for i in range(0, len(body), chunk):
            ins.feed(body[i : i + chunk])
        facts = ins.finish()
    except FormatError:
        return
    st = facts.safetensors or {}
    assert facts.size == len(body) == 8 + st["header_len"] + st["data_len"]


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
