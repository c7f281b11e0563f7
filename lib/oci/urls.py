"""Every registry URL the client uses is built here (and nowhere else).

Pure functions of their arguments, so a table test pins each one.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit


def base_url(registry: str, *, insecure: bool = False) -> str:
    """``https://host:port``; plain ``http`` only when the caller opted into ``insecure``."""
    if "://" in registry or "/" in registry:
        raise ValueError(f"registry {registry!r} must be host[:port] without scheme or path")
    return f"{'http' if insecure else 'https'}://{registry}"


def ping_url(base: str) -> str:
    return f"{base}/v2/"


def blob_url(base: str, repo: str, digest: str) -> str:
    return f"{base}/v2/{repo}/blobs/{quote(digest, safe=':')}"


def upload_start_url(base: str, repo: str, *, mount: str | None = None, from_repo: str | None = None) -> str:
    url = f"{base}/v2/{repo}/blobs/uploads/"
    if mount and from_repo:
        url += "?" + urlencode({"mount": mount, "from": from_repo})
    return url


def resolve_location(request_url: str, location: str) -> str:
    """An upload ``Location`` may be relative (distribution sends absolute, others don't)."""
    return urljoin(request_url, location)


def with_query(url: str, **params: str) -> str:
    """Add query parameters, keeping the ones already there (e.g. distribution's ``_state``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in params] + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def upload_complete_url(location: str, digest: str) -> str:
    return with_query(location, digest=digest)


def manifest_url(base: str, repo: str, ref: str) -> str:
    return f"{base}/v2/{repo}/manifests/{quote(ref, safe=':')}"


def catalog_url(base: str, *, n: int | None = None, last: str | None = None) -> str:
    url = f"{base}/v2/_catalog"
    params = {k: str(v) for k, v in (("n", n), ("last", last)) if v is not None}
    return url + ("?" + urlencode(params) if params else "")


def tags_url(base: str, repo: str, *, n: int | None = None, last: str | None = None) -> str:
    url = f"{base}/v2/{repo}/tags/list"
    params = {k: str(v) for k, v in (("n", n), ("last", last)) if v is not None}
    return url + ("?" + urlencode(params) if params else "")


def next_page(request_url: str, link_header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header (``<url>; rel="next"``), absolute."""
    if not link_header:
        return None
    for part in link_header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if 'rel="next"' in params.replace(" ", "") and target.startswith("<") and target.endswith(">"):
            return urljoin(request_url, target[1:-1])
    return None


def registry_key(text: str) -> str:
    """Normalise a Docker config ``auths`` key to ``host[:port]``.

    Accepts ``host:port``, ``https://host:port``, ``http://host:port/v1/`` ...
    """
    t = text.strip()
    if "://" in t:
        t = urlsplit(t).netloc
    else:
        t = t.split("/", 1)[0]
    return t.lower()
