#!/usr/bin/env bash
# nginx 1.26's upstream blocks resolve names only at (re)load. This keeps the `django` upstream's
# server list (/tmp/nginx/upstream.conf: one `server IP:PORT` per web container) in step with
# the addresses Docker's DNS gives for the web service, reloading nginx gracefully (old workers
# finish their requests) when the list changes, e.g. a web container was recreated or scaled.
#
# Draining (used by scripts/deploy.sh): an address listed in /tmp/nginx/upstream-drain is left
# out of the list while it still resolves, so nginx stops sending it new requests before its
# container is stopped; requests already on it finish.
# Usage:
#   upstream-watch HOST:PORT        loop (interval NGINX_UPSTREAM_WATCH_INTERVAL s, default 1)
#   upstream-watch render HOST:PORT write the list once (the entrypoint, before nginx starts)
#   upstream-watch drain IP         leave IP out from now on
#   upstream-watch undrain IP       take IP back
set -Eeuo pipefail

CONF=/tmp/nginx/upstream.conf
DRAIN=/tmp/nginx/upstream-drain
interval="${NGINX_UPSTREAM_WATCH_INTERVAL:-1}"

log() { printf '[upstream-watch] %s\n' "$*" >&2; }

# The addresses to route to: resolved ones not drained, sorted, space separated.
addresses() {
	local host=$1
	getent ahosts "$host" 2>/dev/null | awk '$2 == "STREAM" {print $1}' | sort -u \
		| grep -vxF -f <(cat "$DRAIN" 2>/dev/null; echo '#none') | tr '\n' ' ' || true
}

render() { # render HOST PORT ADDRESSES
	local host=$1 port=$2 ip
	{
		printf '# written by upstream-watch\n'
		if [ -z "$3" ]; then
			printf 'server %s:%s max_fails=0;\n' "$host" "$port"
		fi
		for ip in $3; do
			case "$ip" in
				*:*) printf 'server [%s]:%s max_fails=0;\n' "$ip" "$port" ;;
				*) printf 'server %s:%s max_fails=0;\n' "$ip" "$port" ;;
			esac
		done
	} >"$CONF.tmp"
	mv -f "$CONF.tmp" "$CONF"
}

watch() { # watch HOST PORT
	local host=$1 port=$2 last current
	last=$(addresses "$host")
	while sleep "$interval"; do
		current=$(addresses "$host")
		# No answer (the only container is being replaced): keep the current list.
		[ -n "$current" ] || continue
		if [ "$current" != "$last" ]; then
			log "$host: ${last:-none }-> $current; reloading nginx"
			render "$host" "$port" "$current"
			if nginx -e stderr -t -q && nginx -e stderr -s reload; then
				last=$current
			fi
		fi
	done
}

main() {
	local cmd=${1:-} target
	case "$cmd" in
		render)
			target=$2
			render "${target%:*}" "${target##*:}" "$(addresses "${target%:*}")"
			;;
		drain)
			printf '%s\n' "$2" >>"$DRAIN"
			log "draining $2"
			;;
		undrain)
			if [ -f "$DRAIN" ]; then
				grep -vxF -- "$2" "$DRAIN" >"$DRAIN.tmp" || true
				mv -f "$DRAIN.tmp" "$DRAIN"
			fi
			log "undraining $2"
			;;
		*)
			target=$cmd
			watch "${target%:*}" "${target##*:}"
			;;
	esac
}

main "$@"
