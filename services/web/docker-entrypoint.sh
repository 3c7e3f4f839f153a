#!/usr/bin/env bash
# Entrypoint of the web image (and, through it, of the worker image).
#   gunicorn        the production server (config: config/gunicorn.conf.py, settings from env)
#   runserver       Django's dev server with autoreload on 0.0.0.0:8000
#   migrate         apply migrations once (the one-shot `migrate` service)
#   dev-init        dev stack's first step: migrate, then a superuser and demo data if missing
#   manage ARGS...  any manage.py command
#   anything else   exec'd as given (bash, python, pytest, ...)
set -Eeuo pipefail

log() { printf '[web] %s\n' "$*" >&2; }

# metrics_dir: prometheus-client's multiprocess folder, emptied (shared with the worker image).
# shellcheck source=metrics-dir.sh
. /usr/local/lib/drs/metrics-dir.sh

web_require_env() {
	# The production guard in config/settings.py names the variable; this is the early,
	# friendlier twin for the two a container cannot run without.
	if [ "${DJANGO_DEBUG:-0}" != 1 ] && [ -z "${DJANGO_SECRET_KEY:-}" ] && [ -z "${DJANGO_SECRET_KEY_FILE:-}" ]; then
		log "error: DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set; put one in compose/prod.env (make prod-env makes one)"
		exit 1
	fi
}

# Connections to gunicorn's port from other hosts (nginx), ESTABLISHED (state 01) in
# /proc/net/tcp{,6}; loopback peers (the health check) are not counted.
web_proxy_connections() {
	local port
	port=$(printf '%04X' "${GUNICORN_BIND##*:}")
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v port=":$port" '
		$4 == "01" && substr($2, length($2) - 4) == port \
			&& $3 !~ /^0100007F:/ && $3 !~ /^0000000000000000FFFF00000100007F:/ \
			&& $3 !~ /^00000000000000000000000001000000:/ { n++ }
		END { print n + 0 }'
}

# On SIGTERM: serve GUNICORN_STOP_DELAY s, then on until no proxy connection has been open for
# 2 s in a row (nginx routes elsewhere: its workers that could send here have exited), at most
# GUNICORN_STOP_DRAIN s more; then gunicorn's graceful stop. Once gunicorn has its SIGTERM, a
# connection nginx opens to it is never accepted and is reset, the request with it.
web_stop() {
	local waited=0 idle=0
	log "stopping: serving ${GUNICORN_STOP_DELAY}s, then until nginx has no connection here (${GUNICORN_STOP_DRAIN:-0}s at most)"
	sleep "$GUNICORN_STOP_DELAY"
	while [ "$waited" -lt "${GUNICORN_STOP_DRAIN:-0}" ] && [ "$idle" -lt 2 ]; do
		if [ "$(web_proxy_connections)" = 0 ]; then idle=$((idle + 1)); else idle=0; fi
		sleep 1
		waited=$((waited + 1))
	done
	log "stopping gunicorn ($((GUNICORN_STOP_DELAY + waited))s after SIGTERM, proxy connections: $(web_proxy_connections))"
	kill -TERM "$WEB_GUNICORN_PID" 2>/dev/null || true
}

# gunicorn as PID 1's child. GUNICORN_STOP_DELAY seconds (0: none, gunicorn is exec'd): on
# SIGTERM, go on serving (web_stop) before gunicorn's graceful stop. On a swarm a task leaves the
# service's DNS about 2 s before the signal comes; nginx (upstream-watch) must stop sending it
# requests first.
web_gunicorn() {
	local status=0
	GUNICORN_BIND="${GUNICORN_BIND:-0.0.0.0:8000}"
	GUNICORN_STOP_DELAY="${GUNICORN_STOP_DELAY:-0}"
	if [ "$GUNICORN_STOP_DELAY" = 0 ]; then
		exec gunicorn --config config/gunicorn.conf.py config.wsgi:application "$@"
	fi
	gunicorn --config config/gunicorn.conf.py config.wsgi:application "$@" &
	WEB_GUNICORN_PID=$!
	trap web_stop TERM INT
	while :; do
		wait "$WEB_GUNICORN_PID" && status=0 || status=$?
		kill -0 "$WEB_GUNICORN_PID" 2>/dev/null || break
	done
	exit "$status"
}

web_migrate() {
	if python manage.py migrate --check >/dev/null 2>&1; then
		log "migrations: nothing to apply"
	else
		log "migrations: applying"
		python manage.py migrate --noinput
	fi
}

web_dev_init() {
	web_migrate
	if [ -n "${DJANGO_SUPERUSER_USERNAME:-}" ]; then
		python manage.py ensure_superuser
	fi
	python manage.py seed_demo
}

main() {
	case "${1:-gunicorn}" in
		gunicorn)
			shift || true
			web_require_env
			metrics_dir
			web_gunicorn "$@"
			;;
		runserver)
			shift
			exec python manage.py runserver "${@:-0.0.0.0:8000}"
			;;
		migrate)
			web_migrate
			;;
		dev-init)
			web_dev_init
			;;
		manage)
			shift
			exec python manage.py "$@"
			;;
		*)
			exec "$@"
			;;
	esac
}

main "$@"
