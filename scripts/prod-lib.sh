# shellcheck shell=bash
# Shared by scripts/backup.sh and scripts/deploy.sh (sourced): the prod stack's compose command
# and small helpers. Settings (the Makefile passes them):
#   PROD_ENV      env file (default compose/prod.env)
#   PROD_PROJECT  compose project name (default drs)
# The image tag the stack runs is kept in "$PROD_ENV.tags" by `make deploy` (DRS_TAG=... and
# DRS_PREVIOUS_TAG=...); without that file it is $DRS_TAG (default latest).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROD_ENV="${PROD_ENV:-compose/prod.env}"
PROD_PROJECT="${PROD_PROJECT:-drs}"
TAGS_FILE="$PROD_ENV.tags"

say() { printf '\033[1m[%s]\033[0m %s\n' "${script_name:-prod}" "$*"; }
die() { printf '[%s] error: %s\n' "${script_name:-prod}" "$*" >&2; exit 1; }

require_env_file() {
	[ -f "$PROD_ENV" ] || die "$PROD_ENV does not exist; run 'make prod-env' (then 'make prod-up') first"
}

# tags_get KEY: a value from the tags file (empty when unset).
tags_get() { sed -n "s/^$1=//p" "$TAGS_FILE" 2>/dev/null | tail -n1; }

current_tag() {
	local tag
	tag=$(tags_get DRS_TAG)
	printf '%s\n' "${tag:-${DRS_TAG:-latest}}"
}

# prod_compose ARGS...: docker compose for the prod stack at $tag_override (default: the current tag).
prod_compose() {
	DRS_TAG="${tag_override:-$(current_tag)}" DRS_ENV_FILE="$PROD_ENV" COMPOSE_BAKE=false \
		docker compose --project-directory "$ROOT" -p "$PROD_PROJECT" --env-file "$PROD_ENV" \
		-f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.prod.yml" "$@"
}

health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"; }

# wait_healthy TIMEOUT CONTAINER...: until each container's health check passes.
wait_healthy() {
	local timeout=$1 cid deadline
	shift
	deadline=$((SECONDS + timeout))
	for cid in "$@"; do
		until [ "$(health_of "$cid")" = healthy ]; do
			[ "$(docker inspect -f '{{.State.Running}}' "$cid")" = true ] \
				|| die "container ${cid:0:12} stopped while starting; see: docker logs ${cid:0:12}"
			[ "$SECONDS" -lt "$deadline" ] || die "container ${cid:0:12} not healthy after ${timeout}s; see: docker logs ${cid:0:12}"
			sleep 1
		done
	done
}

# wait_service_healthy TIMEOUT SERVICE...: every container of each service.
wait_service_healthy() {
	local timeout=$1 svc
	shift
	for svc in "$@"; do
		# shellcheck disable=SC2046 # container ids: one word each
		wait_healthy "$timeout" $(prod_compose ps -q "$svc")
	done
}
