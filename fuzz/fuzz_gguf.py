"""atheris target: the streaming GGUF header parser (``lib.formats.gguf.GGUFInspector``).

Input: a chunk size (so a field split across chunks is exercised) then the
file bytes; half of the inputs get a valid magic and version prepended so the
fuzzer spends its time past the first 8 bytes. Anything but ``FormatError``
or facts is a crash.
"""

from __future__ import annotations

import sys

import _common  # noqa: F401
import atheris

with atheris.instrument_imports(include=["lib"]):
    from lib.formats.errors import FormatError
    from lib.formats.gguf import GGUFInspector

PREFIX = b"GGUF\x03\x00\x00\x00"


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    chunk = fdp.ConsumeIntInRange(1, 4096)
    body = (PREFIX if fdp.ConsumeBool() else b"") + fdp.ConsumeBytes(fdp.remaining_bytes())
    ins = GGUFInspector("fuzz.gguf")
    try:
        for i in range(0, len(body), chunk):
            ins.feed(body[i : i + chunk])
        facts = ins.finish()
    except FormatError:
        return
    assert facts.size == len(body)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
