#!/usr/bin/env bash
# Entrypoint of the worker image.
#   worker      Celery worker: acks late, requeue when a worker is lost, prefetch 1,
#               --max-tasks-per-child bounded (CELERY_MAX_TASKS_PER_CHILD, default 200),
#               concurrency CELERY_CONCURRENCY (default 2)
#   beat        Celery beat (run exactly one); schedule file CELERY_BEAT_SCHEDULE_FILENAME
#   watch CMD   dev: restart CMD (worker or beat) whenever a .py file under /app changes
#   anything else is passed to the web image's entrypoint, web-entrypoint.sh here (manage, bash, ...)
set -Eeuo pipefail

log() { printf '[worker] %s\n' "$*" >&2; }

worker_cmd() {
	printf '%s\n' celery -A config worker \
		--loglevel "${CELERY_LOG_LEVEL:-INFO}" \
		--concurrency "${CELERY_CONCURRENCY:-2}" \
		--prefetch-multiplier 1 \
		--max-tasks-per-child "${CELERY_MAX_TASKS_PER_CHILD:-200}" \
		--max-memory-per-child "${CELERY_MAX_MEMORY_PER_CHILD_KB:-262144}" \
		--hostname "worker@%h" \
		--without-gossip --without-mingle
}

beat_cmd() {
	printf '%s\n' celery -A config beat \
		--loglevel "${CELERY_LOG_LEVEL:-INFO}" \
		--schedule "${CELERY_BEAT_SCHEDULE_FILENAME:-/tmp/celerybeat-schedule}" \
		--pidfile=
}

main() {
	local -a cmd
	case "${1:-worker}" in
		worker) mapfile -t cmd < <(worker_cmd); shift || true; exec "${cmd[@]}" "$@" ;;
		beat) mapfile -t cmd < <(beat_cmd); shift; exec "${cmd[@]}" "$@" ;;
		watch)
			shift
			case "${1:-worker}" in
				worker) mapfile -t cmd < <(worker_cmd) ;;
				beat) mapfile -t cmd < <(beat_cmd) ;;
				*) log "error: watch takes 'worker' or 'beat', not '$1'"; exit 64 ;;
			esac
			log "dev: restarting '${cmd[*]}' on every change under /app"
			exec watchfiles --filter python --sigint-timeout 10 "${cmd[*]}" /app
			;;
		*) exec web-entrypoint.sh "$@" ;;
	esac
}

main "$@"
