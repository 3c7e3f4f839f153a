#!/usr/bin/env bash
# Health check of drs/redis: healthy when an authenticated PING answers PONG
# (a server still loading its data set answers LOADING, i.e. unhealthy). The
# password reaches redis-cli through REDISCLI_AUTH, not its command line.
set -Eeuo pipefail

# shellcheck source=docker-entrypoint.sh
. /usr/local/bin/docker-entrypoint.sh
file_env REDIS_PASSWORD

reply=$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --no-auth-warning -h 127.0.0.1 -p 6379 ping 2>&1 || true)
if [ "$reply" != PONG ]; then
	printf 'unhealthy: %s\n' "${reply:-no answer}"
	exit 1
fi
