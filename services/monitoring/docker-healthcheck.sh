#!/usr/bin/env bash
# Health check of drs/monitoring, for the program the container runs (its compose service passes
# the name; default prometheus): its HTTP endpoint answers 200 (bash's /dev/tcp; no curl).
set -Eeuo pipefail

endpoint() { # endpoint ROLE: "PORT PATH"
	case "$1" in
		prometheus) echo "9090 /-/healthy" ;;
		alertmanager) echo "9093 /-/healthy" ;;
		node-exporter) echo "9100 /" ;;
		nginx-exporter) echo "9113 /" ;;
		postgres-exporter) echo "9187 /" ;;
		redis-exporter) echo "9121 /" ;;
		blackbox-exporter) echo "9115 /-/healthy" ;;
		*) echo "usage: docker-healthcheck [prometheus|alertmanager|node-exporter|nginx-exporter|postgres-exporter|redis-exporter|blackbox-exporter]" >&2; exit 64 ;;
	esac
}

main() {
	local port path status_line
	read -r port path < <(endpoint "${1:-prometheus}")
	exec 3<>"/dev/tcp/127.0.0.1/$port"
	printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
	read -r -t 3 status_line <&3
	case "$status_line" in
		"HTTP/1."?" 200"*) echo "$1 answers" ;;
		*) echo "${1:-prometheus} answered: ${status_line:-nothing}" >&2; exit 1 ;;
	esac
}

main "$@"
