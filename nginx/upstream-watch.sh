#!/usr/bin/env bash
# Watches the addresses Docker's DNS gives for the web service and reloads nginx (graceful:
# old workers finish their requests) when they change, e.g. after a web container is recreated
# or the service is scaled. nginx 1.26's upstream blocks resolve names only at (re)load.
# Usage: upstream-watch HOST   (interval: NGINX_UPSTREAM_WATCH_INTERVAL seconds, default 2)
set -Eeuo pipefail

host="$1"
interval="${NGINX_UPSTREAM_WATCH_INTERVAL:-2}"

addresses() { getent ahosts "$host" 2>/dev/null | awk '$2 == "STREAM" {print $1}' | sort -u | tr '\n' ' '; }

main() {
	local last current
	last=$(addresses)
	while sleep "$interval"; do
		current=$(addresses)
		# No answer (the only container is being replaced): keep the current config.
		[ -n "$current" ] || continue
		if [ "$current" != "$last" ]; then
			printf '[upstream-watch] %s: %s-> %s; reloading nginx\n' "$host" "${last:-none }" "$current" >&2
			if nginx -e stderr -t -q && nginx -e stderr -s reload; then
				last=$current
			fi
		fi
	done
}

main
