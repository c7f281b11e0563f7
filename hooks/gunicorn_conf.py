"""gunicorn settings for the hook service.

Hooks are CPU-bound and fast (no I/O), so sync workers, one per core, are the
right model; the timeout sits under Metacontroller's 10 s hook timeout.
"""

import multiprocessing
import os

bind = os.environ.get("AI_MODELS_LISTEN", "0.0.0.0:8080")
workers = int(os.environ.get("AI_MODELS_HOOK_WORKERS", max(2, multiprocessing.cpu_count())))
worker_class = "sync"
timeout = 9
graceful_timeout = 5
keepalive = 5
max_requests = 20000
max_requests_jitter = 1000
accesslog = None
errorlog = "-"
loglevel = "info"
