"""A small OCI distribution client built for large blobs (see docs/oci-client.md).

``reference`` parses image references, ``urls`` builds every registry URL,
``challenge`` parses ``WWW-Authenticate``, ``auth`` turns credentials into
``Authorization`` headers, ``errors`` maps registry answers to typed errors,
and ``client.RegistryClient`` ties them together. The client knows nothing
about models.
"""
