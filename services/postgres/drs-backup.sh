#!/usr/bin/env bash
# Backups of the app database (and the media folder beside it), installed under several names:
#   backup              take one backup now, verify it, print its name (exit 1 when anything failed)
#   list-backups        list the backups, newest first, with their state (exit 1 when the last run failed)
#   restore NAME        restore backup NAME into the database (one transaction) and the media folder
#                       (restore --check NAME: only check that NAME is intact and restorable)
#   rotate-backups      keep BACKUP_KEEP_DAILY daily and BACKUP_KEEP_WEEKLY weekly backups, remove the rest
#   backup-scheduler    loop: a backup every BACKUP_INTERVAL, then rotate (the compose `backup` service)
#   backup-healthcheck  healthy unless the last backup run failed or the next backup is overdue by
#                       more than BACKUP_HEALTH_GRACE (a hung scheduler is not healthy)
#
# A backup is a folder BACKUP_DIR/backup-YYYYmmddTHHMMSSZ holding db.dump (pg_dump -Fc), globals.sql
# (pg_dumpall --globals-only), media.tar.gz, rows.txt (row counts taken in the dump's own snapshot)
# and SHA256SUMS. It is written under a temporary name and renamed only after it was verified by
# restoring it into a scratch database and comparing row counts; a failed one is renamed
# failed-backup-... and never counts as a backup. What a killed run leaves (a .tmp-backup-* folder, a
# scratch database) is removed by the next run. Connection: the libpq variables (PGHOST, PGUSER,
# PGPASSWORD, PGDATABASE), defaulting to POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB.
set -Eeuo pipefail
umask 077

BACKUP_DIR="${BACKUP_DIR:-/backups}"
BACKUP_MEDIA_DIR="${BACKUP_MEDIA_DIR:-/srv/media}"
BACKUP_INTERVAL="${BACKUP_INTERVAL:-1d}"
BACKUP_HEALTH_GRACE="${BACKUP_HEALTH_GRACE:-2h}"
BACKUP_KEEP_DAILY="${BACKUP_KEEP_DAILY:-7}"
BACKUP_KEEP_WEEKLY="${BACKUP_KEEP_WEEKLY:-4}"
STATUS_FILE="$BACKUP_DIR/.last-run"
LOCK_FILE="$BACKUP_DIR/.lock"
SCHEDULER_FILE="$BACKUP_DIR/.scheduler-started"
export PGUSER="${PGUSER:-${POSTGRES_USER:-postgres}}"
export PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-$PGUSER}}"
if [ -z "${PGPASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
	export PGPASSWORD="$POSTGRES_PASSWORD"
fi
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"

log() { printf '%s [backup] %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*" >&2; }
die() { printf '%s [backup] error: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*" >&2; exit 1; }
# The backup's own sessions run without the server's timeouts (row counts of a large database, a
# verification restore): a backup of any size must not be cut off by them.
NO_TIMEOUTS='-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0'
psql_q() { PGOPTIONS="-c client_min_messages=warning $NO_TIMEOUTS" psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# Row count of every table, one "schema.table count" line each, sorted.
ROW_COUNTS_SQL="SELECT format('%I.%I', n.nspname, c.relname) || ' ' ||
  (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  ORDER BY 1;"

require_dir() {
	[ -d "$BACKUP_DIR" ] && [ -w "$BACKUP_DIR" ] \
		|| die "$BACKUP_DIR is missing or not writable by uid $(id -u); mount the backups volume there"
}

# Serialise runs (the scheduler, `make backup`, a restore) on one lock file.
take_lock() {
	exec {lock_fd}>"$LOCK_FILE"
	flock -w "${BACKUP_LOCK_TIMEOUT:-3600}" "$lock_fd" || die "another backup or restore holds $LOCK_FILE"
}

# The last run's state: ok, failed, or none (no run yet).
last_state() {
	local state=none
	[ ! -s "$STATUS_FILE" ] || read -r state _ <"$STATUS_FILE"
	printf '%s\n' "$state"
}

write_status() { # write_status ok|failed NAME DETAIL
	printf '%s %s %s %s\n' "$1" "$2" "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$3" >"$STATUS_FILE.tmp"
	mv -f "$STATUS_FILE.tmp" "$STATUS_FILE"
}

# pg_dump in a snapshot held open by a psql coprocess, so that the row counts recorded beside the
# dump are the dump's own, exactly. That session sits idle in its transaction for as long as the
# dump takes, so the server's timeouts (idle_in_transaction_session_timeout, statement_timeout) are
# off for it alone: a dump of any size must not be cut off by them (pg_dump does the same).
dump_database() { # dump_database DIR   (returns non-zero on any failure)
	local dir=$1 snapshot='' line='' status=0 to_psql from_psql psql_pid
	coproc SNAP { psql_q; }
	# Copies: bash unsets SNAP as soon as the coprocess exits (e.g. it could not connect).
	to_psql=${SNAP[1]:-}
	from_psql=${SNAP[0]:-}
	psql_pid=${SNAP_PID-}
	if [ -z "$to_psql" ] || [ -z "$from_psql" ]; then
		log "psql exited at once: cannot connect to $PGDATABASE"
		return 1
	fi
	printf '%s\n' 'SET idle_in_transaction_session_timeout = 0;' 'SET statement_timeout = 0;' \
		'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;' 'SELECT pg_export_snapshot();' >&"$to_psql" \
		&& read -r -t 60 snapshot <&"$from_psql" && [ -n "$snapshot" ] \
		|| { log "could not open a snapshot on $PGDATABASE"; status=1; }
	if [ "$status" = 0 ]; then
		pg_dump --format=custom --snapshot="$snapshot" --file="$dir/db.dump" "$PGDATABASE" || status=1
	fi
	if [ "$status" = 0 ]; then
		printf '%s\n' "$ROW_COUNTS_SQL" "SELECT '__end__';" >&"$to_psql"
		while read -r -t 600 line <&"$from_psql"; do
			[ "$line" = __end__ ] && break
			printf '%s\n' "$line"
		done >"$dir/rows.txt"
		[ "$line" = __end__ ] || { log "could not count rows in the dump's snapshot"; status=1; }
		printf 'COMMIT;\n' >&"$to_psql" || status=1
	fi
	exec {to_psql}>&-
	wait "$psql_pid" || status=1
	return "$status"
}

archive_media() { # archive_media DIR
	if [ -d "$BACKUP_MEDIA_DIR" ]; then
		# Every entry below the folder, not the folder itself (restoring never touches its owner or
		# mode), without the temporary files exports are written to before their rename. The list is
		# taken first and archived without recursion, so the app may keep writing: a file that appears
		# meanwhile waits for the next backup, one deleted meanwhile (a purged export) is skipped with
		# a warning. A listed file whose content changes as it is read still fails the backup.
		find "$BACKUP_MEDIA_DIR" -mindepth 1 ! -name '.*.tmp' -printf '%P\n' \
			| tar -C "$BACKUP_MEDIA_DIR" -czf "$1/media.tar.gz" --no-recursion --ignore-failed-read \
				--verbatim-files-from -T - || return 1
	else
		log "no media folder at $BACKUP_MEDIA_DIR; skipping the media archive"
	fi
}

# Restores DIR's dump into a scratch database and compares its row counts with rows.txt.
verify_backup() { # verify_backup DIR   (returns non-zero when the backup does not verify)
	local dir=$1 scratch="${PGDATABASE}_verify_$$" got='' ok=1
	(cd "$dir" && sha256sum --quiet -c SHA256SUMS) || { log "verification: checksum mismatch in $dir"; return 1; }
	psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$scratch\";" -c "CREATE DATABASE \"$scratch\";" || return 1
	if ! pg_restore --exit-on-error --single-transaction --no-owner --no-acl -d "$scratch" "$dir/db.dump"; then
		log "verification: the dump does not restore"
		ok=0
	elif ! got=$(psql_q -d "$scratch" -c "$ROW_COUNTS_SQL"); then
		ok=0
	elif [ "$got" != "$(cat "$dir/rows.txt")" ]; then
		log "verification: row counts differ after restoring"
		diff "$dir/rows.txt" <(printf '%s\n' "$got") >&2 || true
		ok=0
	fi
	psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$scratch\";" || log "could not drop the scratch database $scratch"
	[ "$ok" = 1 ] || return 1
	log "verified: restored into a scratch database; $(wc -l <"$dir/rows.txt") tables, $(total_rows "$dir") rows match"
}

total_rows() { awk '{n += $2} END {print n + 0}' "$1/rows.txt"; }

# What a killed run left behind (SIGKILL, OOM, a lost container): its temporary folder and its
# verification database. Called with the lock held, so no other run is writing them.
remove_leftovers() {
	local dir db
	while IFS= read -r dir; do
		[ -n "$dir" ] || continue
		rm -rf -- "${BACKUP_DIR:?}/$dir"
		log "removed $dir, left by an interrupted run"
	done < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name '.tmp-backup-*' -printf '%f\n')
	while IFS= read -r db; do
		[ -n "$db" ] || continue
		psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$db\";" \
			&& log "dropped the scratch database $db, left by an interrupted run"
	done < <(printf '%s\n' "SELECT datname FROM pg_database WHERE starts_with(datname, :'prefix')
		AND substr(datname, length(:'prefix') + 1) ~ '^[0-9]+$';" | psql_q -d postgres -v prefix="${PGDATABASE}_verify_")
}

write_backup() { # write_backup DIR   (returns non-zero on any failure)
	local dir=$1
	dump_database "$dir" || return 1
	# Without the password hashes: a backup holds no credential (and pg_authid is for superusers).
	pg_dumpall --globals-only --no-role-passwords --file="$dir/globals.sql" || return 1
	archive_media "$dir" || return 1
	(cd "$dir" && sha256sum -- * >SHA256SUMS) || return 1
}

cmd_backup() {
	trap '' PIPE # a dead psql coprocess is an error to report, not a signal that kills us
	require_dir
	take_lock
	local name tmp start
	name="backup-$(date -u +%Y%m%dT%H%M%SZ)"
	tmp="$BACKUP_DIR/.tmp-$name"
	start=$(date +%s)
	remove_leftovers
	[ ! -e "$BACKUP_DIR/$name" ] || { sleep 1; name="backup-$(date -u +%Y%m%dT%H%M%SZ)"; tmp="$BACKUP_DIR/.tmp-$name"; }
	rm -rf "$tmp"
	mkdir "$tmp"
	log "backing up database $PGDATABASE on ${PGHOST:-the local socket} into $name"
	if ! write_backup "$tmp"; then
		rm -rf "$tmp"
		write_status failed "$name" "the dump failed"
		die "BACKUP FAILED: $name could not be written (see above); the earlier backups are untouched"
	fi
	if [ "${BACKUP_VERIFY:-1}" = 1 ] && ! verify_backup "$tmp"; then
		mv "$tmp" "$BACKUP_DIR/failed-$name"
		write_status failed "$name" "verification failed"
		die "BACKUP FAILED: $name did not pass verification; kept as failed-$name for inspection"
	fi
	mv "$tmp" "$BACKUP_DIR/$name"
	write_status ok "$name" "$(du -sh "$BACKUP_DIR/$name" | cut -f1)"
	log "backup $name done in $(($(date +%s) - start))s ($(du -sh "$BACKUP_DIR/$name" | cut -f1), $(total_rows "$BACKUP_DIR/$name") rows)"
	printf '%s\n' "$name"
}

# Good backups, newest first.
backup_names() { find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name 'backup-*' -printf '%f\n' | sort -r; }

cmd_list() {
	require_dir
	local name state
	printf '%-26s %8s %10s  %s\n' NAME SIZE ROWS STATE
	while IFS= read -r name; do
		[ -n "$name" ] || continue
		case "$name" in
			failed-*) state="FAILED verification" ;;
			*) state=verified ;;
		esac
		printf '%-26s %8s %10s  %s\n' "$name" "$(du -sh "$BACKUP_DIR/$name" | cut -f1)" \
			"$(total_rows "$BACKUP_DIR/$name" 2>/dev/null || echo '?')" "$state"
	done < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d \( -name 'backup-*' -o -name 'failed-backup-*' \) \
		-printf '%f\n' | awk '{print substr($0, length($0) - 15) " " $0}' | sort -r | cut -d' ' -f2)
	if [ -s "$STATUS_FILE" ]; then
		read -r state name _ <"$STATUS_FILE"
		if [ "$state" != ok ]; then
			printf 'LAST BACKUP RUN FAILED: %s\n' "$(cat "$STATUS_FILE")"
			return 1
		fi
		printf 'last run: %s\n' "$(cat "$STATUS_FILE")"
	else
		printf 'last run: none yet\n'
	fi
}

# Refuses anything that is not a complete, intact, readable backup (nothing is touched yet).
check_restorable() { # check_restorable DIR
	local dir=$1
	[ -d "$dir" ] || die "no backup named ${dir##*/} in $BACKUP_DIR (list them with list-backups / make backups)"
	[ -s "$dir/SHA256SUMS" ] && [ -s "$dir/db.dump" ] || die "${dir##*/} is incomplete (no db.dump or SHA256SUMS); refusing to restore"
	(cd "$dir" && sha256sum --quiet -c SHA256SUMS) >&2 \
		|| die "${dir##*/} is corrupt or truncated (checksum mismatch); refusing to restore, the database is untouched"
	pg_restore --list "$dir/db.dump" >/dev/null \
		|| die "${dir##*/}/db.dump is not a readable pg_dump archive; refusing to restore, the database is untouched"
}

restore_media() { # restore_media DIR
	local dir=$1
	[ -s "$dir/media.tar.gz" ] || { log "no media archive in ${dir##*/}; media folder left as is"; return 0; }
	[ -d "$BACKUP_MEDIA_DIR" ] && [ -w "$BACKUP_MEDIA_DIR" ] \
		|| die "media folder $BACKUP_MEDIA_DIR is missing or not writable by uid $(id -u); the database was restored, the media not"
	find "$BACKUP_MEDIA_DIR" -mindepth 1 -delete
	# --same-permissions: the archived modes, not this script's umask 077 (nginx must read them).
	tar -C "$BACKUP_MEDIA_DIR" -xzf "$dir/media.tar.gz" --no-same-owner --same-permissions --no-overwrite-dir
	log "media folder restored from ${dir##*/}"
}

cmd_restore() {
	local check_only='' name dir start
	if [ "${1:-}" = --check ]; then
		check_only=1
		shift
	fi
	name=${1:-}
	[ -n "$name" ] || die "usage: restore [--check] NAME   (NAME from list-backups)"
	name=${name%/}
	name=${name##*/}
	dir="$BACKUP_DIR/$name"
	require_dir
	take_lock
	start=$(date +%s)
	check_restorable "$dir"
	if [ -n "$check_only" ]; then
		log "$name is intact and restorable"
		return 0
	fi
	log "restoring $name into database $PGDATABASE in one transaction"
	pg_restore --exit-on-error --single-transaction --clean --if-exists --no-owner --no-acl \
		-d "$PGDATABASE" "$dir/db.dump" \
		|| die "restore of $name failed and was rolled back; the database is as it was"
	if [ "${RESTORE_MEDIA:-1}" = 1 ]; then
		restore_media "$dir"
	fi
	log "restored $name in $(($(date +%s) - start))s"
}

# Keeps the newest backup of each of the last BACKUP_KEEP_DAILY days that have backups, and of
# each of the last BACKUP_KEEP_WEEKLY ISO weeks; removes every other backup (and failed ones
# older than the oldest kept backup).
cmd_rotate() {
	require_dir
	local dry=${1:-} name ts day week daily=0 weekly=0 last_day='' last_week='' oldest_kept=''
	local -a keep=() remove=()
	[[ "$BACKUP_KEEP_DAILY" =~ ^[0-9]+$ && "$BACKUP_KEEP_WEEKLY" =~ ^[0-9]+$ ]] \
		|| die "BACKUP_KEEP_DAILY and BACKUP_KEEP_WEEKLY must be whole numbers"
	while IFS= read -r name; do
		[ -n "$name" ] || continue
		ts=${name#backup-}
		if ! [[ "$ts" =~ ^([0-9]{8})T[0-9]{6}Z$ ]]; then
			log "rotate: ignoring $name (not backup-YYYYmmddTHHMMSSZ)"
			continue
		fi
		day=${BASH_REMATCH[1]}
		week=$(date -u -d "$day" +%G-W%V)
		local kept=''
		if [ "$day" != "$last_day" ] && [ "$daily" -lt "$BACKUP_KEEP_DAILY" ]; then
			daily=$((daily + 1)); kept=daily
		fi
		if [ "$week" != "$last_week" ] && [ "$weekly" -lt "$BACKUP_KEEP_WEEKLY" ]; then
			weekly=$((weekly + 1)); kept="${kept:+$kept+}weekly"
		fi
		last_day=$day
		last_week=$week
		if [ -n "$kept" ]; then
			keep+=("$name ($kept)")
			oldest_kept=$ts
		else
			remove+=("$name")
		fi
	done < <(backup_names)
	while IFS= read -r name; do
		[ -n "$name" ] || continue
		[ -n "$oldest_kept" ] && [[ "${name#failed-backup-}" < "$oldest_kept" ]] && remove+=("$name")
	done < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name 'failed-backup-*' -printf '%f\n')
	for name in "${keep[@]}"; do log "rotate: keeping $name"; done
	for name in "${remove[@]}"; do
		if [ "$dry" = --dry-run ]; then
			log "rotate: would remove $name"
		else
			rm -rf -- "${BACKUP_DIR:?}/$name"
			log "rotate: removed $name"
		fi
	done
	log "rotate: kept ${#keep[@]}, removed ${#remove[@]} (keep daily $BACKUP_KEEP_DAILY, weekly $BACKUP_KEEP_WEEKLY)"
}

interval_seconds() { # interval_seconds VALUE [NAME]: 90, 90s, 30m, 6h, 1d in seconds
	[[ "$1" =~ ^([0-9]+)([smhd]?)$ ]] || die "${2:-BACKUP_INTERVAL}=$1: use a number with s, m, h or d (e.g. 1d, 6h)"
	local n=${BASH_REMATCH[1]}
	case "${BASH_REMATCH[2]}" in
		d) echo $((n * 86400)) ;; h) echo $((n * 3600)) ;; m) echo $((n * 60)) ;; *) echo "$n" ;;
	esac
}

# Seconds until the next backup is due: interval after the newest good backup (0 if none).
seconds_until_due() {
	local newest ts due
	# After a failed run (also one before a restart) the next backup is due now.
	[ "$(last_state)" != failed ] || { echo 0; return; }
	newest=$(backup_names | head -n1)
	[ -n "$newest" ] || { echo 0; return; }
	ts=${newest#backup-}
	due=$(($(date -u -d "${ts:0:4}-${ts:4:2}-${ts:6:2} ${ts:9:2}:${ts:11:2}:${ts:13:2}" +%s) + $1))
	echo $((due > $(date +%s) ? due - $(date +%s) : 0))
}

cmd_scheduler() {
	local every wait
	every=$(interval_seconds "$BACKUP_INTERVAL")
	interval_seconds "$BACKUP_HEALTH_GRACE" BACKUP_HEALTH_GRACE >/dev/null
	require_dir
	date +%s >"$SCHEDULER_FILE"
	log "scheduler: a backup every $BACKUP_INTERVAL, keeping $BACKUP_KEEP_DAILY daily and $BACKUP_KEEP_WEEKLY weekly"
	trap 'log "scheduler: stopping"; exit 0' TERM INT
	while :; do
		wait=$(seconds_until_due "$every")
		if [ "$wait" -gt 0 ]; then
			log "scheduler: next backup in ${wait}s"
			sleep "$wait" &
			wait $! || true
			continue
		fi
		if (cmd_backup >/dev/null); then
			(cmd_rotate) || log "ROTATION FAILED (see above)"
		else
			log "SCHEDULED BACKUP FAILED; retrying in ${BACKUP_RETRY:-600}s"
			sleep "${BACKUP_RETRY:-600}" &
			wait $! || true
		fi
	done
}

# Start time (epoch seconds) of the newest good backup, else of the scheduler; empty when neither.
last_success_or_start() {
	local newest ts
	newest=$(backup_names | head -n1)
	if [ -n "$newest" ]; then
		ts=${newest#backup-}
		date -u -d "${ts:0:4}-${ts:4:2}-${ts:6:2} ${ts:9:2}:${ts:11:2}:${ts:13:2}" +%s
	elif [ -s "$SCHEDULER_FILE" ]; then
		cat "$SCHEDULER_FILE"
	fi
}

# Unhealthy when the last run failed, or when the next backup (due BACKUP_INTERVAL after the newest
# one) is overdue by more than BACKUP_HEALTH_GRACE: a scheduler that hangs (a dump stuck on a lock,
# a stopped loop) stops reporting healthy instead of staying green forever.
cmd_healthcheck() {
	local since every grace overdue
	every=$(interval_seconds "$BACKUP_INTERVAL")
	grace=$(interval_seconds "$BACKUP_HEALTH_GRACE" BACKUP_HEALTH_GRACE)
	[ "$(last_state)" != failed ] || { cat "$STATUS_FILE"; exit 1; }
	since=$(last_success_or_start)
	[ -n "$since" ] || return 0
	overdue=$(($(date +%s) - since - every))
	if [ "$overdue" -gt "$grace" ]; then
		printf 'no backup succeeded for %ss: the one due after %s is %ss late (BACKUP_INTERVAL=%s, BACKUP_HEALTH_GRACE=%s)\n' \
			"$(($(date +%s) - since))" "$(backup_names | head -n1 | grep . || echo 'the scheduler start')" \
			"$overdue" "$BACKUP_INTERVAL" "$BACKUP_HEALTH_GRACE"
		exit 1
	fi
}

main() {
	case "$(basename "$0")" in
		backup) cmd_backup "$@" ;;
		list-backups) cmd_list "$@" ;;
		restore) cmd_restore "$@" ;;
		rotate-backups) cmd_rotate "$@" ;;
		backup-scheduler) cmd_scheduler "$@" ;;
		backup-healthcheck) cmd_healthcheck "$@" ;;
		*) die "run me as backup, list-backups, restore, rotate-backups, backup-scheduler or backup-healthcheck" ;;
	esac
}

main "$@"
