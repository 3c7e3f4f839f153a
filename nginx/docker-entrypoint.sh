#!/usr/bin/env bash
# nginx entrypoint, after the official image's contract: templates in /etc/nginx/templates/
# rendered with envsubst (only variables that are set are replaced, so nginx's own $vars
# survive), then nginx exec'd as PID 1. Everything written goes to /tmp/nginx.
set -Eeuo pipefail

OUT=/tmp/nginx
log() { printf '[nginx-entrypoint] %s\n' "$*" >&2; }

nginx_prepare_dirs() {
	mkdir -p "$OUT/conf.d" "$OUT/limits" "$OUT/client_body" "$OUT/proxy" "$OUT/fastcgi" "$OUT/uwsgi" "$OUT/scgi"
}

nginx_require_env() {
	local var
	for var in NGINX_SERVER_NAME NGINX_UPSTREAM NGINX_CLIENT_MAX_BODY_SIZE; do
		if [ -z "${!var:-}" ]; then
			log "error: $var is empty; set it in the environment (see docs/configuration.md)"
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
	nginx_render_limits
	printf 'worker_processes %s;\n' "${NGINX_WORKER_PROCESSES:-auto}" >"$OUT/worker.conf"
	if [ "${NGINX_HSTS_SECONDS:-0}" -gt 0 ] 2>/dev/null; then
		printf 'add_header Strict-Transport-Security "max-age=%s; includeSubDomains" always;\n' \
			"$NGINX_HSTS_SECONDS" >"$OUT/hsts.conf"
	else
		: >"$OUT/hsts.conf"
	fi
}

# ---- edge limits (docs/reliability.md, "Threats and limits") -----------------------------------
die() { log "error: $*"; exit 1; }

# bytes SIZE: nginx's size syntax (1048576, 512k, 2m, 1g) in bytes.
bytes() {
	local size=$1 number unit
	[[ $size =~ ^([0-9]+)([kKmMgG]?)$ ]] || return 1
	number=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
	case "$unit" in
		k | K) number=$((number * 1024)) ;;
		m | M) number=$((number * 1024 * 1024)) ;;
		g | G) number=$((number * 1024 * 1024 * 1024)) ;;
	esac
	printf '%s\n' "$number"
}

require_count() { # require_count NAME VALUE: a whole number of at least 1
	[[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1=$2: expected a whole number of at least 1"
}

# Seconds a refused login waits for its next slot: 60/n for n r/m, 1 for r/s (at least 1).
login_retry_after() {
	local rate=$1 n unit
	[[ $rate =~ ^([1-9][0-9]*)r/([sm])$ ]] || die "NGINX_LOGIN_RATE=$rate: expected N r/s or N r/m (e.g. 30r/m)"
	n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
	if [ "$unit" = m ]; then
		printf '%s\n' $(((60 + n - 1) / n))
	else
		printf '1\n'
	fi
}

# Request bodies larger than the in-memory buffer are written to /tmp (a tmpfs): at most
# this many at once (all clients together), so they fill at most 3/4 of it, whatever its size
# and NGINX_CLIENT_MAX_BODY_SIZE; the rest is left for proxied answers and nginx's own files.
body_slots() {
	local max_body tmpfs_kb slots
	max_body=$(bytes "$NGINX_CLIENT_MAX_BODY_SIZE") \
		|| die "NGINX_CLIENT_MAX_BODY_SIZE=$NGINX_CLIENT_MAX_BODY_SIZE: expected a size such as 2m"
	[ "$max_body" -gt 0 ] || die "NGINX_CLIENT_MAX_BODY_SIZE=0 (no limit) would let request bodies fill /tmp: set a size"
	tmpfs_kb=$(df -Pk /tmp | awk 'NR == 2 { print $2 }')
	slots=$((tmpfs_kb * 1024 * 3 / 4 / max_body))
	[ "$slots" -ge 1 ] || die "/tmp (${tmpfs_kb} KB) cannot hold one body of NGINX_CLIENT_MAX_BODY_SIZE=$NGINX_CLIENT_MAX_BODY_SIZE: enlarge the tmpfs"
	log "request bodies spooled to /tmp: at most $slots at once (${tmpfs_kb} KB tmpfs, bodies up to $NGINX_CLIENT_MAX_BODY_SIZE)"
	printf '%s\n' "$slots"
}

# Address lists (space or comma separated) as one directive per entry: "allow 10.0.0.0/8;".
address_lines() {
	local directive=$1 list=$2 entry entries
	IFS=', ' read -r -a entries <<<"$list"
	for entry in ${entries[@]+"${entries[@]}"}; do
		[[ $entry =~ ^[0-9A-Fa-f.:/]+$ ]] || die "$3=$list: '$entry' is not an address or CIDR range"
		printf '%s %s;\n' "$directive" "$entry"
	done
}

nginx_render_limits() {
	local rate=${NGINX_LOGIN_RATE:-30r/m} burst=${NGINX_LOGIN_BURST:-20}
	local per_ip=${NGINX_CONN_PER_IP:-32} bodies_per_ip=${NGINX_BODIES_PER_IP:-4}
	local search_per_ip=${NGINX_SEARCH_PER_IP:-2} search_total=${NGINX_SEARCH_TOTAL:-4}
	local retry_after slots dir=$OUT/limits
	require_count NGINX_LOGIN_BURST "$burst"
	require_count NGINX_CONN_PER_IP "$per_ip"
	require_count NGINX_BODIES_PER_IP "$bodies_per_ip"
	require_count NGINX_SEARCH_PER_IP "$search_per_ip"
	require_count NGINX_SEARCH_TOTAL "$search_total"
	retry_after=$(login_retry_after "$rate")
	slots=$(body_slots)
	printf 'limit_req_zone %s zone=login:10m rate=%s;\n' "\$login_key" "$rate" >"$dir/zones.conf"
	printf 'limit_req zone=login burst=%s nodelay;\n' "$burst" >"$dir/login.conf"
	printf 'add_header Retry-After %s always;\n' "$retry_after" >"$dir/login-retry-after.conf"
	{
		printf 'limit_conn per_ip %s;\n' "$per_ip"
		printf 'limit_conn bodies_per_ip %s;\n' "$bodies_per_ip"
		printf 'limit_conn bodies_all %s;\n' "$slots"
		printf 'limit_conn search_per_ip %s;\n' "$search_per_ip"
		printf 'limit_conn search_all %s;\n' "$search_total"
	} >"$dir/server.conf"
	{
		printf 'allow 127.0.0.1;\nallow ::1;\n'
		address_lines allow "${NGINX_READYZ_ALLOW:-}" NGINX_READYZ_ALLOW
		printf 'deny all;\n'
	} >"$dir/readyz-access.conf"
	{
		address_lines set_real_ip_from "${NGINX_REAL_IP_FROM:-}" NGINX_REAL_IP_FROM
		if [ -n "${NGINX_REAL_IP_FROM:-}" ]; then
			[[ ${NGINX_REAL_IP_HEADER:-X-Forwarded-For} =~ ^[A-Za-z0-9-]+$ ]] \
				|| die "NGINX_REAL_IP_HEADER=$NGINX_REAL_IP_HEADER: expected a header name"
			printf 'real_ip_header %s;\nreal_ip_recursive on;\n' "${NGINX_REAL_IP_HEADER:-X-Forwarded-For}"
		fi
	} >"$dir/real-ip.conf"
	log "logins: $rate per client address, burst $burst; $per_ip requests at once per address;" \
		"searches at once: $search_per_ip per address, $search_total in all"
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
