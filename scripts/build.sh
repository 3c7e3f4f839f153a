#!/usr/bin/env bash
# Builds every image: the prod set (web, worker, postgres, redis, nginx) and the dev set
# (web-dev, worker-dev), tagged DRS_TAG (default latest). Compose orders the builds by
# depends_on (worker and nginx are built FROM the web image).
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DRS_TAG="${DRS_TAG:-latest}"
# Engine 20.10 has no buildx: use Compose's own BuildKit client, quietly.
export COMPOSE_BAKE=false
export BUILD_CA_BUNDLE="${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[ -r "$BUILD_CA_BUNDLE" ] || BUILD_CA_BUNDLE=/dev/null

# The dev env file only fills in variables the compose files require; no secret is built in.
compose() { docker compose -p drs-build --env-file compose/dev.env -f docker-compose.yml "$@"; }

start=$(date +%s)
echo "build: prod images (tag $DRS_TAG)"
compose -f docker-compose.prod.yml build "${@}"
echo "build: dev images"
compose -f docker-compose.dev.yml build web worker
echo "build: done in $(( $(date +%s) - start ))s"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
	| awk -v tag=":$DRS_TAG" 'index($1, "drs/") == 1 && index($1, tag) || $1 == "debian:trixie-slim" {print "  " $0}' | sort
