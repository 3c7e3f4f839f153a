#!/usr/bin/env bash
# Health check of drs/postgres: healthy once the real server accepts TCP
# connections. It checks over TCP on purpose: the temporary server that runs the
# init scripts listens on the Unix socket only, so "ready" cannot be reported
# while initialisation is still going on.
set -Eeuo pipefail

# shellcheck source=docker-entrypoint.sh
. /usr/local/bin/docker-entrypoint.sh
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"

exec pg_isready --quiet --timeout=3 --host=127.0.0.1 --port="${PGPORT:-5432}" \
	--username="$POSTGRES_USER" --dbname="$POSTGRES_DB"
