#!/usr/bin/env bash
# Zero-downtime deploys of the running prod stack (docs/deploy-single-vm.md), run by make:
#   scripts/deploy.sh deploy     build images tagged with the git commit, back up, migrate, then
#                                replace web one container at a time (the new one healthy before
#                                nginx sees it, and in nginx before the old one stops), the worker
#                                the same way (warm shutdown: running tasks finish), beat, nginx
#                                when its image changed (new connections held, not refused), the
#                                backup service, and flower and the monitoring services when
#                                their profiles are on
#   scripts/deploy.sh rollback   the same rolling replacement back to the previous tag (no build,
#                                no migration: migrations must be expand/contract, see the docs)
# Tags: the git commit (`git rev-parse --short HEAD`, plus -dirty-<time> for uncommitted trees;
# DEPLOY_TAG overrides), recorded with the previous one in "$PROD_ENV.tags".
# Env: PROD_ENV, PROD_PROJECT (scripts/prod-lib.sh); DEPLOY_BACKUP=0 skips the backup before
# migrating; DEPLOY_HEALTH_TIMEOUT (default 180 s) per container. How long an old container may
# take to stop is its service's stop_grace_period in the compose files (read from the container).
set -Eeuo pipefail
# shellcheck source=prod-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/prod-lib.sh"

HEALTH_TIMEOUT="${DEPLOY_HEALTH_TIMEOUT:-180}"
IMAGES=(web worker nginx postgres redis)

require_images() { # require_images TAG
	local name
	for name in "${IMAGES[@]}"; do
		docker image inspect "drs/$name:$1" >/dev/null 2>&1 || die "image drs/$name:$1 is gone; cannot switch to $1"
	done
}

# record_tags CURRENT PREVIOUS: read by scripts/compose.sh. DEBIAN_REFRESH (set by make update,
# else the one recorded) stays recorded: later builds reuse the refreshed apt layers.
record_tags() {
	local file refresh
	file=$(compose_tags_file "$(prod_env_file)")
	refresh=${DEBIAN_REFRESH:-$(compose_recorded_tag "$(prod_env_file)" DEBIAN_REFRESH)}
	{
		printf '# written by scripts/deploy.sh (make deploy / make rollback / make update)\n'
		printf 'DRS_TAG=%s\nDRS_PREVIOUS_TAG=%s\n' "$1" "$2"
		[ -z "$refresh" ] || printf 'DEBIAN_REFRESH=%s\n' "$refresh"
	} >"$file.tmp"
	mv "$file.tmp" "$file"
}

container_ips() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1"; }

nginx_container() { prod_compose ps -q nginx | head -n1; }

# nginx's state, as its upstream-watch keeps it (nginx/upstream-watch.sh): the addresses nginx's
# workers route to, recorded once workers started with them run.
NGINX_ROUTED=/tmp/nginx/upstream-routed
# An nginx image from before upstream-watch recorded that has only the list it reloads with.
NGINX_UPSTREAM_CONF=/tmp/nginx/upstream.conf

nginx_records_routes() { docker exec "$1" test -e "$NGINX_ROUTED"; }

nginx_routed_ips() { # nginx_routed_ips NGINX_CONTAINER: "IP IP ..."
	if nginx_records_routes "$1"; then
		docker exec "$1" cat "$NGINX_ROUTED"
	else
		docker exec "$1" sed -n 's/^server \([0-9.]*\):[0-9]* .*/\1/p' "$NGINX_UPSTREAM_CONF" | tr '\n' ' '
	fi
}

# After a change in the list of an nginx that does not record its routes: its reload replaces
# its workers gracefully; give the new ones a moment.
nginx_settle() { nginx_records_routes "$1" || sleep 2; }

# is_routed CONTAINER ROUTED: whether any of CONTAINER's addresses is in the ROUTED list.
is_routed() {
	local ip
	for ip in $(container_ips "$1"); do
		[[ " $2 " != *" $ip "* ]] || return 0
	done
	return 1
}

# Until nginx routes to the new web CONTAINER (one of its addresses is in nginx's list).
wait_nginx_routes_to() { # wait_nginx_routes_to CONTAINER
	local cid=$1 nginx deadline=$((SECONDS + 60))
	nginx=$(nginx_container)
	until is_routed "$cid" "$(nginx_routed_ips "$nginx")"; do
		[ "$SECONDS" -lt "$deadline" ] \
			|| die "nginx did not pick up the new web container ${cid:0:12} within 60s (see: docker logs ${nginx:0:12})"
		sleep 1
	done
	nginx_settle "$nginx"
}

# Until nginx routes to none of CONTAINER's addresses (and to something else).
wait_nginx_dropped() { # wait_nginx_dropped CONTAINER
	local cid=$1 nginx routed deadline=$((SECONDS + 60))
	nginx=$(nginx_container)
	while :; do
		routed=$(nginx_routed_ips "$nginx")
		if [ -n "${routed// /}" ] && ! is_routed "$cid" "$routed"; then
			sleep 2 # nginx's old workers finish the requests they have on it
			return 0
		fi
		[ "$SECONDS" -lt "$deadline" ] || die "nginx did not stop routing to ${cid:0:12} within 60s (see: docker logs ${nginx:0:12})"
		sleep 1
	done
}

# nginx (upstream-watch) leaves the container's addresses out, so it gets no new requests.
nginx_drain() { # nginx_drain drain|undrain CONTAINER [IPS]
	local nginx ip
	nginx=$(nginx_container)
	for ip in ${3:-$(container_ips "$2")}; do
		docker exec "$nginx" upstream-watch "$1" "$ip" 2>/dev/null
	done
}

# stop_grace CONTAINER: seconds `docker stop` gives it before SIGKILL: its service's
# stop_grace_period (compose stores it as the container's StopTimeout; Docker's default is 10).
stop_grace() {
	local timeout
	timeout=$(docker inspect -f '{{with .Config.StopTimeout}}{{.}}{{end}}' "$1")
	printf '%s\n' "${timeout:-10}"
}

# stop_gracefully CONTAINER: its stop signal, then up to its stop_grace_period.
stop_gracefully() { docker stop -t "$(stop_grace "$1")" "$1" >/dev/null; }

# ---- a new web container is kept off nginx's networks until it is healthy -----------------------
# nginx finds web containers by name in Docker's DNS on the networks they share (upstream-watch),
# whether they are healthy or not: a new container that starts, accepts connections and then
# dies (a broken release) would fail the requests nginx sent it. So it is created without
# starting, taken off those networks, started, and joins them (with the same aliases) only once
# its health check passes. A release that never gets healthy is never seen by nginx.
hidden=() # "NETWORK ALIAS..." per network start_hidden left

networks_of() { docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{println $k}}{{end}}' "$1" | sed '/^$/d' | sort; }

start_hidden() { # start_hidden CONTAINER
	local cid=$1 nginx net aliases
	nginx=$(nginx_container)
	hidden=()
	for net in $(comm -12 <(networks_of "$nginx") <(networks_of "$cid")); do
		aliases=$(docker inspect -f "{{range (index .NetworkSettings.Networks \"$net\").Aliases}}{{println .}}{{end}}" "$cid" \
			| grep -vx -e '' -e "${cid:0:12}" | tr '\n' ' ')
		hidden+=("$net $aliases")
		docker network disconnect "$net" "$cid"
	done
	docker start "$cid" >/dev/null
}

reveal() { # reveal CONTAINER: joins the networks start_hidden left
	local entry alias
	local -a args
	for entry in "${hidden[@]}"; do
		args=()
		for alias in ${entry#* }; do args+=(--alias "$alias"); done
		docker network connect "${args[@]}" "${entry%% *}" "$1"
	done
	hidden=()
}

# Until a new container's health check passes. Fails at once when its process exits (Docker
# restarts it: a broken release), else after HEALTH_TIMEOUT.
wait_new_healthy() { # wait_new_healthy SERVICE CONTAINER
	local svc=$1 cid=$2 deadline=$((SECONDS + HEALTH_TIMEOUT)) status restarts health code
	while :; do
		read -r status restarts code health < <(docker inspect \
			-f '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{with .State.Health}}{{.Status}}{{end}}' "$cid") \
			|| die "the new $svc container ${cid:0:12} is gone"
		[ "$health" != healthy ] || return 0
		[ "$status" = running ] \
			|| die "the new $svc container ${cid:0:12} exited while starting (exit code $code); see: docker logs ${cid:0:12}"
		[ "$restarts" = 0 ] \
			|| die "the new $svc container ${cid:0:12} exited while starting (Docker restarted it $restarts times); see: docker logs ${cid:0:12}"
		[ "$SECONDS" -lt "$deadline" ] || die "the new $svc container ${cid:0:12} is not healthy after ${HEALTH_TIMEOUT}s; see: docker logs ${cid:0:12}"
		sleep 1
	done
}

# One container at a time: add a new one (TAG), wait until it is healthy (and, for web, routed
# by nginx), then stop the old one gracefully and remove it.
rolling_replace() { # rolling_replace TAG SERVICE
	local tag=$1 svc=$2 old before after new count
	local -a olds
	mapfile -t olds < <(prod_compose ps -q "$svc")
	[ "${#olds[@]}" -gt 0 ] || die "no running $svc container to replace"
	for old in "${olds[@]}"; do
		before=$(prod_compose ps -aq "$svc" | sort)
		count=$(prod_compose ps -q "$svc" | wc -l)
		say "$svc: starting a new container ($tag) beside ${old:0:12}"
		prod_compose_at "$tag" up --no-start --no-deps --no-recreate --scale "$svc=$((count + 1))" "$svc" 2>&1 \
			| grep -v '^ *Container .* \(Running\|Creating\|Created\)$' || true
		after=$(prod_compose ps -aq "$svc" | sort)
		new=$(comm -13 <(echo "$before") <(echo "$after") | head -n1)
		[ -n "$new" ] || die "$svc: no new container appeared"
		unfinished=$new
		if [ "$svc" = web ]; then
			start_hidden "$new"
		else
			docker start "$new" >/dev/null
		fi
		wait_new_healthy "$svc" "$new"
		say "$svc: ${new:0:12} is healthy"
		if [ "$svc" = web ]; then
			reveal "$new"
			wait_nginx_routes_to "$new"
			say "$svc: nginx routes to ${new:0:12}"
		fi
		unfinished=
		local ips=''
		if [ "$svc" = web ]; then
			ips=$(container_ips "$old")
			nginx_drain drain "$old" "$ips"
			wait_nginx_dropped "$old"
			say "$svc: nginx no longer routes to ${old:0:12}"
		fi
		say "$svc: stopping ${old:0:12} (SIGTERM, running work finishes; up to $(stop_grace "$old")s)"
		stop_gracefully "$old"
		docker rm "$old" >/dev/null
		[ -z "$ips" ] || nginx_drain undrain "$old" "$ips"
	done
}

# Services with one container where a short gap is fine (beat: exactly one may run).
recreate() { # recreate TAG SERVICE...
	local tag=$1
	shift
	say "recreating $* ($tag)"
	prod_compose_at "$tag" up -d --no-deps "$@" 2>&1 | grep -v '^ *Container .* Running$' || true
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

# ---- nginx: replaced without refusing a connection ----------------------------------------------
# Docker lets only one container publish a host port, so the new nginx can start only after the
# old one stopped; a client connecting in that gap would be refused. So, in order: a throwaway
# container of the new image (no published ports) must answer; the new container is created;
# new connections are held: the kernel drops their SYNs to nginx's published ports (raw table:
# before Docker's NAT and docker-proxy), and the clients' TCP stacks send them again after 1 s,
# 3 s, ...; the old nginx stops gracefully (SIGQUIT: requests in progress finish); the new one
# starts on the same ports; the hold ends as soon as it answers, and the resent SYNs reach it.
# Should the new one not answer, the old one is started again.
HOLD_RULES=() # "TOOL PORT [ADDRESS]" per rule in place, removed by release_connections
HOLD_COMMENT="drs-deploy-hold-$$"

published_ports() { # published_ports CONTAINER: one "HOST_IP HOST_PORT" line per binding
	docker inspect -f '{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostIp}} {{.HostPort}}{{println}}{{end}}{{end}}' "$1"
}

hold_rule() { # hold_rule -I|-D TOOL PORT [ADDRESS]: SYNs to this host's PORT (at ADDRESS) dropped
	local op=$1 tool=$2 port=$3 address=${4:-}
	local -a dest=(-m addrtype --dst-type LOCAL)
	[ -z "$address" ] || dest=(-d "$address")
	"$tool" -w -t raw "$op" PREROUTING -p tcp --syn "${dest[@]}" --dport "$port" \
		-m comment --comment "$HOLD_COMMENT" -j DROP
}

hold_connections() { # hold_connections CONTAINER: fails when no IPv4 rule could be added
	local ip port tool address
	while read -r ip port; do
		[ -n "$port" ] || continue
		case "$ip" in
			*:*) tool=ip6tables address=$ip; [ "$ip" != "::" ] || address='' ;;
			*) tool=iptables address=$ip; [ "$ip" != 0.0.0.0 ] || address='' ;;
		esac
		if hold_rule -I "$tool" "$port" "$address"; then
			HOLD_RULES+=("$tool $port $address")
		elif [ "$tool" = iptables ]; then
			return 1
		else
			say "warning: cannot hold IPv6 connections to port $port: they are refused for a moment"
		fi
	done < <(published_ports "$1")
	[ "${#HOLD_RULES[@]}" -gt 0 ]
}

release_connections() {
	local rule
	for rule in "${HOLD_RULES[@]}"; do
		# shellcheck disable=SC2086 # "TOOL PORT [ADDRESS]": words on purpose
		hold_rule -D $rule || say "warning: could not remove the firewall rule '$rule' ($HOLD_COMMENT); remove it by hand"
	done
	HOLD_RULES=()
}

# An empty HTTP_PORT/HTTPS_PORT in the env file lets Docker pick a free port (the tests): the
# new nginx keeps the ports the running one got, so clients find it where they were.
keep_chosen_ports() { # keep_chosen_ports CONTAINER
	local pair var port
	for pair in HTTP_PORT:8080 HTTPS_PORT:8443; do
		var=${pair%%:*}
		grep -qx "$var=" "$(prod_env_file)" || continue
		port=$(docker inspect -f "{{with index .NetworkSettings.Ports \"${pair#*:}/tcp\"}}{{(index . 0).HostPort}}{{end}}" "$1")
		[ -z "$port" ] || export "$var=$port"
	done
}

nginx_answers() { docker exec "$1" docker-healthcheck >/dev/null 2>&1; }

wait_nginx_answers() { # wait_nginx_answers CONTAINER TIMEOUT: polled every 0.2 s
	local deadline=$((SECONDS + $2))
	until nginx_answers "$1"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.2
	done
}

# A container of the new nginx image, beside the running one (no published ports), must answer.
check_new_nginx() { # check_new_nginx TAG
	local tag=$1 cid
	cid=$(prod_compose_at "$tag" run -d --rm --no-deps nginx) || die "nginx: the new image ($tag) does not start; nginx was not replaced"
	unfinished=$cid
	wait_nginx_answers "$cid" "$HEALTH_TIMEOUT" \
		|| die "nginx: the new image ($tag) does not answer within ${HEALTH_TIMEOUT}s; nginx was not replaced"
	docker rm -f "$cid" >/dev/null
	unfinished=
	say "nginx: the new image answers (checked in ${cid:0:12}, removed)"
}

replace_nginx() { # replace_nginx TAG
	local tag=$1 old new before after held
	old=$(nginx_container)
	check_new_nginx "$tag"
	keep_chosen_ports "$old"
	# Created now, started once the old one has stopped (the ports are the old one's until then).
	before=$(prod_compose ps -aq nginx | sort)
	prod_compose_at "$tag" up --no-start --no-deps --no-recreate --scale nginx=2 nginx 2>&1 \
		| grep -v '^ *Container .* \(Running\|Creating\|Created\)$' || true
	after=$(prod_compose ps -aq nginx | sort)
	new=$(comm -13 <(echo "$before") <(echo "$after") | head -n1)
	[ -n "$new" ] || die "nginx: no new container was created"
	unfinished=$new
	held=$(date +%s%N)
	local outcome="new connections were held for"
	if hold_connections "$old"; then
		say "nginx: holding new connections (SYNs dropped, clients resend them) while it is replaced"
		sleep 0.5 # connections accepted just before the hold reach the old nginx
	else
		release_connections
		say "warning: cannot hold new connections (needs root and iptables): they are refused until the new nginx is up"
		outcome="new connections were refused for"
	fi
	say "nginx: stopping ${old:0:12} (SIGQUIT: requests in progress finish; up to $(stop_grace "$old")s), starting ${new:0:12}"
	stop_gracefully "$old"
	if ! docker start "$new" >/dev/null || ! wait_nginx_answers "$new" 30; then
		docker logs --tail 5 "$new" 2>&1 | sed 's/^/  log: /' || true
		docker rm -f "$new" >/dev/null 2>&1 || true
		unfinished=
		docker start "$old" >/dev/null && wait_nginx_answers "$old" 30 || true
		release_connections
		die "nginx: the new container ${new:0:12} did not answer; the old one ${old:0:12} was started again"
	fi
	release_connections
	unfinished=
	say "nginx: ${new:0:12} answers; $outcome $((($(date +%s%N) - held) / 1000000)) ms"
	docker rm "$old" >/dev/null
	wait_healthy "$HEALTH_TIMEOUT" "$new"
}

# nginx is replaced only when its image really changed (nginx config or static files).
maybe_replace_nginx() { # maybe_replace_nginx TAG
	if [ "$(image_id "drs/nginx:$1")" = "$(running_image_id nginx)" ]; then
		say "nginx: image unchanged, kept running"
	else
		say "nginx: image changed (config or static files): replacing it"
		replace_nginx "$1"
	fi
}

note_data_services() { # note_data_services TAG
	local svc
	for svc in postgres redis; do
		if [ "$(image_id "drs/$svc:$1")" != "$(running_image_id "$svc")" ]; then
			say "note: the $svc image changed; it is not restarted by a deploy (plan a short window: docs/upgrades.md)"
		fi
	done
}

switch_to() { # switch_to TAG: the rolling part shared by deploy and rollback
	local tag=$1 optional
	rolling_replace "$tag" web
	rolling_replace "$tag" worker
	# Beat, and the opt-in profiles' services when they are on (COMPOSE_PROFILES): Flower, and
	# monitoring's Prometheus, Alertmanager and exporters. One container each, where a gap of
	# seconds is fine (Prometheus and Alertmanager keep their data on their volumes): recreated
	# at once and waited for together, not one after another.
	optional=$(prod_compose config --services | grep -xE 'flower|prometheus|alertmanager|[a-z]+-exporter' || true)
	# shellcheck disable=SC2086 # one service name per word
	recreate "$tag" beat $optional
	maybe_replace_nginx "$tag"
	say "recreating backup ($tag)"
	prod_compose_at "$tag" up -d --no-deps backup 2>&1 | grep -v '^ *Container .* Running$' || true
	note_data_services "$tag"
}

cmd_deploy() {
	local from new start=$SECONDS
	require_running_stack
	from=$(current_tag)
	new=${DEPLOY_TAG:-$(git_tag)}
	[ "$new" != "$from" ] || die "tag $new is already deployed (commit first, or set DEPLOY_TAG=...)"
	say "deploying $new (running: $from)"
	say "building images $new"
	prod_compose_at "$new" build --quiet
	if [ "${DEPLOY_BACKUP:-1}" = 1 ]; then
		say "backing up before migrating"
		prod_compose run --rm --no-deps -T backup backup >/dev/null
	fi
	say "applying migrations ($new)"
	prod_compose_at "$new" run --rm --no-deps -T migrate migrate
	switch_to "$new"
	record_tags "$new" "$from"
	say "deployed $new in $((SECONDS - start))s (rollback: make rollback -> $from)"
}

cmd_rollback() {
	local from to start=$SECONDS
	require_running_stack
	from=$(current_tag)
	to=$(previous_tag)
	[ -n "$to" ] || die "no previous tag recorded in $(compose_tags_file "$(prod_env_file)") (nothing was deployed with make deploy yet)"
	require_images "$to"
	say "rolling back from $from to $to (migrations are not reversed)"
	switch_to "$to"
	record_tags "$to" "$from"
	say "rolled back to $to in $((SECONDS - start))s"
}

# A failed deploy leaves the old containers serving: the new one that did not make it goes
# (its last health check and log lines are shown first), and no connection stays held.
unfinished=''
on_exit() {
	release_connections
	[ -n "$unfinished" ] || return 0
	say "the new container ${unfinished:0:12} did not become ready; its last health check and log lines:"
	docker inspect -f '{{with .State.Health}}{{range .Log}}{{printf "  health: exit %d %q" .ExitCode .Output}}{{println}}{{end}}{{end}}' \
		"$unfinished" 2>/dev/null | sed '/^$/d' | tail -n 1 || true
	docker logs --tail 12 "$unfinished" 2>&1 | sed 's/^/  log: /' || true
	say "removing ${unfinished:0:12}; the old containers still serve ($(current_tag))"
	docker rm -f "$unfinished" >/dev/null 2>&1 || true
}

main() {
	trap on_exit EXIT
	require_env_file
	case "${1:-}" in
		deploy) cmd_deploy ;;
		rollback) cmd_rollback ;;
		*) die "usage: $0 deploy | rollback" ;;
	esac
}

main "$@"
