#!/usr/bin/env bash
# Health check of drs/worker (the image's HEALTHCHECK), for the role the container runs:
#   docker-healthcheck [worker]  the worker touches its heartbeat file from its event loop every
#                                few seconds (config/celery.py); a file older than
#                                WORKER_HEARTBEAT_MAX_AGE seconds (60) means it is stuck
#   docker-healthcheck beat      beat rewrites its schedule file as it sends periodic tasks (the
#                                export sweep runs every minute); a schedule untouched for
#                                BEAT_HEARTBEAT_MAX_AGE seconds (600) means it is stuck
#   docker-healthcheck flower    Flower answers GET /flower/healthcheck with 200 (bash's
#                                /dev/tcp; Flower asks no credentials there)
set -Eeuo pipefail

# age_check WHAT AGE MAX_AGE: healthy while AGE (seconds) is at most MAX_AGE.
age_check() {
	if [ "$2" -gt "$3" ]; then
		echo "$1 is ${2}s old (limit ${3}s)" >&2
		exit 1
	fi
	echo "$1 written ${2}s ago"
}

worker_health() {
	local file="${CELERY_WORKER_HEARTBEAT_FILE:-/tmp/worker-heartbeat}"
	if [ ! -f "$file" ]; then
		echo "no heartbeat file $file yet" >&2
		exit 1
	fi
	age_check heartbeat $(($(date +%s) - $(stat -c %Y "$file"))) "${WORKER_HEARTBEAT_MAX_AGE:-60}"
}

beat_health() {
	local schedule="${CELERY_BEAT_SCHEDULE_FILENAME:-/tmp/celerybeat-schedule}" newest=0 f m
	for f in "$schedule" "$schedule".*; do
		[ -e "$f" ] || continue
		m=$(stat -c %Y "$f")
		[ "$m" -le "$newest" ] || newest=$m
	done
	if [ "$newest" = 0 ]; then
		echo "no schedule file $schedule yet" >&2
		exit 1
	fi
	age_check "schedule file" $(($(date +%s) - newest)) "${BEAT_HEARTBEAT_MAX_AGE:-600}"
}

flower_health() {
	local status_line
	exec 3<>/dev/tcp/127.0.0.1/5555
	printf 'GET /flower/healthcheck HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
	read -r -t 3 status_line <&3
	case "$status_line" in
		"HTTP/1."?" 200"*) echo "flower answers" ;;
		*) echo "flower answered: ${status_line:-nothing}" >&2; exit 1 ;;
	esac
}

case "${1:-worker}" in
	worker) worker_health ;;
	beat) beat_health ;;
	flower) flower_health ;;
	*) echo "usage: docker-healthcheck [worker|beat|flower]" >&2; exit 64 ;;
esac
