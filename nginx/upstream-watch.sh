#!/usr/bin/env bash
# nginx 1.26's upstream blocks resolve names only at (re)load. This keeps the `django` upstream's
# server list (/tmp/nginx/upstream.conf: one `server IP:PORT` per web container) in step with
# the addresses Docker's DNS gives for the web service, reloading nginx gracefully (old workers
# finish their requests) when the list changes, e.g. a web container was recreated or scaled.
#
# Draining (used by scripts/deploy.sh): an address listed in /tmp/nginx/upstream-drain is left
# out of the list while it still resolves, so nginx stops sending it new requests before its
# container is stopped; requests already on it finish.
#
# State (read by scripts/deploy.sh): /tmp/nginx/upstream-routed holds the addresses nginx's
# workers route to, space separated. It is written when nginx starts with a list, and after a
# reload only once nginx's new workers (started with the new list) are running.
# Usage:
#   upstream-watch HOST:PORT        loop (interval NGINX_UPSTREAM_WATCH_INTERVAL s, default 1)
#   upstream-watch render HOST:PORT write the list once (the entrypoint, before nginx starts)
#   upstream-watch drain IP         leave IP out from now on
#   upstream-watch undrain IP       take IP back
set -Eeuo pipefail

CONF=/tmp/nginx/upstream.conf
DRAIN=/tmp/nginx/upstream-drain
ROUTED=/tmp/nginx/upstream-routed
PID_FILE=/tmp/nginx/nginx.pid
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

record_routed() { # record_routed ADDRESSES
	printf '%s\n' "$1" >"$ROUTED.tmp"
	mv -f "$ROUTED.tmp" "$ROUTED"
}

# The pids of nginx's worker processes (children of the master), one per line.
workers() {
	local master stat pid comm ppid rest
	master=$(cat "$PID_FILE" 2>/dev/null) || return 0
	for stat in /proc/[0-9]*/stat; do
		# "PID (COMM) STATE PPID ..."; a process may be gone by now
		read -r pid comm _ ppid rest 2>/dev/null <"$stat" || continue
		[ "$comm" != "(nginx)" ] || [ "$ppid" != "$master" ] || printf '%s\n' "$pid"
	done | sort
}

# reload: nginx reloads gracefully; returns once a worker started after the reload runs (the
# new configuration is in use), within 10 s.
reload() {
	local before tries=0
	before=$(workers)
	nginx -e stderr -t -q && nginx -e stderr -s reload || return 1
	while [ "$tries" -lt 100 ]; do
		[ -z "$(comm -13 <(printf '%s\n' "$before") <(workers))" ] || return 0
		tries=$((tries + 1))
		sleep 0.1
	done
	log "nginx started no new workers within 10s of the reload"
	return 1
}

watch() { # watch HOST PORT
	local host=$1 port=$2 last current
	last=$(cat "$ROUTED" 2>/dev/null || true) # what nginx started with (render)
	while sleep "$interval"; do
		current=$(addresses "$host")
		# No answer (the only container is being replaced): keep the current list.
		[ -n "$current" ] || continue
		if [ "$current" != "$last" ]; then
			log "$host: ${last:-none }-> $current; reloading nginx"
			render "$host" "$port" "$current"
			if reload; then
				record_routed "$current"
				last=$current
			fi
		fi
	done
}

main() {
	local cmd=${1:-} target
	case "$cmd" in
		render)
			local routed
			target=$2
			routed=$(addresses "${target%:*}")
			render "${target%:*}" "${target##*:}" "$routed"
			record_routed "$routed"
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
