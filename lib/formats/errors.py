"""The one error format detection and verification raise.

Every refusal (a broken header, a layout that matches no format, a lying
length) is a ``FormatError`` whose message names the file and the problem in
words a user can act on. The publish pipeline maps it to Reason
``PublicationFailed``; nothing here knows about reasons or the registry.
"""

from __future__ import annotations


class FormatError(Exception):
    """The model's files are not a valid GGUF, Safetensors or Diffusers model."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = str(self)
