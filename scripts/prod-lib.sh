# shellcheck shell=bash
# Functions shared by scripts/backup.sh, scripts/deploy.sh and scripts/update.sh (sourced; it sets
# no variables).
# The prod stack is the one scripts/compose.sh calls `prod`: env file PROD_ENV (default
# compose/prod.env), project PROD_PROJECT (default drs), both from the environment (the Makefile
# passes them); its image tag is the one `make deploy` recorded in "$PROD_ENV.tags".

# shellcheck source=compose.sh
. "$(dirname "${BASH_SOURCE[0]}")/compose.sh"

# Messages are prefixed with the running script's name: [deploy], [backup].
say() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0" .sh)" "$*"; }
die() { printf '[%s] error: %s\n' "$(basename "$0" .sh)" "$*" >&2; exit 1; }

prod_env_file() { compose_default_env_file prod; }
prod_project() { printf '%s\n' "${PROD_PROJECT:-drs}"; }

require_env_file() {
	[ -f "$(prod_env_file)" ] || die "$(prod_env_file) does not exist; run 'make prod-env' (then 'make prod-up') first"
}

# The tag the stack runs now, and the one before it (empty when nothing was deployed yet).
current_tag() { compose_prod_tag "$(prod_env_file)"; }
previous_tag() { compose_recorded_tag "$(prod_env_file)" DRS_PREVIOUS_TAG; }

# prod_compose ARGS...: docker compose on the prod stack at its current tag.
prod_compose() { "$(compose_root)/scripts/compose.sh" prod "$@"; }

# prod_compose_at TAG ARGS...: the same with the images of TAG (a deploy builds and starts them).
prod_compose_at() {
	local tag=$1
	shift
	"$(compose_root)/scripts/compose.sh" --tag "$tag" prod "$@"
}

# git_tag: the checkout's commit (-dirty-<time> when tracked files changed), a release's tag.
git_tag() {
	local tag root
	root=$(compose_root)
	tag=$(git -C "$root" rev-parse --short HEAD 2>/dev/null) || die "not a git checkout: set DEPLOY_TAG=..."
	if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
	fi
	printf '%s\n' "$tag"
}

require_running_stack() {
	[ -n "$(prod_compose ps -q nginx)" ] && [ -n "$(prod_compose ps -q web)" ] \
		|| die "the $(prod_project) stack is not running; start it with 'make prod-up' first"
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
