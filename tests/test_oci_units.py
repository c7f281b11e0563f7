"""Table tests of the pure parts of lib.oci: references, URLs, challenges, docker config, errors."""

from __future__ import annotations

import base64
import json

import pytest

from jobs.common import registry_reason
from lib.api.types import Reason
from lib.oci import urls
from lib.oci.auth import Credentials, credentials_from_docker_config, load_docker_config
from lib.oci.challenge import (
    Challenge,
    Scope,
    merge_scopes,
    parse_scopes,
    parse_www_authenticate,
    repository_scope,
)
from lib.oci.descriptor import Descriptor
from lib.oci.errors import (
    AuthError,
    DigestMismatch,
    InsufficientStorage,
    NotFound,
    RegistryError,
    Unreachable,
    UploadInterrupted,
    describe_errors,
    error_from_response,
    parse_error_body,
)
from lib.oci.reference import InvalidReference, Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("127.0.0.1:5000/models/a", "127.0.0.1:5000", "models/a", None, None),
        ("dmcr.local/ns/m:v1", "dmcr.local", "ns/m", "v1", None),
        (f"localhost/x@{D}", "localhost", "x", None, D),
        (f"reg.example.com:443/a/b/c:t.1-x@{D}", "reg.example.com:443", "a/b/c", "t.1-x", D),
        ("[::1]:5000/a", "[::1]:5000", "a", None, None),
    ],
    ids=["host-port", "tag", "digest", "tag-and-digest", "ipv6"],
)
def test_reference_parse(text, registry, repo, tag, digest):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)
    assert str(ref) == text
    assert ref.name == f"{registry}/{repo}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "repo",
        "library/ubuntu",
        "https://reg.local/a",
        "reg.local/",
        "reg.local/A",
        "reg.local/a:",
        "reg.local/a@sha256:12",
        "reg.local/a@",
        "reg.local/a//b",
        "reg.local/a:bad tag",
    ],
    ids=[
        "empty",
        "no-host",
        "no-registry-host",
        "scheme",
        "no-repo",
        "uppercase",
        "empty-tag",
        "short-digest",
        "empty-digest",
        "empty-component",
        "space-in-tag",
    ],
)
def test_reference_rejects(text):
    with pytest.raises(InvalidReference):
        Reference.parse(text)


def test_reference_ref_and_replace():
    ref = Reference.parse("r.local/a:v1")
    assert ref.ref == "v1"
    assert ref.with_digest(D).ref == D and ref.with_digest(D).tag is None
    assert Reference.parse("r.local/a").ref == "latest"
    assert str(ref.with_tag("v2")) == "r.local/a:v2"


BASE = "https://r.local:5000"


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (urls.base_url("r.local:5000"), "https://r.local:5000"),
        (urls.base_url("r.local:5000", insecure=True), "http://r.local:5000"),
        (urls.ping_url(BASE), BASE + "/v2/"),
        (urls.blob_url(BASE, "a/b", D), f"{BASE}/v2/a/b/blobs/{D}"),
        (urls.upload_start_url(BASE, "a/b"), f"{BASE}/v2/a/b/blobs/uploads/"),
        (
            urls.upload_start_url(BASE, "a/b", mount=D, from_repo="c/d"),
            f"{BASE}/v2/a/b/blobs/uploads/?mount=sha256%3A{'ab' * 32}&from=c%2Fd",
        ),
        (
            urls.resolve_location(f"{BASE}/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/u1?_state=x"),
            f"{BASE}/v2/a/blobs/uploads/u1?_state=x",
        ),
        (urls.resolve_location(f"{BASE}/v2/a/blobs/uploads/", "https://other/up/1"), "https://other/up/1"),
        (
            urls.upload_complete_url(f"{BASE}/v2/a/blobs/uploads/u1?_state=x%3D", D),
            f"{BASE}/v2/a/blobs/uploads/u1?_state=x%3D&digest=sha256%3A{'ab' * 32}",
        ),
        (
            urls.upload_complete_url(f"{BASE}/v2/a/blobs/uploads/u1", D),
            f"{BASE}/v2/a/blobs/uploads/u1?digest=sha256%3A{'ab' * 32}",
        ),
        (urls.manifest_url(BASE, "a", "v1"), f"{BASE}/v2/a/manifests/v1"),
        (urls.manifest_url(BASE, "a", D), f"{BASE}/v2/a/manifests/{D}"),
        (urls.tags_url(BASE, "a"), f"{BASE}/v2/a/tags/list"),
        (urls.tags_url(BASE, "a", n=10, last="v1"), f"{BASE}/v2/a/tags/list?n=10&last=v1"),
        (
            urls.next_page(f"{BASE}/v2/a/tags/list", '</v2/a/tags/list?n=1&last=b>; rel="next"'),
            f"{BASE}/v2/a/tags/list?n=1&last=b",
        ),
        (urls.next_page(f"{BASE}/v2/a/tags/list", None), None),
        (urls.registry_key("https://R.local:5000/v1/"), "r.local:5000"),
        (urls.registry_key("r.local:5000"), "r.local:5000"),
        (urls.registry_key("http://r.local"), "r.local"),
    ],
)
def test_urls(built, expected):
    assert built == expected


def test_base_url_refuses_scheme():
    with pytest.raises(ValueError):
        urls.base_url("https://r.local")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push"',
            [
                Challenge(
                    "bearer",
                    {"realm": "https://auth/token", "service": "reg", "scope": "repository:a/b:pull,push"},
                )
            ],
        ),
        ('Basic realm="test-realm"', [Challenge("basic", {"realm": "test-realm"})]),
        (
            "Bearer realm=https://a/t, service=reg",
            [Challenge("bearer", {"realm": "https://a/t", "service": "reg"})],
        ),
        (
            'Basic realm="x", Bearer realm="y",scope="a:b:c"',
            [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "y", "scope": "a:b:c"})],
        ),
        ('Bearer realm="quote\\"d"', [Challenge("bearer", {"realm": 'quote"d'})]),
        (
            'Negotiate abc==, Basic realm="x"',
            [Challenge("negotiate", {}), Challenge("basic", {"realm": "x"})],
        ),
        ("", []),
        (None, []),
    ],
    ids=["bearer", "basic", "unquoted", "two-challenges", "escaped-quote", "token68", "empty", "none"],
)
def test_parse_www_authenticate(header, expected):
    assert parse_www_authenticate(header) == expected


def test_parse_www_authenticate_unterminated():
    with pytest.raises(ValueError):
        parse_www_authenticate('Bearer realm="x')


def test_scopes():
    assert str(repository_scope("a/b", "pull", "push")) == "repository:a/b:pull,push"
    assert parse_scopes("repository:a:pull repository:b/c:pull,push") == (
        Scope("repository", "a", ("pull",)),
        Scope("repository", "b/c", ("pull", "push")),
    )
    assert Scope.parse("registry:catalog:*") == Scope("registry", "catalog", ("*",))
    assert merge_scopes(
        [
            Scope.parse("repository:a:push,pull"),
            Scope.parse("repository:a:pull"),
            Scope.parse("repository:b:pull"),
        ]
    ) == (Scope("repository", "a", ("pull", "push")), Scope("repository", "b", ("pull",)))


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize(
    ("auths", "registry", "expected"),
    [
        ({"r.local:5000": {"auth": _b64("u:p:w")}}, "r.local:5000", Credentials("u", "p:w")),
        ({"https://r.local:5000": {"auth": _b64("u:p")}}, "r.local:5000", Credentials("u", "p")),
        (
            {"https://r.local:5000/v1/": {"username": "u", "password": "p"}},
            "r.local:5000",
            Credentials("u", "p"),
        ),
        ({"r.local": {"auth": _b64("u:p")}}, "r.local:5000", None),
        ({"other:5000": {"auth": _b64("u:p")}}, "r.local:5000", None),
    ],
    ids=["host-port", "https-form", "username-password", "port-must-match", "other-registry"],
)
def test_docker_config(auths, registry, expected, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    assert load_docker_config(path, registry) == expected


@pytest.mark.parametrize(
    "doc",
    [
        {"auths": {"r:1": {"auth": "!!!"}}},
        {"auths": {"r:1": {"auth": _b64("nocolon")}}},
        {"auths": {"r:1": {"email": "x"}}},
        {"nothing": 1},
    ],
    ids=["bad-base64", "no-colon", "no-credentials", "no-auths"],
)
def test_docker_config_invalid(doc):
    with pytest.raises(AuthError):
        credentials_from_docker_config(doc, "r:1")


def test_docker_config_missing_file(tmp_path):
    with pytest.raises(AuthError, match="does not exist"):
        load_docker_config(tmp_path / "nope.json", "r:1")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AuthError, match="not a readable Docker config"):
        load_docker_config(tmp_path / "bad.json", "r:1")


def test_credentials_repr_hides_password():
    assert "secret" not in repr(Credentials("u", "secret"))


ERRBODY = json.dumps(
    {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": D}]}
)


@pytest.mark.parametrize(
    ("status", "body", "cls", "reason", "text"),
    [
        (507, b"", InsufficientStorage, Reason.INSUFFICIENT_STORAGE, "out of space"),
        (413, b"too large", InsufficientStorage, Reason.INSUFFICIENT_STORAGE, "too large"),
        (
            500,
            json.dumps(
                {
                    "errors": [
                        {
                            "code": "UNKNOWN",
                            "message": "unknown error",
                            "detail": "write /var/lib/registry/x: no space left on device",
                        }
                    ]
                }
            ),
            InsufficientStorage,
            Reason.INSUFFICIENT_STORAGE,
            "no space left on device",
        ),
        (
            401,
            json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
            AuthError,
            Reason.PUBLICATION_FAILED,
            "UNAUTHORIZED: authentication required",
        ),
        (403, b"", AuthError, Reason.PUBLICATION_FAILED, "credentials"),
        (404, ERRBODY, NotFound, Reason.PUBLICATION_FAILED, "BLOB_UNKNOWN: blob unknown to registry"),
        (
            400,
            json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}),
            NotFound,
            Reason.PUBLICATION_FAILED,
            "MANIFEST_UNKNOWN",
        ),
        (
            400,
            json.dumps({"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match"}]}),
            DigestMismatch,
            Reason.PUBLICATION_FAILED,
            "DIGEST_INVALID",
        ),
        (500, b"<html>oops</html>", RegistryError, Reason.SOURCE_UNAVAILABLE, "oops"),
        (
            400,
            json.dumps({"errors": [{"code": "NAME_INVALID", "message": "invalid repository name"}]}),
            RegistryError,
            Reason.PUBLICATION_FAILED,
            "NAME_INVALID: invalid repository name",
        ),
    ],
    ids=[
        "507",
        "413",
        "500-no-space",
        "401",
        "403",
        "404-blob-unknown",
        "400-manifest-unknown",
        "digest-invalid",
        "500-html",
        "400-name-invalid",
    ],
)
def test_error_from_response(status, body, cls, reason, text):
    """lib.oci gives the class; the reason for a source registry is decided at the CLI edge."""
    err = error_from_response(status, body, what="PUT x", registry="r:1")
    assert type(err) is cls
    assert registry_reason(err, destination=False) == reason and err.status == status
    assert text in err.message and "r:1" in err.message


def test_error_body_parsing():
    errs = parse_error_body(ERRBODY)
    assert errs[0]["code"] == "BLOB_UNKNOWN"
    assert describe_errors(errs) == f"BLOB_UNKNOWN: blob unknown to registry ({D})"
    assert parse_error_body(b"not json") == [] and parse_error_body(b'{"errors": 3}') == []
    assert describe_errors([{"code": "X", "detail": {"a": 1}}]) == 'X ({"a": 1})'


def test_descriptor_to_json():
    d = Descriptor("application/x", D, 12, {"b": "2", "a": "1"})
    assert d.to_json() == {
        "mediaType": "application/x",
        "digest": D,
        "size": 12,
        "annotations": {"a": "1", "b": "2"},
    }
    assert list(d.to_json()["annotations"]) == ["a", "b"]
    assert "annotations" not in Descriptor("application/x", D, 1).to_json()
    assert Descriptor.from_json(d.to_json()) == d


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (InsufficientStorage("full", 507), Reason.INSUFFICIENT_STORAGE),
        (AuthError("denied", 401), Reason.REGISTRY_UNAVAILABLE),
        (Unreachable("down"), Reason.REGISTRY_UNAVAILABLE),
        (UploadInterrupted("lost"), Reason.REGISTRY_UNAVAILABLE),
        (RegistryError("oops", 502), Reason.REGISTRY_UNAVAILABLE),
        (DigestMismatch("wrong", 400), Reason.PUBLICATION_FAILED),
        (NotFound("gone", 404), Reason.PUBLICATION_FAILED),
    ],
    ids=["no-space", "auth", "unreachable", "interrupted", "5xx", "digest", "not-found"],
)
def test_registry_reason_for_the_destination(err, reason):
    assert registry_reason(err, destination=True) == reason
