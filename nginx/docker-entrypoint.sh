#!/usr/bin/env bash
# nginx entrypoint, after the official image's contract: templates in /etc/nginx/templates/
# rendered with envsubst (only variables that are set are replaced, so nginx's own $vars
# survive), then nginx exec'd as PID 1. Everything written goes to /tmp/nginx.
set -Eeuo pipefail

OUT=/tmp/nginx
log() { printf '[nginx-entrypoint] %s\n' "$*" >&2; }

nginx_prepare_dirs() {
	mkdir -p "$OUT/conf.d" "$OUT/client_body" "$OUT/proxy" "$OUT/fastcgi" "$OUT/uwsgi" "$OUT/scgi"
}

nginx_require_env() {
	local var
	for var in NGINX_SERVER_NAME NGINX_UPSTREAM NGINX_CLIENT_MAX_BODY_SIZE; do
		if [ -z "${!var:-}" ]; then
			log "error: $var is empty; set it in the environment (see the README, Configuration)"
			exit 1
		fi
	done
}

nginx_render_templates() {
	local defined template target name
	defined=''
	while IFS= read -r name; do
		defined+="\${$name} "
	done < <(compgen -e)
	for template in /etc/nginx/templates/*.template; do
		[ -e "$template" ] || continue
		target="$OUT/conf.d/$(basename "$template" .template)"
		envsubst "$defined" <"$template" >"$target"
		log "rendered $target"
	done
	nginx_render_site "$defined"
	printf 'worker_processes %s;\n' "${NGINX_WORKER_PROCESSES:-auto}" >"$OUT/worker.conf"
	if [ "${NGINX_HSTS_SECONDS:-0}" -gt 0 ] 2>/dev/null; then
		printf 'add_header Strict-Transport-Security "max-age=%s; includeSubDomains" always;\n' \
			"$NGINX_HSTS_SECONDS" >"$OUT/hsts.conf"
	else
		: >"$OUT/hsts.conf"
	fi
}

# HTTPS when a certificate and key are mounted in /etc/nginx/certs (docs/tls.md), else HTTP only.
nginx_render_site() {
	local defined=$1 mode=http certs=/etc/nginx/certs
	if [ -r "$certs/fullchain.pem" ] && [ -r "$certs/privkey.pem" ]; then
		mode=https
	elif [ -e "$certs/fullchain.pem" ] || [ -e "$certs/privkey.pem" ]; then
		log "error: $certs needs both fullchain.pem and privkey.pem, readable by uid $(id -u)"
		exit 1
	else
		log "WARNING: no certificate in $certs: serving plain HTTP only (make certs-selfsigned, docs/tls.md)"
	fi
	envsubst "$defined" <"/etc/nginx/site-templates/$mode.conf.template" >"$OUT/conf.d/site.conf"
	log "rendered $OUT/conf.d/site.conf ($mode)"
}

main() {
	if [ "${1:-}" = nginx ]; then
		nginx_require_env
		nginx_prepare_dirs
		nginx_render_templates
		# Reload nginx gracefully when the web service's addresses change (recreated or scaled).
		upstream-watch render "$NGINX_UPSTREAM"
		if [ "${NGINX_UPSTREAM_WATCH:-1}" = 1 ]; then
			upstream-watch "$NGINX_UPSTREAM" &
		fi
	fi
	exec "$@"
}

main "$@"
