#!/usr/bin/env bash
# Backups of the prod stack (docs/backups.md), run by make:
#   scripts/backup.sh backup          take a verified backup now       (make backup)
#   scripts/backup.sh list            list backups and their state     (make backups)
#   scripts/backup.sh offsite-check   read every off-site copy back    (make offsite-check)
#   scripts/backup.sh offsite-fetch NAME   bring NAME back from off-site (make offsite-fetch)
#   scripts/backup.sh restore NAME    restore NAME: checks it first, stops web/worker/beat,
#                                     restores in one transaction, starts them again (make restore)
#   scripts/backup.sh restore-time TIME|latest   point-in-time restore from the off-site repository
#                                     alone: also on a machine with nothing yet (make restore TIME=)
#   scripts/backup.sh drill           the same into a throwaway project, timed, then removed (make drill)
# Env: PROD_ENV, PROD_PROJECT (see scripts/prod-lib.sh); for the drill DRILL_PROJECT, DRILL_KEEP.
set -Eeuo pipefail
# shellcheck source=prod-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/prod-lib.sh"

WRITERS=(web worker beat)
# Every opt-in profile, so that stopping the stack stops them too (as the Makefile's ALL_PROFILES).
ALL_PROFILES=(--profile proxy --profile flower)

# One-off container of the backup service (the scheduler's container may be busy or stopped).
backup_run() { prod_compose run --rm --no-deps -T backup "$@"; }

cmd_backup() {
	say "taking a backup of the $(prod_project) stack (database + media), then verifying it"
	local start=$SECONDS name
	name=$(backup_run backup)
	say "done in $((SECONDS - start))s: $name   (restore with: make restore FILE=$name)"
}

cmd_list() { backup_run list-backups; }

cmd_offsite_check() {
	say "reading back every off-site copy in full (restic check --read-data)"
	backup_run offsite-check
	say "every off-site copy is intact"
}

restart_writers() {
	say "starting ${WRITERS[*]} again"
	prod_compose start "${WRITERS[@]}"
	wait_service_healthy 180 "${WRITERS[@]}"
}

cmd_offsite_fetch() {
	local name=${1:-}
	[ -n "$name" ] || die "name the backup: make offsite-fetch FILE=backup-YYYYmmddTHHMMSSZ (make backups names the last copy)"
	backup_run offsite-fetch "$name" >/dev/null
	say "$name is back in the backups volume; restore it with: make restore FILE=$name"
}

cmd_restore() {
	local name=${1:-} start=$SECONDS
	[ -n "$name" ] || die "name the backup: make restore FILE=backup-YYYYmmddTHHMMSSZ (list them with make backups)"
	say "checking $name before touching anything"
	backup_run restore --check "$name" || die "$name cannot be restored (see above); nothing was stopped or changed"
	say "stopping the writers (${WRITERS[*]}); nginx answers 502 meanwhile"
	prod_compose stop "${WRITERS[@]}"
	trap restart_writers EXIT
	backup_run restore "$name"
	restart_writers
	trap - EXIT
	say "restored $name in $((SECONDS - start))s"
}

# ---- point-in-time restore (docs/backups.md, "Point-in-time recovery") -------------------------

# Extra arguments of the one-off container that fetches from the repository (the drill hands the
# repository to it alone: its stack never writes there).
FETCH_ARGS=()

# postgres_sql SQL: as the superuser over the socket in the running postgres container.
postgres_sql() { prod_compose exec -T postgres psql -X -q -A -t -U postgres -d postgres -c "$1"; }

# Until the restored server has replayed to its target and promoted itself (or gave up).
wait_promoted() {
	local deadline=$((SECONDS + ${PITR_TIMEOUT:-1800})) state
	while :; do
		state=$(postgres_sql 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
		[ "$state" != f ] || return 0
		if prod_compose logs --no-log-prefix postgres 2>/dev/null | grep -q 'recovery ended before configured recovery target was reached'; then
			die "the WAL in the repository ends before the time asked for; nothing newer can be restored (the database volume holds the unfinished recovery: run again with an earlier TIME or TIME=latest)"
		fi
		[ "$SECONDS" -lt "$deadline" ] || die "postgres still recovering after ${PITR_TIMEOUT:-1800}s; see: make logs STACK=prod"
		sleep 2
	done
}

# The project's volume NAME as Docker names it (compose: PROJECT_NAME).
volume_of() { printf '%s_%s\n' "$(prod_project)" "$1"; }

# restore_time TIME|latest: the whole stack back to TIME from the off-site repository alone:
# base backup, WAL replayed to TIME, media folder; on a live stack or on a machine with nothing.
restore_time() {
	local target=$1 start=$SECONDS fetched point
	say "creating what is missing (images are built if absent, volumes, networks)"
	prod_compose up --no-start
	say "fetching the base backup and WAL for ${target} from the off-site repository"
	fetched=$(prod_compose run --rm --no-deps -T ${FETCH_ARGS[@]+"${FETCH_ARGS[@]}"} backup pitr-fetch "$target") \
		|| die "could not fetch from the off-site repository (see above); nothing was stopped or changed"
	say "fetched: base backup ${fetched%% *}, recovering to ${fetched#* }"
	say "stopping the stack (nginx too): the site is down until the restore ends"
	prod_compose "${ALL_PROFILES[@]}" stop
	prod_compose run --rm --no-deps -T -v "$(volume_of backups):/backups:ro" --entrypoint pitr-prepare postgres
	say "starting postgres: it replays the WAL, then promotes itself"
	prod_compose up -d --no-deps postgres
	wait_promoted
	point=$(prod_compose exec -T postgres pitr-finish | tail -n1)
	prod_compose run --rm --no-deps -T ${FETCH_ARGS[@]+"${FETCH_ARGS[@]}"} backup pitr-media
	say "starting the stack"
	prod_compose up -d --wait --wait-timeout 300
	RESTORED_POINT=$point
	say "restored to ${fetched#* } in $((SECONDS - start))s; last transaction replayed: $point"
}

cmd_restore_time() {
	local target=${1:-}
	[ -n "$target" ] || die "name the time: make restore TIME='2026-12-01 21:30:00 UTC' (or TIME=latest)"
	restore_time "$target"
	say "taking a backup now: the restored database's own base backup for the WAL that follows"
	backup_run backup >/dev/null || die "the restore worked, but the backup after it failed (see above): run make backup"
	say "done"
}

# The posts table's row count and checksum (order-independent), for the drill's report.
posts_figure() {
	# shellcheck disable=SC2016 # expanded by sh in the container
	prod_compose exec -T postgres sh -c 'psql -X -q -A -t -U postgres -d "$POSTGRES_DB" -c "$0"' \
		"SELECT count(*) || ' rows, max id ' || coalesce(max(id), 0) || ', md5 ' || coalesce(md5(string_agg(md5(p::text), '' ORDER BY id)), '-') FROM posts_post p" 2>/dev/null \
		|| echo "(no posts table)"
}

# The restore drill: the newest state in the off-site repository restored into a throwaway
# project (its own volumes, free loopback ports, copies nothing back), timed from nothing to
# healthy, reported, then removed. The live stack is not touched.
cmd_drill() {
	local live_env live_repo project env_file start rto
	live_env=$(prod_env_file)
	live_repo=$(sed -n 's/^OFFSITE_REPOSITORY=//p' "$live_env" | tail -n1)
	[ -n "$live_repo" ] || die "OFFSITE_REPOSITORY is empty in $live_env: the drill restores from the off-site repository"
	project=${DRILL_PROJECT:-$(prod_project)-drill}
	[ "$project" != "$(prod_project)" ] || die "DRILL_PROJECT must not be the live project $(prod_project)"
	env_file="$(compose_root)/.cache/drill-$project.env"
	mkdir -p "$(dirname "$env_file")"
	# The live settings, but loopback ports chosen by Docker and no off-site repository for the
	# drill's own backups (it must never write into the live repository).
	(umask 077 && sed -e 's/^HTTP_PORT=.*/HTTP_PORT=/' -e 's/^HTTPS_PORT=.*/HTTPS_PORT=/' \
		-e 's/^HTTP_BIND=.*/HTTP_BIND=127.0.0.1/' -e 's/^OFFSITE_REPOSITORY=.*/OFFSITE_REPOSITORY=/' \
		-e 's/^COMPOSE_PROFILES=.*/COMPOSE_PROFILES=/' "$live_env" >"$env_file")
	export PROD_ENV="$env_file" PROD_PROJECT="$project"
	FETCH_ARGS=(-e "OFFSITE_REPOSITORY=$live_repo")
	[ -n "${DRILL_KEEP:-}" ] || trap drill_teardown EXIT
	say "drill: restoring the latest off-site state into project $project (the live stack is not touched)"
	start=$SECONDS
	restore_time latest
	rto=$((SECONDS - start))
	say "drill: RTO ${rto}s from nothing to a healthy stack"
	say "drill: recovery point (last transaction replayed) $RESTORED_POINT"
	say "drill: posts $(posts_figure)"
	say "drill: media files $(prod_compose exec -T web sh -c 'find /srv/media -type f | wc -l' | tr -d ' \r')"
	prod_compose exec -T web python manage.py readyz >/dev/null || die "drill: the restored stack is not ready (readyz)"
	say "drill: readyz ok"
	if [ -n "${DRILL_KEEP:-}" ]; then
		say "drill: kept: scripts/compose.sh --project $project --env-file $env_file prod ...; remove it with: scripts/compose.sh --project $project --env-file $env_file prod down -v"
	fi
}

drill_teardown() {
	say "drill: removing project $PROD_PROJECT and its volumes"
	prod_compose "${ALL_PROFILES[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
	rm -f "$PROD_ENV"
}

main() {
	require_env_file
	case "${1:-}" in
		backup) cmd_backup ;;
		list) cmd_list ;;
		offsite-check) cmd_offsite_check ;;
		offsite-fetch) shift; cmd_offsite_fetch "$@" ;;
		restore) shift; cmd_restore "$@" ;;
		restore-time) shift; cmd_restore_time "$@" ;;
		drill) cmd_drill ;;
		*) die "usage: $0 backup | list | offsite-check | offsite-fetch NAME | restore NAME | restore-time TIME|latest | drill" ;;
	esac
}

main "$@"
