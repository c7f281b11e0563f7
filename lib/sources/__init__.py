"""Source adapters: each yields a model's files as streams with what it knows
about them (size, sha256). One publish pipeline (``lib.publish``) turns any
adapter into an artifact; no source knows about the registry.
"""
