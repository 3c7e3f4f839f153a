#!/usr/bin/env bash
# Writes a production env file with strong random secrets, from compose/prod.env.example.
# Never overwrites an existing file; the new file is mode 600.
# Usage: scripts/prod-env.sh [FILE]   (default compose/prod.env)
set -Eeuo pipefail

target="${1:-compose/prod.env}"
example="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/compose/prod.env.example"

# Hex only: safe inside URLs (DATABASE_URL, REDIS_URL) and shell without quoting.
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

if [ -e "$target" ]; then
	echo "prod-env: $target already exists; not touching it (delete it first to start over)" >&2
	exit 0
fi
umask 077
sed -e "s/^DJANGO_SECRET_KEY=.*/DJANGO_SECRET_KEY=$(random_hex 32)/" \
	-e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(random_hex 24)/" \
	-e "s/^REDIS_PASSWORD=.*/REDIS_PASSWORD=$(random_hex 24)/" \
	-e "s/^FLOWER_PASSWORD=.*/FLOWER_PASSWORD=$(random_hex 24)/" \
	-e "s/^OFFSITE_PASSWORD=.*/OFFSITE_PASSWORD=$(random_hex 32)/" \
	-e "s/^POSTGRES_BACKUP_PASSWORD=.*/POSTGRES_BACKUP_PASSWORD=$(random_hex 24)/" \
	"$example" >"$target.tmp"
mv "$target.tmp" "$target"
chmod 600 "$target"
echo "prod-env: wrote $target (mode 600) with new random secrets."
echo "prod-env: review DJANGO_ALLOWED_HOSTS, NGINX_SERVER_NAME, DJANGO_CSRF_TRUSTED_ORIGINS and HTTP_BIND before 'make prod-up'."
echo "prod-env: for off-site backups set OFFSITE_REPOSITORY (docs/backups.md), and keep a copy of OFFSITE_PASSWORD"
echo "prod-env: off this machine: without it the off-site backups cannot be read."
