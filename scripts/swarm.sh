#!/usr/bin/env bash
# The prod stack on Docker Swarm (docs/swarm.md), from the same compose files as `make prod-up`:
# docker-compose.yml + docker-compose.prod.yml + compose/swarm.yml, rendered through
# scripts/compose.sh into a stack file (scripts/swarm-render.py fixes what stack deploy rejects).
#   scripts/swarm.sh init              make this Docker a swarm manager (if it is not) and label this
#                                      node for the data services and media (drs.data, drs.media)
#   scripts/swarm.sh render            write the stack file ($PROD_ENV.stack.json) and stop
#   scripts/swarm.sh deploy            secrets, images (pushed to $REGISTRY if set, unless
#                                      SWARM_PUSH=0), Postgres and Redis, the migrations job, then
#                                      every service (rolling)
#   scripts/swarm.sh push              tag and push the stack's images to $REGISTRY_PUSH or $REGISTRY
#   scripts/swarm.sh registry          run drs/registry (services/registry) as a service on this
#                                      node, on port $REGISTRY_PORT (5000) of every node (the
#                                      routing mesh), or of this node only (REGISTRY_PUBLISH=host)
#   scripts/swarm.sh backup            take a verified backup now, in the backup service's container
#   scripts/swarm.sh backups           list the backups and their state
#   scripts/swarm.sh restore NAME      restore backup NAME: checks it first, scales web, worker and
#                                      beat to 0, restores in one transaction, scales them back
#   scripts/swarm.sh rollback          each app service back to its previous spec (one step only)
#   scripts/swarm.sh ps                the stack's tasks
#   scripts/swarm.sh logs [SERVICE]    follow a service's logs (default web)
#   scripts/swarm.sh rm                remove the stack (volumes and secrets are kept)
# Settings: PROD_ENV (compose/prod.env), SWARM_STACK (drs), DRS_TAG (the images' tag; default the
# git commit), REGISTRY (host:port/prefix the nodes pull from; empty: local images, one node),
# REGISTRY_PUSH (where this machine pushes, default REGISTRY), SWARM_PUSH (0: deploy pushes
# nothing), REGISTRY_PORT (5000), REGISTRY_PUBLISH (ingress or host), SWARM_MEDIA_DIR (media on
# shared storage: docs/swarm.md), SWARM_ADVERTISE_ADDR and SWARM_LISTEN_ADDR (init),
# SWARM_TIMEOUT (seconds a step may take, 600).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROD_ENV="${PROD_ENV:-compose/prod.env}"
STACK="${SWARM_STACK:-drs}"
TIMEOUT="${SWARM_TIMEOUT:-600}"
# Docker secrets, from the env file's values: the first three are required; the others are made
# only when set (scripts/swarm-render.py hands each to the services that use it as NAME_FILE).
SECRETS="django_secret_key:DJANGO_SECRET_KEY postgres_password:POSTGRES_PASSWORD redis_password:REDIS_PASSWORD"
OPTIONAL_SECRETS="postgres_backup_password:POSTGRES_BACKUP_PASSWORD flower_password:FLOWER_PASSWORD
offsite_password:OFFSITE_PASSWORD offsite_s3_secret_access_key:OFFSITE_S3_SECRET_ACCESS_KEY
offsite_ssh_key:OFFSITE_SSH_KEY sentry_dsn:SENTRY_DSN email_url:EMAIL_URL
alertmanager_webhook_url:ALERTMANAGER_WEBHOOK_URL"
APP_SERVICES="web worker beat nginx backup"
# What a restore stops (as scripts/backup.sh's WRITERS on one VM).
WRITERS="web worker beat"

log() { printf '[swarm] %s\n' "$*" >&2; }
die() { printf 'swarm.sh: error: %s\n' "$*" >&2; exit 1; }

swarm_tag() {
	if [ -n "${DRS_TAG:-}" ] && [ "$DRS_TAG" != latest ]; then
		printf '%s\n' "$DRS_TAG"
	else
		git rev-parse --short HEAD 2>/dev/null || die "not a git checkout: set DRS_TAG=..."
	fi
}

swarm_active() { [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ]; }

cmd_init() {
	if swarm_active; then
		log "this Docker is already in a swarm"
	else
		log "docker swarm init"
		docker swarm init ${SWARM_ADVERTISE_ADDR:+--advertise-addr "$SWARM_ADVERTISE_ADDR"} \
			${SWARM_LISTEN_ADDR:+--listen-addr "$SWARM_LISTEN_ADDR"} >/dev/null
	fi
	docker node update --label-add drs.data=true --label-add drs.media=true "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null
	log "node $(docker info --format '{{.Name}}') labelled drs.data=true drs.media=true"
}

# env_value NAME: NAME's value in the env file (the last one wins, as in compose).
env_value() { sed -n "s/^$1=//p" "$PROD_ENV" | tail -n 1; }

# Docker secrets are immutable: each value gets a name with its content's hash, so a new value
# is a new secret and the services move to it in a rolling update (docs/swarm.md, "Rotation").
# secrets_each CREATE: export DRS_SECRET_<KEY>=<name> for each secret with a value (a required one
# without is an error); CREATE=1 also creates the secrets that do not exist yet.
secrets_each() {
	local create=$1 pair key var value hash name
	for pair in $SECRETS $OPTIONAL_SECRETS; do
		key=${pair%%:*} var=${pair#*:}
		value=$(env_value "$var")
		if [ -z "$value" ]; then
			case " $SECRETS " in *" $pair "*) die "$var is empty in $PROD_ENV" ;; esac
			continue
		fi
		hash=$(printf '%s' "$value" | sha256sum | cut -c1-12)
		name="${STACK}_${key}_${hash}"
		if [ "$create" = 1 ] && ! docker secret inspect "$name" >/dev/null 2>&1; then
			log "secret $name (new)"
			printf '%s' "$value" | docker secret create --label "drs.stack=$STACK" "$name" - >/dev/null
		fi
		export "DRS_SECRET_$(printf '%s' "$key" | tr '[:lower:]' '[:upper:]')=$name"
	done
}

secrets_ensure() { secrets_each 1; }

# The secrets' names are content hashes: computed here without creating any (render only).
secrets_names() { secrets_each 0; }

cmd_render() {
	[ -f "$PROD_ENV" ] || die "$PROD_ENV does not exist (run 'make prod-env' first)"
	[ -n "${DRS_SECRET_DJANGO_SECRET_KEY:-}" ] || secrets_names
	scripts/compose.sh --project "$STACK" --env-file "$PROD_ENV" --tag "$(swarm_tag)" prod \
		-f compose/swarm.yml config --format json \
		| DRS_SECRET_VALUES_FILE="$PROD_ENV" python3 scripts/swarm-render.py \
			"$PROD_ENV.stack.json" "$PROD_ENV.migrate.json"
	log "stack file: $PROD_ENV.stack.json (migrations job: $PROD_ENV.migrate.json)"
}

# The images the stack file names (REGISTRY/drs/NAME:TAG), without the registry: drs/NAME:TAG.
stack_images() {
	python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["services"].values(): print(s["image"])' "$PROD_ENV.stack.json" \
		| sed "s|^${REGISTRY%/}/||" | sort -u
}

# Tag and push every image the stack file names, from this machine's Docker to REGISTRY_PUSH
# (default REGISTRY: the address the nodes pull from; another when this machine reaches the same
# registry otherwise, e.g. through an SSH tunnel on 127.0.0.1).
images_push() {
	local target=${REGISTRY_PUSH:-${REGISTRY:-}} image
	[ -n "${REGISTRY:-}" ] || die "REGISTRY is not set: the address of the registry the nodes pull from (docs/swarm.md)"
	for image in $(stack_images); do
		docker image inspect "$image" >/dev/null 2>&1 \
			|| die "no image $image here: build it first (DRS_TAG=$(swarm_tag) make build)"
		log "push ${target%/}/$image"
		docker tag "$image" "${target%/}/$image"
		docker push -q "${target%/}/$image" >/dev/null
	done
}

# A registry for the nodes when the user has none: drs/registry (Debian's docker-registry) as a
# swarm service on this node. Published through the routing mesh (REGISTRY_PUBLISH=ingress, the
# default) on REGISTRY_PORT (5000) of every node, so each node reaches it on 127.0.0.1, where
# Docker allows plain HTTP (REGISTRY=127.0.0.1:5000); the port is open on every address of every
# node: firewall it. REGISTRY_PUBLISH=host: on this node's addresses only (no mesh, which needs
# the kernel's IPVS); the nodes then pull from THIS_NODE:PORT, listed under insecure-registries
# in their daemon.json (docs/swarm.md). The image is built here unless this Docker has it.
cmd_registry() {
	local port=${REGISTRY_PORT:-5000} mode=${REGISTRY_PUBLISH:-ingress} image name="${STACK}-registry"
	image="drs/registry:$(swarm_tag)"
	case "$mode" in ingress | host) ;; *) die "REGISTRY_PUBLISH=$mode: ingress or host" ;; esac
	swarm_active || die "this Docker is not in a swarm: run 'make swarm-init' first"
	if docker service inspect "$name" >/dev/null 2>&1; then
		log "$name runs already, on port $(docker service inspect --format '{{(index .Endpoint.Ports 0).PublishedPort}}' "$name")"
		return 0
	fi
	if ! docker image inspect "$image" >/dev/null 2>&1; then
		log "build $image (services/registry)"
		docker build -q --build-arg "BASE_IMAGE=${BASE_IMAGE:-debian:trixie-slim}" -t "$image" services/registry >/dev/null
	fi
	log "service $name on this node, port $port ($mode)"
	docker service create --detach --name "$name" --read-only --restart-condition any \
		--constraint "node.id == $(docker info --format '{{.Swarm.NodeID}}')" \
		--publish "published=$port,target=5000,mode=$mode" \
		--mount "type=volume,source=$name,target=/var/lib/docker-registry" "$image" >/dev/null
	wait_tasks "$name"
	if [ "$mode" = ingress ]; then
		log "registry ready: REGISTRY=127.0.0.1:$port (in the env file or on the command line)"
	else
		log "registry ready on this node's port $port: REGISTRY=THIS_NODE:$port, listed under insecure-registries on every node"
	fi
}

# wait_replicas SERVICE...: until each service of the stack runs all its tasks (healthy: a task
# with a health check counts as running only once it passed) and no update is under way.
wait_replicas() {
	local deadline service line state
	deadline=$(($(date +%s) + TIMEOUT))
	for service in "$@"; do
		while :; do
			line=$(docker service ls --filter "name=${STACK}_$service" --format '{{.Name}} {{.Replicas}}' \
				| awk -v n="${STACK}_$service" '$1 == n {print $2}')
			state=$(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' \
				"${STACK}_$service" 2>/dev/null || true)
			case "$state" in
				updating | rollback_started) ;;
				rollback_completed | rollback_paused | paused)
					die "${STACK}_$service: update $state ($(docker service inspect --format '{{.UpdateStatus.Message}}' "${STACK}_$service"))" ;;
				*) [ -n "$line" ] && [ "${line%%/*}" = "${line#*/}" ] && break ;;
			esac
			[ "$(date +%s)" -lt "$deadline" ] || die "${STACK}_$service not ready within ${TIMEOUT}s (replicas ${line:-none}, update ${state:-none})"
			sleep 2
		done
		log "${STACK}_$service: $line"
	done
}

cmd_deploy() {
	local tag
	tag=$(swarm_tag)
	swarm_active || die "this Docker is not in a swarm: run 'make swarm-init' first"
	secrets_ensure
	cmd_render
	if [ -n "${REGISTRY:-}" ] && [ "${SWARM_PUSH:-1}" != 0 ]; then images_push; fi
	log "deploy $STACK (tag $tag): Postgres and Redis first"
	python3 scripts/swarm-render.py data "$PROD_ENV.stack.json" "$PROD_ENV.data.json"
	docker stack deploy --with-registry-auth -c "$PROD_ENV.data.json" "$STACK" >/dev/null
	wait_replicas postgres redis
	log "migrations job"
	SWARM_TIMEOUT="$TIMEOUT" python3 scripts/swarm-render.py job "$PROD_ENV.migrate.json" "$STACK" "$tag"
	log "every service (rolling update: web starts new tasks before stopping old ones)"
	docker stack deploy --with-registry-auth -c "$PROD_ENV.stack.json" "$STACK" >/dev/null
	# shellcheck disable=SC2086 # a list of names
	wait_replicas postgres redis $APP_SERVICES
	log "deployed $STACK at tag $tag"
}

# The backup service's container on this node: backups run there, as `make backup` runs them in
# the backup service on one VM; it runs where the data and media labels are (make swarm-init).
backup_container() {
	local cid node
	cid=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_backup" | head -n 1)
	if [ -z "$cid" ]; then
		node=$(docker service ps --filter desired-state=running --format '{{.Node}}' "${STACK}_backup" 2>/dev/null | head -n 1)
		die "no ${STACK}_backup task runs on this node: run this on ${node:-the node labelled drs.data and drs.media}"
	fi
	printf '%s\n' "$cid"
}

backup_exec() { docker exec -i "$(backup_container)" "$@"; }

cmd_backup() {
	local name
	log "taking a backup of the $STACK stack (database + media), then verifying it"
	name=$(backup_exec backup)
	log "done: $name   (restore with: make swarm-restore FILE=$name)"
	printf '%s\n' "$name"
}

# The number of tasks each writer runs now (restored after the restore).
writers_replicas() {
	local service
	for service in $WRITERS; do
		printf '%s=%s ' "${STACK}_$service" "$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_$service")"
	done
}

# writers_scale SERVICE=N...: scale and wait until every task runs (or is gone).
writers_scale() {
	local pair
	docker service scale --detach "$@" >/dev/null
	for pair in "$@"; do
		wait_tasks "${pair%%=*}" "${pair#*=}"
	done
}

# wait_tasks SERVICE [N]: until SERVICE (its full name) runs N tasks (default: all it asks for),
# and, for N=0, no container of it is left on this node.
wait_tasks() {
	local deadline line want
	deadline=$(($(date +%s) + TIMEOUT))
	while :; do
		line=$(docker service ls --filter "name=$1" --format '{{.Name}} {{.Replicas}}' | awk -v n="$1" '$1 == n {print $2}')
		want=${2:-${line#*/}}
		if [ -n "$line" ] && [ "$line" = "$want/$want" ] \
			&& { [ "$want" != 0 ] || [ -z "$(docker ps -q --filter "label=com.docker.swarm.service.name=$1")" ]; }; then
			return 0
		fi
		[ "$(date +%s)" -lt "$deadline" ] || die "$1 not at ${2:-all its} tasks within ${TIMEOUT}s (replicas ${line:-none})"
		sleep 1
	done
}

cmd_restore() {
	local name=${1:-} start=$SECONDS before stopped="" pair
	[ -n "$name" ] || die "name the backup: make swarm-restore FILE=backup-YYYYmmddTHHMMSSZ (list them with make swarm-backups)"
	log "checking $name before touching anything"
	backup_exec restore --check "$name" || die "$name cannot be restored (see above); nothing was stopped or changed"
	before=$(writers_replicas)
	for pair in $before; do stopped="$stopped ${pair%%=*}=0"; done
	log "scaling the writers ($WRITERS) to 0; nginx answers 502 meanwhile"
	# shellcheck disable=SC2064,SC2086 # expanded now: the replicas before; SERVICE=N pairs
	trap "log 'scaling the writers back'; writers_scale $before" EXIT
	# shellcheck disable=SC2086
	writers_scale $stopped
	backup_exec restore "$name"
	# shellcheck disable=SC2086
	writers_scale $before
	trap - EXIT
	log "restored $name in $((SECONDS - start))s"
}

# Swarm keeps one previous spec: right after a restore it is the writers' 0-task spec.
rollback_check() {
	local service replicas
	for service in $APP_SERVICES; do
		replicas=$(docker service inspect --format '{{if .PreviousSpec}}{{.PreviousSpec.Mode.Replicated.Replicas}}{{end}}' "${STACK}_$service")
		[ "$replicas" != 0 ] || die "${STACK}_$service: its previous spec runs 0 tasks (a restore scaled it down and up): deploy the tag you want with make swarm-deploy instead"
	done
}

cmd_rollback() {
	local service
	rollback_check
	for service in $APP_SERVICES; do
		log "rollback ${STACK}_$service"
		docker service rollback --detach "${STACK}_$service" >/dev/null
	done
	# shellcheck disable=SC2086 # a list of names
	wait_replicas $APP_SERVICES
}

main() {
	case "${1:-}" in
		init) cmd_init ;;
		render) cmd_render ;;
		deploy) cmd_deploy ;;
		rollback) cmd_rollback ;;
		push) cmd_render && images_push ;;
		registry) cmd_registry ;;
		backup) cmd_backup ;;
		backups) backup_exec list-backups ;;
		restore) shift; cmd_restore "$@" ;;
		ps) docker stack ps --format 'table {{.Name}}\t{{.Image}}\t{{.Node}}\t{{.CurrentState}}\t{{.Error}}' "$STACK" ;;
		logs) exec docker service logs -f --tail 100 "${STACK}_${2:-web}" ;;
		rm) docker stack rm "$STACK" ;;
		*) die "usage: scripts/swarm.sh init|render|deploy|rollback|push|registry|backup|backups|restore NAME|ps|logs [SERVICE]|rm" ;;
	esac
}

main "$@"
