#!/usr/bin/env bash
# Backups of the prod stack (docs/backups.md), run by make:
#   scripts/backup.sh backup          take a verified backup now       (make backup)
#   scripts/backup.sh list            list backups and their state     (make backups)
#   scripts/backup.sh offsite-check   read every off-site copy back    (make offsite-check)
#   scripts/backup.sh offsite-fetch NAME   bring NAME back from off-site (make offsite-fetch)
#   scripts/backup.sh restore NAME    restore NAME: checks it first, stops web/worker/beat,
#                                     restores in one transaction, starts them again (make restore)
# Env: PROD_ENV, PROD_PROJECT (see scripts/prod-lib.sh).
set -Eeuo pipefail
# shellcheck source=prod-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/prod-lib.sh"

WRITERS=(web worker beat)

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

main() {
	require_env_file
	case "${1:-}" in
		backup) cmd_backup ;;
		list) cmd_list ;;
		offsite-check) cmd_offsite_check ;;
		offsite-fetch) shift; cmd_offsite_fetch "$@" ;;
		restore) shift; cmd_restore "$@" ;;
		*) die "usage: $0 backup | list | offsite-check | offsite-fetch NAME | restore NAME" ;;
	esac
}

main "$@"
