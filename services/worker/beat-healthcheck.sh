#!/usr/bin/env bash
# Beat liveness: beat rewrites its schedule file as it sends periodic tasks (the export sweep
# runs every minute); a schedule untouched for BEAT_HEARTBEAT_MAX_AGE seconds means it is stuck.
set -Eeuo pipefail
schedule="${CELERY_BEAT_SCHEDULE_FILENAME:-/tmp/celerybeat-schedule}"
max_age="${BEAT_HEARTBEAT_MAX_AGE:-600}"
newest=0
for f in "$schedule" "$schedule".*; do
	[ -e "$f" ] || continue
	m=$(stat -c %Y "$f")
	[ "$m" -gt "$newest" ] && newest=$m
done
if [ "$newest" = 0 ]; then
	echo "no schedule file $schedule yet" >&2
	exit 1
fi
age=$(( $(date +%s) - newest ))
if [ "$age" -gt "$max_age" ]; then
	echo "schedule file is ${age}s old (limit ${max_age}s)" >&2
	exit 1
fi
echo "schedule written ${age}s ago"
