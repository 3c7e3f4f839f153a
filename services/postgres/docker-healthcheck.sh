#!/usr/bin/env bash
# Health check of drs/postgres (the image's HEALTHCHECK), for the role the container runs:
#   docker-healthcheck [postgres]  healthy once the real server accepts TCP connections. It
#                                  checks over TCP on purpose: the temporary server that runs
#                                  the init scripts listens on the Unix socket only, so "ready"
#                                  cannot be reported while initialisation is still going on.
#   docker-healthcheck backup      the backup scheduler (the backup service): backup-healthcheck
set -Eeuo pipefail

case "${1:-postgres}" in
	postgres) ;;
	backup) exec backup-healthcheck ;;
	*) echo "usage: docker-healthcheck [postgres|backup]" >&2; exit 64 ;;
esac

# shellcheck source=docker-entrypoint.sh
. /usr/local/bin/docker-entrypoint.sh
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"

exec pg_isready --quiet --timeout=3 --host=127.0.0.1 --port="${PGPORT:-5432}" \
	--username="$POSTGRES_USER" --dbname="$POSTGRES_DB"
