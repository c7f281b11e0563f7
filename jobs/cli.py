"""``python -m jobs``: parse the command line, run the command's module.

The command lines themselves (flags, help texts, defaults) are defined once, in
``lib.api.worker_cli``, where the hooks build them too; this module only says
which worker module runs each command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lib.api import worker_cli

# The module whose ``run(args)`` executes each command.
MODULES = {
    worker_cli.Publish.COMMAND: "jobs.publish",
    worker_cli.UploadServer.COMMAND: "jobs.upload_server",
    worker_cli.Materialize.COMMAND: "jobs.materialize",
    worker_cli.NodeCache.COMMAND: "jobs.node_cache.server",
    worker_cli.Cleanup.COMMAND: "jobs.cleanup",
    worker_cli.Sweep.COMMAND: "jobs.sweep",
    worker_cli.GC.COMMAND: "jobs.gc",
    worker_cli.CatalogProbe.COMMAND: "jobs.catalog_probe",
    worker_cli.CatalogExport.COMMAND: "jobs.catalog_export",
}
assert set(MODULES) == set(worker_cli.COMMANDS), "every worker command has a module"


def parser() -> argparse.ArgumentParser:
    """The worker's parser (``args.module`` names the module), for tests and ``--help``."""
    return worker_cli.parser({name: {"module": module} for name, module in MODULES.items()})


def main(argv: Sequence[str] | None = None) -> int:
    command = worker_cli.parse(sys.argv[1:] if argv is None else argv)
    args = command.namespace()
    if hasattr(command, "result_file"):
        from jobs import events, own_job

        job = own_job.current()
        if job is not None:
            job.begin()  # this Pod's result replaces whatever an earlier Pod reported
            job.command = command.COMMAND
            start = events.started(command.COMMAND, args)
            if start:
                job.event(*start)
    module = importlib.import_module(MODULES[command.COMMAND])
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
