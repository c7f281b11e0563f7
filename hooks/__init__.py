"""The hook service: pure functions of Metacontroller's requests.

Nothing here performs network I/O or calls the Kubernetes API; the Flask
views in ``hooks.app`` only parse, call and serialise.
"""
