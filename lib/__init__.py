"""Code shared by the hook service and the worker.

Nothing in ``lib`` imports Flask, ``hooks`` or ``jobs`` (checked by
import-linter in ``make test``): it is the vocabulary both sides speak.
"""
