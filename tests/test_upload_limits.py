"""The upload size limit from the hooks' side: ``Config.upload_max_bytes`` → the upload Job's argv.

The worker side (413 before the body, while streaming, resumed parts) is in
``tests/test_upload_server.py``.
"""

from __future__ import annotations

import dataclasses

from jobs import cli
from lib.config import Config
from tests.support import hookreq as hr
from tests.test_model_hooks import CFG, sync
from tests.test_model_hooks_upload import upload_model


def upload_args(config: Config) -> list[str]:
    job = hr.find_child(sync(upload_model(), config=config), "Job")
    return job["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_upload_job_gets_the_configured_limit():
    args = upload_args(CFG)
    assert args[args.index("--max-upload-bytes") + 1] == str(1 << 40)
    args = upload_args(dataclasses.replace(CFG, upload_max_bytes=5 << 30))
    assert args[args.index("--max-upload-bytes") + 1] == str(5 << 30)
    # the worker's own parser takes the command line the hooks emit
    assert cli.parser().parse_args(args).max_upload_bytes == 5 << 30


def test_config_reads_the_limit_from_the_environment():
    assert Config.from_env({}).upload_max_bytes == 1 << 40
    assert Config.from_env({"AI_MODELS_UPLOAD_MAX_BYTES": "0"}).upload_max_bytes == 0  # no limit
    assert Config.from_env({"AI_MODELS_UPLOAD_MAX_BYTES": "1099511627776"}).upload_max_bytes == 1 << 40
