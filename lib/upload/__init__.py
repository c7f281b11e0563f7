"""One upload session: receive a model over HTTP and publish it while the bytes arrive.

``pipe`` (the bounded byte pipe between request threads and the publishing
thread), ``framing`` (what a ``PUT``'s headers say, checked before a body byte
is read; no I/O), ``connection`` (the socket driven by h11: the only module
that touches the wire), ``session`` (the state machine: idle, receiving,
interrupted, published, expired; with an injected clock) and ``server`` (the
routes and the serve loop). ``jobs/upload_server.py`` is the command line
around them (docs/upload.md).
"""
