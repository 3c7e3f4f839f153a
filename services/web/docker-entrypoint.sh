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

web_require_env() {
	# The production guard in config/settings.py names the variable; this is the early,
	# friendlier twin for the two a container cannot run without.
	if [ "${DJANGO_DEBUG:-0}" != 1 ] && [ -z "${DJANGO_SECRET_KEY:-}" ] && [ -z "${DJANGO_SECRET_KEY_FILE:-}" ]; then
		log "error: DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set; put one in compose/prod.env (make prod-env makes one)"
		exit 1
	fi
}

# gunicorn as PID 1's child. GUNICORN_STOP_DELAY seconds (0: none): on SIGTERM, go on serving that
# long before gunicorn's graceful stop. On a swarm a task leaves the service's DNS as the signal
# comes; nginx (upstream-watch, every second) needs a moment to stop sending it new requests.
web_gunicorn() {
	local delay="${GUNICORN_STOP_DELAY:-0}" pid status=0
	if [ "$delay" = 0 ]; then
		exec gunicorn --config config/gunicorn.conf.py config.wsgi:application "$@"
	fi
	gunicorn --config config/gunicorn.conf.py config.wsgi:application "$@" &
	pid=$!
	# shellcheck disable=SC2064 # expand now: the pid and delay of this very gunicorn
	trap "log 'stopping in ${delay}s'; sleep '$delay'; kill -TERM '$pid' 2>/dev/null || true" TERM INT
	while :; do
		wait "$pid" && status=0 || status=$?
		kill -0 "$pid" 2>/dev/null || break
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
