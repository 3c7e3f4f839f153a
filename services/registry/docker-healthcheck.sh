#!/usr/bin/env bash
# drs/registry's health check: the registry API (GET /v2/) answers 200 on its port. No curl in
# the image: bash's /dev/tcp speaks the HTTP request. With TLS on (REGISTRY_HTTP_TLS_CERTIFICATE),
# which bash cannot speak, only that the port takes connections.
set -Eeuo pipefail

registry_status() {
	local status
	exec 3<>/dev/tcp/127.0.0.1/5000
	printf 'GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
	read -r _ status _ <&3
	exec 3>&-
	printf '%s\n' "$status"
}

if [ -n "${REGISTRY_HTTP_TLS_CERTIFICATE:-}" ]; then
	exec 3<>/dev/tcp/127.0.0.1/5000
else
	[ "$(registry_status)" = 200 ]
fi
