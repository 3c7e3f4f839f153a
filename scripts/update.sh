#!/usr/bin/env bash
# A patch day on the running prod stack (docs/upgrades.md), run by `make update`:
#   1. the base image is refreshed (UPDATE_BASE): pulled again where it came from a registry,
#      made again with debootstrap where it was made locally (scripts/build-base-image.sh);
#   2. every prod image is built under a new tag with a new DEBIAN_REFRESH, so that no apt layer
#      comes from the cache: each image's apt-get upgrade + install runs again and takes the
#      newest trixie, trixie-updates and trixie-security packages; Python packages are the ones
#      the lock files in this checkout name (`make outdated`, `make lock` change those);
#   3. what changed is printed: per image, Debian and Python packages whose version differs
#      between the running containers' images and the new ones (dpkg-query, importlib.metadata);
#   4. scripts/deploy.sh deploys the new tag with zero downtime (backup, migrations, rolling
#      replacement; Postgres and Redis keep running: restart them in a window, docs/upgrades.md).
# Tag: DEPLOY_TAG, else "<commit>-update-<UTC time>".
# Env: UPDATE_BASE auto|pull|rebuild|keep (default auto), BASE_IMAGE (default debian:trixie-slim),
# and the deploy's own (PROD_ENV, PROD_PROJECT, DEPLOY_BACKUP, DEPLOY_HEALTH_TIMEOUT).
set -Eeuo pipefail
# shellcheck source=prod-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/prod-lib.sh"

BASE="${BASE_IMAGE:-debian:trixie-slim}"
# The images whose packages are listed; the worker is built FROM web (the same packages).
REPORTED=(web nginx postgres redis)

base_id() { docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null | cut -c8-19; }
base_pulled() { [ "$(docker image inspect -f '{{len .RepoDigests}}' "$BASE" 2>/dev/null || echo 0)" != 0 ]; }

pull_base() { timeout 300 docker pull -q "$BASE" >/dev/null 2>&1; }

rebuild_base() {
	[ "$(id -u)" = 0 ] || { say "warning: cannot make $BASE again without root (debootstrap): kept"; return 0; }
	"$(compose_root)/scripts/build-base-image.sh" "$BASE"
}

# The apt layers run again whatever happens here (step 2): a stale base costs image size (the
# upgraded files are stored twice), never freshness.
refresh_base() {
	local mode=${UPDATE_BASE:-auto} before
	before=$(base_id)
	case "$mode" in
		keep) say "base image $BASE kept (UPDATE_BASE=keep)" ;;
		pull) pull_base || die "could not pull $BASE (UPDATE_BASE=pull); UPDATE_BASE=rebuild makes it locally" ;;
		rebuild) rebuild_base ;;
		auto)
			if base_pulled; then
				pull_base || say "warning: could not pull $BASE: kept; its packages are upgraded in every image anyway"
			else
				say "$BASE was made locally: making it again with debootstrap (UPDATE_BASE=keep skips this)"
				rebuild_base
			fi
			;;
		*) die "UPDATE_BASE must be auto, pull, rebuild or keep (got '$mode')" ;;
	esac
	say "base image $BASE: ${before:-none} -> $(base_id)"
}

# inventory IMAGE: "deb NAME VERSION" per Debian package, "py NAME VERSION" per package of the
# app's venv (images that have one), sorted by name. Run in a throwaway container, no network.
inventory() {
	docker run --rm --network none --entrypoint sh "$1" -c '
		dpkg-query -W -f "deb \${binary:Package} \${Version}\n"
		if [ -x /opt/venv/bin/python ]; then
			/opt/venv/bin/python -c "import importlib.metadata as m, re
for d in m.distributions():
    print(\"py\", re.sub(r\"[-_.]+\", \"-\", d.metadata[\"Name\"]).lower(), d.version)"
		fi' | awk '{print $1 ":" $2, $3}' | LC_ALL=C sort -u -k1,1
}

running_image() { # running_image SERVICE: the image id of its (first) running container
	docker inspect -f '{{.Image}}' "$(prod_compose ps -q "$1" | head -n1)"
}

# changes BEFORE AFTER: "KIND NAME OLD -> NEW" per package whose version differs (or that came
# or went: "-" for the missing side).
changes() {
	LC_ALL=C join -a 1 -a 2 -e - -o 0,1.2,2.2 "$1" "$2" \
		| awk '$2 != $3 { split($1, k, ":"); printf "%s %s %s -> %s\n", k[1], k[2], $2, $3 }'
}

# report DIR: per image, what changed between DIR/SERVICE.before and DIR/SERVICE.after.
report() {
	local dir=$1 svc deb py
	say "what changed (running images -> new images):"
	for svc in "${REPORTED[@]}"; do
		changes "$dir/$svc.before" "$dir/$svc.after" >"$dir/$svc.changes"
		deb=$(grep -c '^deb ' "$dir/$svc.changes" || true)
		py=$(grep -c '^py ' "$dir/$svc.changes" || true)
		printf '  %s: %s Debian packages, %s Python packages changed%s\n' "$svc" "$deb" "$py" \
			"$([ "$svc" != web ] || echo ' (the worker: the same)')"
		awk '{ printf "    %-3s %-34s %s %s %s\n", ($1 == "deb" ? "deb" : "py"), $2, $3, $4, $5 }' "$dir/$svc.changes"
	done
}

cmd_update() {
	local start=$SECONDS stamp tag dir svc
	require_running_stack
	stamp=$(date -u +%Y%m%d%H%M%S)
	tag=${DEPLOY_TAG:-$(git_tag)-update-$stamp}
	dir=$(mktemp -d)
	# shellcheck disable=SC2064 # the folder is known now
	trap "rm -rf '$dir'" EXIT
	say "updating to $tag (running: $(current_tag))"
	refresh_base
	for svc in "${REPORTED[@]}"; do inventory "$(running_image "$svc")" >"$dir/$svc.before"; done
	say "building every image ($tag) with DEBIAN_REFRESH=$stamp: every apt layer runs again"
	export DEBIAN_REFRESH=$stamp
	prod_compose_at "$tag" build --quiet
	for svc in "${REPORTED[@]}"; do inventory "drs/$svc:$tag" >"$dir/$svc.after"; done
	report "$dir"
	DEPLOY_TAG=$tag "$(compose_root)/scripts/deploy.sh" deploy
	say "updated to $tag in $((SECONDS - start))s"
}

# Sourced (tests/deploy), it only defines its functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	cmd_update "$@"
fi
