"""The Flask app: routes, request validation, metrics. No logic of its own.

Each view parses JSON, checks it against the hook's request schema, calls a
pure hook function and serialises the answer. Bad input is a 400 with
``{"error": ...}``; an unexpected exception is still answered (500) but is a
bug, and the tests drive every route with malformed bodies to keep it so.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import fastjsonschema
import jsonschema
from flask import Flask, Response, abort, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from werkzeug.exceptions import ClientDisconnected

from hooks import catalogsource, model, schemas, token, webhook, workload
from hooks.errors import HookInputError
from lib.config import Config, ConfigError

log = logging.getLogger("ai-models.hooks")

Handler = Callable[[dict[str, Any], Config], dict[str, Any]]

REQUESTS = Counter("ai_models_hook_requests_total", "Hook requests", ["hook", "code"])
LATENCY = Histogram(
    "ai_models_hook_latency_seconds",
    "Hook latency by route and outcome (docs/observability.md)",
    ["hook", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def metrics_registry() -> CollectorRegistry:
    """All workers' samples under gunicorn (multiprocess mode, hooks/gunicorn_conf.py), else ours."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def outcome(hook: str, code: int) -> str:
    """ok | invalid (4xx) | error (5xx); the token route says grant | deny (401/403) instead of ok."""
    if code >= 500:
        return "error"
    if hook == "/registry/token":
        return "grant" if code < 300 else "deny" if code in (401, 403) else "invalid"
    return "ok" if code < 300 else "invalid"

# path -> (request schema, handler)
HOOKS: dict[str, tuple[dict[str, Any], Handler]] = {
    "/hooks/model/sync": (schemas.COMPOSITE_SYNC, model.model_sync),
    "/hooks/model/finalize": (schemas.COMPOSITE_SYNC, model.model_finalize),
    "/hooks/model/customize": (schemas.COMPOSITE_CUSTOMIZE, model.model_customize),
    "/hooks/clustermodel/sync": (schemas.COMPOSITE_SYNC, model.clustermodel_sync),
    "/hooks/clustermodel/finalize": (schemas.COMPOSITE_SYNC, model.clustermodel_finalize),
    "/hooks/clustermodel/customize": (schemas.COMPOSITE_CUSTOMIZE, model.clustermodel_customize),
    "/hooks/modelcatalogsource/sync": (schemas.COMPOSITE_SYNC, catalogsource.sync),
    "/hooks/modelcatalogsource/customize": (schemas.COMPOSITE_CUSTOMIZE, catalogsource.customize),
    "/hooks/workload/sync": (schemas.DECORATOR_SYNC, workload.sync),
    "/hooks/workload/finalize": (schemas.DECORATOR_SYNC, workload.finalize),
    "/hooks/workload/customize": (schemas.DECORATOR_CUSTOMIZE, workload.customize),
    "/webhooks/workload/mutate": (schemas.ADMISSION_REVIEW, webhook.mutate),
}

# Route groups, one per audience; a listener serves the groups in AI_MODELS_ROUTES
# (default: all), so a NetworkPolicy per port can tell the audiences apart.
ROUTE_GROUPS = ("metacontroller", "webhook", "token")


# Request body limits by path prefix (docs/security.md, "Listeners"): over the limit is a
# 413 before the body is read. A Metacontroller sync request carries the parent and every
# child and related object (a few hundred children: several MB); an AdmissionReview carries
# object and oldObject, each under the API server's 3 MiB request limit; nothing else takes a body.
BODY_LIMITS = (("/hooks/", 16 << 20), ("/webhooks/", 8 << 20))
OTHER_BODY_LIMIT = 64 << 10


def body_limit(path: str) -> int:
    return next((limit for prefix, limit in BODY_LIMITS if path.startswith(prefix)), OTHER_BODY_LIMIT)


def route_group(path: str) -> str:
    return "webhook" if path.startswith("/webhooks/") else "metacontroller"


def _enabled_groups(routes: Iterable[str] | None) -> frozenset[str]:
    if routes is None:
        routes = os.environ.get("AI_MODELS_ROUTES", ",".join(ROUTE_GROUPS)).split(",")
    enabled = frozenset(r.strip() for r in routes if r.strip())
    unknown = enabled - set(ROUTE_GROUPS)
    if unknown or not enabled:
        choices = ", ".join(ROUTE_GROUPS)
        raise ValueError(f"AI_MODELS_ROUTES: {sorted(unknown) or 'empty'}; choose from {choices}")
    return enabled


class _Validator:
    """fastjsonschema for the common (valid) case; jsonschema only to explain a refusal.

    A compiled validator checks a sync request in ~20 µs where jsonschema takes
    ~0.5 ms, which was most of a hook call's cost; jsonschema's error messages
    are clearer, so it runs only on bodies that are refused anyway.
    """

    def __init__(self, schema: dict[str, Any]):
        self._fast = fastjsonschema.compile(schema)
        self._full = jsonschema.Draft202012Validator(schema)

    def iter_errors(self, body: Any) -> Iterator[jsonschema.ValidationError]:
        try:
            self._fast(body)
        except fastjsonschema.JsonSchemaException:
            return self._full.iter_errors(body)
        return iter(())


_VALIDATORS = {path: _Validator(schema) for path, (schema, _) in HOOKS.items()}


def _json(body: Any, code: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(json.dumps(body, sort_keys=True), status=code, mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


# A schema error quotes the offending value, which may be any size: the answer is cut to this.
MAX_ERROR = 1024


def _describe(err: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    text = f"invalid request at {where}: {err.message}"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


# Route groups that derive or verify credentials: they refuse to start without a signing key.
SIGNING_GROUPS = frozenset({"metacontroller", "token"})


def create_app(config: Config | None = None, routes: Iterable[str] | None = None) -> Flask:
    """The app for ``routes`` (default ``AI_MODELS_ROUTES``, else all).

    Raises ``ConfigError`` (the service does not start) when a route group
    that signs or verifies has no usable signing key.
    """
    cfg = config or Config.from_env()
    enabled = _enabled_groups(routes)
    if enabled & SIGNING_GROUPS:
        try:
            keys = cfg.signing_keys
        except ConfigError as e:
            needing = ", ".join(sorted(enabled & SIGNING_GROUPS))
            raise ConfigError(f"routes {needing} need a signing key: {e}") from None
        log.info("signing keys: %s", keys.describe())
        if keys.allow_development:
            log.warning("AI_MODELS_DEV_INSECURE_SIGNING_KEY is set: the public development key is accepted")
    app = Flask("ai-models-hooks")
    app.config["AI_MODELS"] = cfg

    def handle(path: str) -> Response:
        _, handler = HOOKS[path]
        started = time.perf_counter()
        code = 200
        try:
            body = request.get_json(force=True, silent=True)
            if body is None:
                code = 400
                return _json({"error": "request body must be a JSON object"}, 400)
            errors = sorted(_VALIDATORS[path].iter_errors(body), key=lambda e: list(e.path))
            if errors:
                code = 400
                return _json({"error": _describe(errors[0])}, 400)
            return _json(handler(body, cfg))
        except HookInputError as e:
            code = 400
            return _json({"error": str(e)}, 400)
        except RecursionError:
            # The JSON decoder, and any hook walking the request, recurse per level of nesting; no
            # object the API server returns nests anywhere near Python's limit (about 1000).
            code = 400
            return _json({"error": "request body nests too deeply"}, 400)
        except Exception:  # a bug: log it, answer without leaking internals
            code = 500
            log.exception("hook %s failed", path)
            return _json({"error": "internal error"}, 500)
        finally:
            REQUESTS.labels(path, str(code)).inc()
            LATENCY.labels(path, outcome(path, code)).observe(time.perf_counter() - started)

    for path in HOOKS:
        if route_group(path) in enabled:
            app.add_url_rule(path, path, lambda p=path: handle(p), methods=["POST"])

    def registry_token() -> Response:
        started = time.perf_counter()
        code, body, headers = token.issue(
            authorization=request.headers.get("Authorization"),
            service=request.args.get("service"),
            scopes=request.args.getlist("scope"),
            config=cfg,
            now=time.time(),
        )
        REQUESTS.labels("/registry/token", str(code)).inc()
        LATENCY.labels("/registry/token", outcome("/registry/token", code)).observe(
            time.perf_counter() - started
        )
        return _json(body, code, headers)

    if "token" in enabled:
        app.add_url_rule("/registry/token", "registry_token", registry_token, methods=["GET"])

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry()), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return _json({"error": f"no such route: {request.path}"}, 404)

    @app.errorhandler(405)
    def bad_method(_: Exception) -> Response:
        return _json({"error": f"method {request.method} not allowed on {request.path}"}, 405)

    @app.before_request
    def read_body() -> Response | None:
        """Read the body before any view, so an oversized (413) or cut-off (408) one never ends in a 500."""
        limit = request.max_content_length = body_limit(request.path)
        try:
            data = request.get_data(cache=True)
        except (ClientDisconnected, OSError):  # stalled past the socket timeout, or gone
            return _json({"error": "request body not received in time"}, 408)
        if request.content_length is None and len(data) >= limit:  # chunked: werkzeug stops at the limit
            abort(413)
        return None

    @app.errorhandler(413)
    def too_large(_: Exception) -> Response:
        return _json({"error": f"request body over {body_limit(request.path)} bytes"}, 413)

    return app


def __getattr__(name: str) -> Flask:
    """``hooks.app:app`` (gunicorn): built from the environment on first access.

    Lazy so that importing this module (tests, tools) needs no configuration;
    gunicorn resolves ``app`` while booting its workers, so a bad signing key
    still stops the service at startup, never on a request.
    """
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = create_app()
    globals()["app"] = built
    return built
