#!/usr/bin/env bash
# Health check of drs/nginx (the image's HEALTHCHECK): /nginx-health answers 200 (bash's
# /dev/tcp; no curl in the image).
set -Eeuo pipefail
exec 3<>/dev/tcp/127.0.0.1/8080
printf 'GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 2 status_line <&3
case "$status_line" in
	"HTTP/1.1 200"*) echo ok ;;
	*) echo "unexpected: $status_line" >&2; exit 1 ;;
esac
