#!/usr/bin/env bash
# Entrypoint of the worker image.
#   worker      Celery worker (metrics on DJANGO_METRICS_PORT unless DJANGO_METRICS=0): acks late, requeue when a worker is lost, prefetch 1,
#               --max-tasks-per-child bounded (CELERY_MAX_TASKS_PER_CHILD, default 200),
#               concurrency CELERY_CONCURRENCY (default 2)
#   beat        Celery beat (run exactly one); schedule file CELERY_BEAT_SCHEDULE_FILENAME
#   flower      Flower, the Celery monitor (compose profile `flower`; docs/observability.md), on
#               port 5555 under /flower/: read-only (no remote control), nothing kept on disk,
#               basic auth FLOWER_USER (default flower) / FLOWER_PASSWORD (16+ characters). It
#               talks to the broker only (CELERY_BROKER_URL), never loads Django.
#   watch CMD   dev: restart CMD (worker or beat) whenever a .py file under /app changes
#   anything else is passed to the web image's entrypoint, web-entrypoint.sh here (manage, bash, ...)
set -Eeuo pipefail

log() { printf '[worker] %s\n' "$*" >&2; }

# metrics_dir: prometheus-client's multiprocess folder for the worker's pool processes, emptied
# (the web image's script, as web-entrypoint.sh uses it).
# shellcheck source=../web/metrics-dir.sh
. /usr/local/lib/drs/metrics-dir.sh

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

# Flower reads its options from the command line below; FLOWER_BASIC_AUTH (a Flower variable)
# carries the credentials, so that they never show in the process list.
flower_cmd() {
	printf '%s\n' celery flower \
		--address=0.0.0.0 --port=5555 --url_prefix=flower \
		--persistent=False --read_only=True \
		--max_tasks=10000 --purge_offline_workers=3600
}

# On a swarm the passwords are files (Docker secrets, docs/swarm.md): FLOWER_PASSWORD_FILE, and
# REDIS_PASSWORD_FILE put into CELERY_BROKER_URL (given there without a password).
flower_secret_files() {
	if [ -z "${FLOWER_PASSWORD:-}" ] && [ -n "${FLOWER_PASSWORD_FILE:-}" ]; then
		FLOWER_PASSWORD=$(cat "$FLOWER_PASSWORD_FILE") || { log "error: cannot read FLOWER_PASSWORD_FILE"; exit 64; }
	fi
	if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
		local password
		password=$(cat "$REDIS_PASSWORD_FILE") || { log "error: cannot read REDIS_PASSWORD_FILE"; exit 64; }
		case "${CELERY_BROKER_URL:-}" in
			redis://*@*) log "error: CELERY_BROKER_URL has a password and REDIS_PASSWORD_FILE is set; set only one"; exit 64 ;;
			redis://*) export CELERY_BROKER_URL="redis://:${password}@${CELERY_BROKER_URL#redis://}" ;;
		esac
	fi
}

flower_auth() {
	flower_secret_files
	local user=${FLOWER_USER:-flower} password=${FLOWER_PASSWORD:-}
	if [ "${#password}" -lt 16 ]; then
		log "error: FLOWER_PASSWORD must have at least 16 characters: set one in the env file" \
			"(make prod-env writes one; or: openssl rand -hex 24; docs/observability.md)"
		exit 64
	fi
	case "$user$password" in
		*,*) log "error: FLOWER_USER and FLOWER_PASSWORD must not contain a comma"; exit 64 ;;
	esac
	case "$user" in
		'' | *:*) log "error: FLOWER_USER must be a name without a colon"; exit 64 ;;
	esac
	export FLOWER_BASIC_AUTH="$user:$password"
	unset FLOWER_PASSWORD
}

main() {
	local -a cmd
	case "${1:-worker}" in
		worker) metrics_dir; mapfile -t cmd < <(worker_cmd); shift || true; exec "${cmd[@]}" "$@" ;;
		beat) mapfile -t cmd < <(beat_cmd); shift; exec "${cmd[@]}" "$@" ;;
		flower) flower_auth; mapfile -t cmd < <(flower_cmd); shift; exec "${cmd[@]}" "$@" ;;
		watch)
			shift
			case "${1:-worker}" in
				worker) metrics_dir; mapfile -t cmd < <(worker_cmd) ;;
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
