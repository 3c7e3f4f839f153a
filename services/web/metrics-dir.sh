# shellcheck shell=bash
# Sourced by the web image's entrypoint and the worker image's (built FROM the web image), from
# /usr/local/lib/drs/metrics-dir.sh: it only defines metrics_dir.
#
# metrics_dir: prometheus-client's multiprocess mode (apps/core/metrics.py): every process of
# gunicorn, or of the worker's pool, writes its samples to files in PROMETHEUS_MULTIPROC_DIR;
# emptied at start, as files of an earlier run's processes would be counted again. On /tmp, a
# tmpfs in production. Nothing with DJANGO_METRICS=0.
metrics_dir() {
	case "${DJANGO_METRICS:-1}" in 0 | false | no | off) return ;; esac
	export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus-metrics}"
	rm -rf "$PROMETHEUS_MULTIPROC_DIR"
	mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
	chmod 0700 "$PROMETHEUS_MULTIPROC_DIR"
}
