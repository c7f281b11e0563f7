"""What the source registry hands an adapter, and what an adapter hands back.

An adapter is ``open(source, options)``: pure of process state (the worker's
CLI reads the environment once and passes it in ``options.env``), and it
moves no model bytes yet. It returns either

- a ``SourceSnapshot``: files the one publish pipeline (``lib.publish``) turns
  into a new ModelPack artifact, or
- an ``ArtifactCopy``: the source already is a ModelPack artifact (a catalog
  import), copied as it is so that its digest stays the same.

These are the only two ways a model enters DMCR, so ``jobs/publish.py``
branches on the outcome, never on the URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lib.sources.base import SourceSnapshot


@dataclass(frozen=True)
class SourceOptions:
    """How the worker may reach a source (the command line's source flags, the environment)."""

    auth_file: str | None = None  # a token file (Hugging Face) or a Docker config JSON (OCI)
    ca_file: str | None = None  # PEM CA bundle for the source
    insecure: bool = False  # an OCI source registry that speaks plain HTTP
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. HF_ENDPOINT, OLLAMA_REGISTRY


@dataclass(frozen=True)
class ArtifactCopy:
    """An existing ModelPack artifact to copy unchanged: ``REGISTRY/REPOSITORY@DIGEST``."""

    reference: str
    options: SourceOptions


Opened = SourceSnapshot | ArtifactCopy
Adapter = Callable[[str, SourceOptions], Opened]
