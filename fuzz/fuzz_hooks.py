"""atheris target: every route of the hook service, through Flask's test client.

Input: one byte picks the route, the rest is the request body (seed it with
real requests: ``python fuzz/corpus.py DIR``). The answer must be 200 or 400
with a JSON object; a 500 is a crash unless it comes from a reported bug
site in ``fuzz/known_bugs.py``.
"""

from __future__ import annotations

import json
import logging
import sys

import _common  # noqa: F401
import atheris

with atheris.instrument_imports(include=["hooks", "lib"]):
    from fuzz.known_bugs import KNOWN_500_SITES, site_of
    from hooks.app import HOOKS, create_app
    from hooks.app import log as app_log
    from lib.config import Config

ROUTES = sorted(HOOKS)
CONFIG = Config(namespace="d8-ai-models", registry="dmcr.test:5000", worker_image="worker:test",
                signing_key=b"k" * 32)
CLIENT = create_app(CONFIG).test_client()


class _Site(logging.Handler):
    site = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.site = site_of(record.exc_info[2])


SITE = _Site()
app_log.addHandler(SITE)
app_log.propagate = False


def one_input(data: bytes) -> None:
    if not data:
        return
    route = ROUTES[data[0] % len(ROUTES)]
    SITE.site = ""
    resp = CLIENT.post(route, data=data[1:], content_type="application/json")
    if resp.status_code == 500 and SITE.site in KNOWN_500_SITES:
        return
    assert resp.status_code in (200, 400), (route, resp.status_code, SITE.site)
    assert isinstance(json.loads(resp.get_data()), dict)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
