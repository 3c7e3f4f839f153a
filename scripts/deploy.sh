#!/usr/bin/env bash
# Zero-downtime deploys of the running prod stack (docs/deploy-single-vm.md), run by make:
#   scripts/deploy.sh deploy     build images tagged with the git commit, back up, migrate, then
#                                replace web one container at a time (the new one healthy and in
#                                nginx before the old one stops), the worker the same way (warm
#                                shutdown: running tasks finish), beat, and the backup service
#   scripts/deploy.sh rollback   the same rolling replacement back to the previous tag (no build,
#                                no migration: migrations must be expand/contract, see the docs)
# Tags: the git commit (`git rev-parse --short HEAD`, plus -dirty-<time> for uncommitted trees;
# DEPLOY_TAG overrides), recorded with the previous one in "$PROD_ENV.tags".
# Env: PROD_ENV, PROD_PROJECT (scripts/prod-lib.sh); DEPLOY_BACKUP=0 skips the backup before
# migrating; DEPLOY_HEALTH_TIMEOUT (default 180 s) per container.
set -Eeuo pipefail
script_name=deploy
# shellcheck source=prod-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/prod-lib.sh"

HEALTH_TIMEOUT="${DEPLOY_HEALTH_TIMEOUT:-180}"
IMAGES=(web worker nginx postgres redis)

git_tag() {
	local tag
	tag=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || die "not a git checkout: set DEPLOY_TAG=..."
	if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
	fi
	printf '%s\n' "$tag"
}

require_running_stack() {
	[ -n "$(prod_compose ps -q nginx)" ] && [ -n "$(prod_compose ps -q web)" ] \
		|| die "the $PROD_PROJECT stack is not running; start it with 'make prod-up' first"
}

require_images() { # require_images TAG
	local name
	for name in "${IMAGES[@]}"; do
		docker image inspect "drs/$name:$1" >/dev/null 2>&1 || die "image drs/$name:$1 is gone; cannot switch to $1"
	done
}

record_tags() { # record_tags CURRENT PREVIOUS
	printf '# written by scripts/deploy.sh (make deploy / make rollback)\nDRS_TAG=%s\nDRS_PREVIOUS_TAG=%s\n' "$1" "$2" \
		>"$TAGS_FILE.tmp"
	mv "$TAGS_FILE.tmp" "$TAGS_FILE"
}

container_ips() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1"; }

# The addresses nginx routes to since its last upstream-watch reload after SINCE, from the
# log line "[upstream-watch] web: OLD -> NEW; reloading nginx" (NEW; empty if none yet).
nginx_routed_ips() { # nginx_routed_ips NGINX_CONTAINER SINCE
	docker logs --since "$2" "$1" 2>&1 \
		| sed -n 's/.*\[upstream-watch\].*-> \(.*\); reloading nginx.*/\1/p' | tail -n1
}

# Until nginx's upstream-watch has reloaded nginx with CONTAINER's address: its log line
# "[upstream-watch] web: OLD -> NEW; reloading nginx" after SINCE names it on the right.
wait_nginx_routes_to() { # wait_nginx_routes_to CONTAINER SINCE
	local cid=$1 since=$2 nginx ip routed deadline=$((SECONDS + 60))
	nginx=$(prod_compose ps -q nginx | head -n1)
	while [ "$SECONDS" -lt "$deadline" ]; do
		routed=$(nginx_routed_ips "$nginx" "$since")
		for ip in $(container_ips "$cid"); do
			if [[ " $routed " == *" $ip "* ]]; then
				sleep 2 # the reload replaces nginx's workers gracefully; give the new ones a moment
				return 0
			fi
		done
		sleep 1
	done
	die "nginx did not pick up the new web container ${cid:0:12} within 60s (see: docker logs ${nginx:0:12})"
}

# Until nginx has reloaded without any of CONTAINER's addresses (logged after SINCE).
wait_nginx_dropped() { # wait_nginx_dropped CONTAINER SINCE
	local cid=$1 since=$2 nginx ip routed deadline=$((SECONDS + 60))
	nginx=$(prod_compose ps -q nginx | head -n1)
	while [ "$SECONDS" -lt "$deadline" ]; do
		routed=$(nginx_routed_ips "$nginx" "$since")
		if [ -n "$routed" ]; then
			local still=''
			for ip in $(container_ips "$cid"); do
				[[ " $routed " == *" $ip "* ]] && still=1
			done
			if [ -z "$still" ]; then
				sleep 2 # nginx's old workers finish the requests they have on it
				return 0
			fi
		fi
		sleep 1
	done
	die "nginx did not stop routing to ${cid:0:12} within 60s (see: docker logs ${nginx:0:12})"
}

# nginx (upstream-watch) leaves the container's addresses out, so it gets no new requests.
nginx_drain() { # nginx_drain drain|undrain CONTAINER [IPS]
	local nginx ip
	nginx=$(prod_compose ps -q nginx | head -n1)
	for ip in ${3:-$(container_ips "$2")}; do
		docker exec "$nginx" upstream-watch "$1" "$ip" 2>/dev/null
	done
}

stop_grace() { # the service's stop_grace_period in seconds
	case "$1" in
		worker) echo 130 ;;
		web) echo 45 ;;
		*) echo 30 ;;
	esac
}

# One container at a time: add a new one (TAG), wait until it is healthy (and, for web, routed
# by nginx), then stop the old one gracefully and remove it.
rolling_replace() { # rolling_replace SERVICE
	local svc=$1 old before after new since count
	local -a olds
	mapfile -t olds < <(prod_compose ps -q "$svc")
	[ "${#olds[@]}" -gt 0 ] || die "no running $svc container to replace"
	for old in "${olds[@]}"; do
		before=$(prod_compose ps -q "$svc" | sort)
		count=$(wc -l <<<"$before")
		since=$(date -u +%Y-%m-%dT%H:%M:%S)
		say "$svc: starting a new container ($tag_override) beside ${old:0:12}"
		prod_compose up -d --no-deps --no-recreate --scale "$svc=$((count + 1))" "$svc" 2>&1 | grep -v '^ *Container .* Running$' || true
		after=$(prod_compose ps -q "$svc" | sort)
		new=$(comm -13 <(echo "$before") <(echo "$after") | head -n1)
		[ -n "$new" ] || die "$svc: no new container appeared"
		unfinished=$new
		wait_healthy "$HEALTH_TIMEOUT" "$new"
		say "$svc: ${new:0:12} is healthy"
		if [ "$svc" = web ]; then
			wait_nginx_routes_to "$new" "$since"
			say "$svc: nginx routes to ${new:0:12}"
		fi
		unfinished=
		local ips=''
		if [ "$svc" = web ]; then
			ips=$(container_ips "$old")
			since=$(date -u +%Y-%m-%dT%H:%M:%S)
			nginx_drain drain "$old" "$ips"
			wait_nginx_dropped "$old" "$since"
			say "$svc: nginx no longer routes to ${old:0:12}"
		fi
		say "$svc: stopping ${old:0:12} (SIGTERM, running work finishes; up to $(stop_grace "$svc")s)"
		docker stop -t "$(stop_grace "$svc")" "$old" >/dev/null
		docker rm "$old" >/dev/null
		[ -z "$ips" ] || nginx_drain undrain "$old" "$ips"
	done
}

# Services with one container where a short gap is fine (beat: exactly one may run).
recreate() { # recreate SERVICE...
	say "recreating $* ($tag_override)"
	prod_compose up -d --no-deps "$@" 2>&1 | grep -v '^ *Container .* Running$' || true
	wait_service_healthy "$HEALTH_TIMEOUT" "$@"
}

# What an image runs: its layers and run config. Not its id: compose labels every image it
# builds with the project name, so ids differ between identical builds.
FINGERPRINT='{{json .RootFS.Layers}} {{json .Config.Env}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.User}}'
image_id() { docker image inspect -f "$FINGERPRINT" "$1" 2>/dev/null || true; }
running_image_id() {
	local image
	image=$(docker inspect -f '{{.Image}}' "$(prod_compose ps -q "$1" | head -n1)" 2>/dev/null) || return 0
	image_id "$image"
}

# nginx owns the published ports: replacing it drops connections for a moment, so only when
# its image really changed (nginx config or static files).
maybe_replace_nginx() {
	if [ "$(image_id "drs/nginx:$tag_override")" = "$(running_image_id nginx)" ]; then
		say "nginx: image unchanged, kept running"
	else
		say "nginx: image changed (config or static files): recreating it; connections are refused for ~1-2 s"
		recreate nginx
	fi
}

note_data_services() {
	local svc
	for svc in postgres redis; do
		if [ "$(image_id "drs/$svc:$tag_override")" != "$(running_image_id "$svc")" ]; then
			say "note: the $svc image changed; it is not restarted by a deploy (plan a short window: docs/deploy-single-vm.md)"
		fi
	done
}

switch_to() { # switch_to TAG: the rolling part shared by deploy and rollback
	tag_override=$1
	rolling_replace web
	rolling_replace worker
	recreate beat
	maybe_replace_nginx
	say "recreating backup ($tag_override)"
	prod_compose up -d --no-deps backup 2>&1 | grep -v '^ *Container .* Running$' || true
	note_data_services
}

cmd_deploy() {
	local from new start=$SECONDS
	require_running_stack
	from=$(current_tag)
	new=${DEPLOY_TAG:-$(git_tag)}
	[ "$new" != "$from" ] || die "tag $new is already deployed (commit first, or set DEPLOY_TAG=...)"
	say "deploying $new (running: $from)"
	say "building images $new"
	tag_override=$new prod_compose build --quiet
	if [ "${DEPLOY_BACKUP:-1}" = 1 ]; then
		say "backing up before migrating"
		prod_compose run --rm --no-deps -T backup backup >/dev/null
	fi
	say "applying migrations ($new)"
	tag_override=$new prod_compose run --rm --no-deps -T migrate migrate
	switch_to "$new"
	record_tags "$new" "$from"
	say "deployed $new in $((SECONDS - start))s (rollback: make rollback -> $from)"
}

cmd_rollback() {
	local from to start=$SECONDS
	require_running_stack
	from=$(current_tag)
	to=$(tags_get DRS_PREVIOUS_TAG)
	[ -n "$to" ] || die "no previous tag recorded in $TAGS_FILE (nothing was deployed with make deploy yet)"
	require_images "$to"
	say "rolling back from $from to $to (migrations are not reversed)"
	switch_to "$to"
	record_tags "$to" "$from"
	say "rolled back to $to in $((SECONDS - start))s"
}

# A failed deploy leaves the old containers serving: the new one that did not make it goes.
unfinished=''
remove_unfinished() {
	if [ -n "$unfinished" ]; then
		say "removing the new container ${unfinished:0:12} that did not become ready; the old one still serves"
		docker rm -f "$unfinished" >/dev/null 2>&1 || true
	fi
}

main() {
	trap remove_unfinished EXIT
	require_env_file
	case "${1:-}" in
		deploy) cmd_deploy ;;
		rollback) cmd_rollback ;;
		*) die "usage: $0 deploy | rollback" ;;
	esac
}

main "$@"
