"""``SourceError``: the one error a model's source raises, with its reason.

It is part of the source-adapter contract (``lib.sources.base`` exports it
under that name, and adapters import it from there), but it lives here, at
the bottom of ``lib``, because ``lib.archive`` raises it too (as
``ArchiveError``, a refused upload) while ``lib.sources.upload`` walks
archives with ``lib.archive``: with the class inside ``lib.sources`` the two
packages imported each other. ``.importlinter`` keeps ``lib.archive`` below
``lib.sources``.
"""

from __future__ import annotations


class SourceError(Exception):
    """A source failed; ``reason`` is a ``lib.api.types.Reason`` value."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
