"""A small OCI distribution client built for large blobs (see docs/oci-client.md).

``reference`` parses image references, ``urls`` builds every registry URL,
``challenge`` parses ``WWW-Authenticate``, ``auth`` turns credentials into
``Authorization`` headers, ``errors`` holds the typed errors (no CRD
reasons), ``transport`` sends one request, ``exchange`` wraps it in auth and
retries, ``blobs`` has the ``BlobWriter`` and ``Mounted`` vocabulary,
``manifests`` the small JSON documents, and ``client.RegistryClient`` is the
facade. The client knows nothing about models.
"""
