#!/usr/bin/env bash
# The one place that knows how to call `docker compose` on this project's stacks. Make, the
# scripts, the tests and the benchmark all go through it, so the files, env file, project name,
# image tag and build settings of a stack are written down once (docs/configuration.md).
#
#   scripts/compose.sh [OPTIONS] STACK [docker compose arguments...]
#
# STACK    files (after docker-compose.yml)          env file (--env-file)    project (--project)
#   dev    docker-compose.dev.yml                    compose/dev.env          $DEV_PROJECT (drs-dev)
#   test   compose/test.yml (make test-django)       compose/dev.env          drs-test
#   prod   docker-compose.prod.yml                   $PROD_ENV                $PROD_PROJECT (drs)
#                                                    (compose/prod.env)
#   bench  docker-compose.prod.yml compose/bench.yml $PROD_ENV                drs-bench
# OPTIONS
#   --project NAME    compose project name
#   --env-file FILE   env file; prod and bench also hand it to the containers (DRS_ENV_FILE)
#   --tag TAG         image tag to run or build (DRS_TAG)
#   -f FILE           one more compose file after the stack's own (repeatable)
# Image tag: --tag, else for prod and bench the DRS_TAG that `make deploy` recorded in
# "ENV_FILE.tags", else $DRS_TAG, else latest. Prod and bench builds also get the DEBIAN_REFRESH
# recorded there by `make update` (docs/upgrades.md), unless it is set. Builds get BUILD_CA_BUNDLE (a CA bundle handed
# to pip as a BuildKit secret; default: the host's bundle if there is one, else none).
#
# Why a wrapper rather than COMPOSE_FILE/COMPOSE_PROJECT_NAME in the env files: env files that an
# older `make prod-env` wrote have neither, the tag comes from a second file, and one command line
# works the same from Make, shell and Python (subprocess).
#
# Sourced (by scripts/prod-lib.sh), it only defines its compose_* functions.
# bash 3.2 and BSD tools (developer path: make dev, ps, logs, shell, psql).

compose_root() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); }

# compose_default_env_file STACK
compose_default_env_file() {
	case "$1" in
		dev | test) printf '%s\n' compose/dev.env ;;
		*) printf '%s\n' "${PROD_ENV:-compose/prod.env}" ;;
	esac
}

# compose_tags_file ENV_FILE: where `make deploy` records the tags a prod stack runs.
compose_tags_file() { printf '%s.tags\n' "$1"; }

# compose_recorded_tag ENV_FILE [KEY]: DRS_TAG (or KEY, e.g. DRS_PREVIOUS_TAG, DEBIAN_REFRESH)
# from the tags file; empty when there is none.
compose_recorded_tag() {
	local file
	file=$(compose_tags_file "$1")
	[ -r "$file" ] || return 0
	sed -n "s/^${2:-DRS_TAG}=//p" "$file" | tail -n 1
}

# compose_prod_tag ENV_FILE: the tag a prod stack runs (recorded, else $DRS_TAG, else latest).
compose_prod_tag() {
	local tag
	tag=$(compose_recorded_tag "$1")
	printf '%s\n' "${tag:-${DRS_TAG:-latest}}"
}

compose_ca_bundle() {
	local candidate
	if [ -n "${BUILD_CA_BUNDLE:-}" ] && [ -r "$BUILD_CA_BUNDLE" ]; then
		printf '%s\n' "$BUILD_CA_BUNDLE"
		return
	fi
	for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
		if [ -r "$candidate" ]; then
			printf '%s\n' "$candidate"
			return
		fi
	done
	printf '%s\n' /dev/null
}

compose_die() {
	printf 'compose.sh: error: %s\n' "$*" >&2
	exit 64
}

compose_main() {
	local root stack project='' env_file='' tag='' files
	local -a extra=()
	root=$(compose_root)
	while [ $# -gt 0 ]; do
		case "$1" in
			--project) [ $# -ge 2 ] || compose_die "--project needs a name"; project=$2; shift 2 ;;
			--env-file) [ $# -ge 2 ] || compose_die "--env-file needs a file"; env_file=$2; shift 2 ;;
			--tag) [ $# -ge 2 ] || compose_die "--tag needs a tag"; tag=$2; shift 2 ;;
			-f)
				[ $# -ge 2 ] || compose_die "-f needs a file"
				case "$2" in /*) extra+=(-f "$2") ;; *) extra+=(-f "$PWD/$2") ;; esac
				shift 2
				;;
			*) break ;;
		esac
	done
	stack=${1:-}
	[ $# -gt 0 ] && shift
	case "$stack" in
		dev) files="docker-compose.dev.yml" project=${project:-${DEV_PROJECT:-drs-dev}} ;;
		test) files="compose/test.yml" project=${project:-drs-test} ;;
		prod) files="docker-compose.prod.yml" project=${project:-${PROD_PROJECT:-drs}} ;;
		bench) files="docker-compose.prod.yml compose/bench.yml" project=${project:-drs-bench} ;;
		*) compose_die "usage: scripts/compose.sh [--project NAME] [--env-file FILE] [--tag TAG] [-f FILE] dev|test|prod|bench ARGS..." ;;
	esac
	env_file=${env_file:-$(compose_default_env_file "$stack")}
	case "$env_file" in /*) ;; *) env_file="$PWD/$env_file" ;; esac
	[ -f "$env_file" ] || compose_die "$env_file does not exist (the prod stack's: run 'make prod-env' first)"
	case "$stack" in
		prod | bench)
			export DRS_ENV_FILE="$env_file"
			export DRS_TAG="${tag:-$(compose_prod_tag "$env_file")}"
			# The Debian refresh the deployed images were built with (`make update` records it):
			# later builds reuse those apt layers, never older cached ones.
			export DEBIAN_REFRESH="${DEBIAN_REFRESH:-$(compose_recorded_tag "$env_file" DEBIAN_REFRESH)}"
			;;
		*) [ -z "$tag" ] || export DRS_TAG="$tag" ;;
	esac
	BUILD_CA_BUNDLE=$(compose_ca_bundle)
	# Engine 20.10 has no buildx: Compose builds with its own BuildKit client.
	export BUILD_CA_BUNDLE COMPOSE_BAKE=false
	local -a cmd=(docker compose --project-directory "$root" -p "$project" --env-file "$env_file"
		-f "$root/docker-compose.yml")
	local file
	for file in $files; do cmd+=(-f "$root/$file"); done
	exec "${cmd[@]}" ${extra[@]+"${extra[@]}"} "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -Eeuo pipefail
	compose_main "$@"
fi
