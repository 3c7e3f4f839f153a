#!/usr/bin/env bash
# Worker liveness: the worker touches its heartbeat file from its event loop every few seconds
# (config/celery.py); a file older than WORKER_HEARTBEAT_MAX_AGE seconds means it is stuck.
set -Eeuo pipefail
file="${CELERY_WORKER_HEARTBEAT_FILE:-/tmp/worker-heartbeat}"
max_age="${WORKER_HEARTBEAT_MAX_AGE:-60}"
if [ ! -f "$file" ]; then
	echo "no heartbeat file $file yet" >&2
	exit 1
fi
age=$(( $(date +%s) - $(stat -c %Y "$file") ))
if [ "$age" -gt "$max_age" ]; then
	echo "heartbeat is ${age}s old (limit ${max_age}s)" >&2
	exit 1
fi
echo "heartbeat ${age}s ago"
