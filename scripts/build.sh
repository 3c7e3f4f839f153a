#!/usr/bin/env bash
# Builds every image: the prod set (web, worker, postgres, redis, nginx, and the monitoring
# profile's drs/monitoring) and the dev set (web-dev, worker-dev), tagged DRS_TAG (default
# latest). Compose orders the builds by depends_on (worker and nginx are built FROM the web image).
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DRS_TAG="${DRS_TAG:-latest}"

# Under their own project; the dev env file only fills in variables the compose files require
# (no secret is built in). scripts/compose.sh hands BUILD_CA_BUNDLE to the builds.
compose() { # compose STACK ARGS...
	local stack=$1
	shift
	scripts/compose.sh --project drs-build --env-file compose/dev.env --tag "$DRS_TAG" "$stack" "$@"
}

start=$(date +%s)
echo "build: prod images (tag $DRS_TAG)"
# Every profile's images too (monitoring: drs/monitoring).
compose prod --profile monitoring build "$@"
echo "build: dev images"
compose dev build web worker
echo "build: done in $(( $(date +%s) - start ))s"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
	| awk -v tag=":$DRS_TAG" 'index($1, "drs/") == 1 && index($1, tag) || $1 == "debian:trixie-slim" {print "  " $0}' | sort
