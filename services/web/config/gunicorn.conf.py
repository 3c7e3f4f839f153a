"""gunicorn configuration, every value from the environment.

Run: gunicorn -c config/gunicorn.conf.py config.wsgi
Workers come from WEB_CONCURRENCY, never from cpu_count(): inside a container that sees the
host's cores. gthread workers keep connections alive, so nginx's upstream keep-alive pool works.
"""

import gc
import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


wsgi_app = "config.wsgi:application"
bind = [os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")]
# The app's metrics (DJANGO_METRICS, on by default): a second listener, on the stack's networks
# only; a request that arrives there gets /metrics or 404 (apps.core.middleware.MetricsMiddleware).
# nginx proxies to the first one only.
METRICS = _bool("DJANGO_METRICS", True)
if METRICS:
    bind.append(f"0.0.0.0:{_int('DJANGO_METRICS_PORT', 8001)}")
workers = _int("WEB_CONCURRENCY", 2)
threads = _int("GUNICORN_THREADS", 4)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Must exceed nginx's upstream keepalive_timeout (60 s), so nginx closes idle connections first.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
# Recycle workers now and then (jittered so they do not all restart together), as a guard
# against slow leaks; rarely, as a new worker costs a second of CPU (docs/benchmarks.md).
max_requests = _int("GUNICORN_MAX_REQUESTS", 50_000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 5_000)
# The app is imported once, in the master, and its workers are forked from it: they share those
# pages (copy-on-write) instead of importing Django each, ~50 MiB less for web's two workers
# (docs/benchmarks.md, "Tuning done for the targets"). Code changes need a new container (make
# deploy), as always.
preload_app = _bool("GUNICORN_PRELOAD", True)
# Heartbeat files on tmpfs: a disk-backed /tmp can stall workers into timeouts.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", "/dev/shm")  # noqa: S108
# Django logs every request itself (JSON with request id); gunicorn's access log is opt-in.
accesslog = "-" if _bool("GUNICORN_ACCESSLOG", False) else None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# gunicorn 25+ opens a control socket for `gunicornc` under $HOME by default, which the
# read-only root filesystem refuses. Off unless GUNICORN_CONTROL_SOCKET names a path (on /tmp).
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "/tmp/gunicorn.ctl")  # noqa: S108
control_socket_disable = "GUNICORN_CONTROL_SOCKET" not in os.environ


def pre_fork(server, worker):
    """In the master, before each fork: with the app preloaded, move it out of the garbage
    collector's sight first, so a collection in a worker does not write to (and so copy) the
    shared pages of every object it would otherwise visit."""
    gc.freeze()


def post_worker_init(worker):
    """Once the app is imported in a worker: move everything alive now (Django, the URLconf,
    the ORM's models) out of the garbage collector's sight, and collect the youngest
    generation less often than the default 700 allocations (a request makes thousands of
    short-lived objects; docs/benchmarks.md)."""
    gc.freeze()
    gc.set_threshold(_int("GUNICORN_GC_THRESHOLD", 20_000), 20, 20)


def child_exit(server, worker):
    """A worker gone (recycled or crashed): prometheus-client drops its live gauges' files; its
    counters stay counted (multiprocess mode, docs/observability.md)."""
    if METRICS and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
