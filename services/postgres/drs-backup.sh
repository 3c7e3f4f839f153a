#!/usr/bin/env bash
# Backups of the app database (and the media folder beside it), installed under several names:
#   backup              take one backup now, verify it, print its name (exit 1 when anything failed)
#   list-backups        list the backups, newest first, with their state (exit 1 when the last run failed)
#   restore NAME        restore backup NAME into the database (one transaction) and the media folder
#                       (restore --check NAME: only check that NAME is intact and restorable)
#   rotate-backups      keep BACKUP_KEEP_DAILY daily and BACKUP_KEEP_WEEKLY weekly backups, remove the rest
#   backup-scheduler    loop: a backup every BACKUP_INTERVAL, then rotate (the compose `backup` service)
#   backup-healthcheck  healthy unless the last backup run failed or the next backup is overdue by
#                       more than BACKUP_HEALTH_GRACE (a hung scheduler is not healthy); with an
#                       off-site repository, also unless the last off-site copy or check failed or
#                       the next copy is overdue the same way
#   offsite-check       read back every off-site copy in full (restic check --read-data); exit 1
#                       and unhealthy when anything there is missing or corrupt
#   offsite-snapshots   list the copies in the off-site repository
#   offsite-fetch NAME  bring backup NAME back from the off-site repository (then: restore NAME)
#
# Off-site copies (OFFSITE_REPOSITORY set): every verified backup folder is also sent, as it is, to
# a restic repository (encrypted client-side with OFFSITE_PASSWORD), read back and compared with its
# SHA256SUMS, and the repository is thinned to OFFSITE_KEEP_DAILY/WEEKLY/MONTHLY copies. A copy that
# fails makes `backup` exit 1 (the local backup is kept) and the health check fail.
#
# A backup is a folder BACKUP_DIR/backup-YYYYmmddTHHMMSSZ holding db.dump (pg_dump -Fc), globals.sql
# (pg_dumpall --globals-only), media.tar.gz, rows.txt (row counts taken in the dump's own snapshot)
# and SHA256SUMS. It is written under a temporary name and renamed only after it was verified by
# restoring it into a scratch database and comparing row counts; a failed one is renamed
# failed-backup-... and never counts as a backup. What a killed run leaves (a .tmp-backup-* folder, a
# scratch database) is removed by the next run. Connection: the libpq variables (PGHOST, PGUSER,
# PGPASSWORD, PGDATABASE), defaulting to POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB; the
# password may come from a file instead (PGPASSWORD_FILE: a Docker secret, docs/swarm.md).
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
OFFSITE_REPOSITORY="${OFFSITE_REPOSITORY:-}"
OFFSITE_KEEP_DAILY="${OFFSITE_KEEP_DAILY:-7}"
OFFSITE_KEEP_WEEKLY="${OFFSITE_KEEP_WEEKLY:-4}"
OFFSITE_KEEP_MONTHLY="${OFFSITE_KEEP_MONTHLY:-12}"
OFFSITE_VERIFY="${OFFSITE_VERIFY:-1}"
# The last off-site copy attempt (ok|failed NAME TIME DETAIL), the last good one (NAME SNAPSHOT
# TIME), and the last full check (ok|failed TIME DETAIL).
OFFSITE_STATUS_FILE="$BACKUP_DIR/.offsite-last-run"
OFFSITE_OK_FILE="$BACKUP_DIR/.offsite-last-ok"
OFFSITE_CHECK_FILE="$BACKUP_DIR/.offsite-last-check"
export PGUSER="${PGUSER:-${POSTGRES_USER:-postgres}}"
export PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-$PGUSER}}"
if [ -z "${PGPASSWORD:-}" ] && [ -n "${PGPASSWORD_FILE:-}" ]; then
	PGPASSWORD=$(cat "$PGPASSWORD_FILE")
	export PGPASSWORD
elif [ -z "${PGPASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
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

# The UTC time a backup started, from its name: backup_time backup-20250312T030000Z prints
# "2025-03-12 03:00:00" (for date -d and restic --time).
backup_time() {
	local ts=${1#backup-}
	printf '%s\n' "${ts:0:4}-${ts:4:2}-${ts:6:2} ${ts:9:2}:${ts:11:2}:${ts:13:2}"
}

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
	if offsite_enabled && ! offsite_send "$name"; then
		die "OFF-SITE COPY FAILED: $name is verified and kept in $BACKUP_DIR, but its off-site copy failed (see above)"
	fi
	printf '%s\n' "$name"
}

# ---- off-site copies (restic; docs/backups.md, "Off-site copies") ----------------------------

offsite_enabled() { [ -n "$OFFSITE_REPOSITORY" ]; }

now_utc() { date -u '+%Y-%m-%dT%H:%M:%SZ'; }

write_line() { # write_line FILE TEXT...: replaces FILE's content atomically
	local file=$1
	shift
	printf '%s\n' "$*" >"$file.tmp"
	mv -f "$file.tmp" "$file"
}

# The repository as logs may show it: without a user:password@ part (rest: URLs may carry one).
offsite_where() { printf '%s\n' "$OFFSITE_REPOSITORY" | sed -E 's#//[^/@]+@#//***@#'; }

# restic's settings from OFFSITE_*; for an sftp: repository, an ssh configuration in a private
# folder under /tmp with the key and the server's known host key from the environment (no
# prompt, no trust on first use).
offsite_setup() {
	local setting
	if [ -z "${OFFSITE_PASSWORD:-}" ]; then
		log "OFFSITE_REPOSITORY is set but OFFSITE_PASSWORD is empty: set the repository's key in the env file"
		return 1
	fi
	for setting in OFFSITE_KEEP_DAILY OFFSITE_KEEP_WEEKLY OFFSITE_KEEP_MONTHLY; do
		[[ "${!setting}" =~ ^[0-9]+$ ]] || { log "$setting=${!setting}: use a whole number"; return 1; }
	done
	export RESTIC_REPOSITORY="$OFFSITE_REPOSITORY" RESTIC_PASSWORD="$OFFSITE_PASSWORD"
	# Its cache and its temporary files (packs of up to 16 MiB each before upload, check's cache)
	# on the backups volume, not the small /tmp tmpfs.
	export RESTIC_CACHE_DIR="$BACKUP_DIR/.restic-cache" TMPDIR="$BACKUP_DIR/.restic-tmp"
	mkdir -p "$TMPDIR" || return 1
	# S3-compatible storage: restic reads the AWS_* names.
	[ -z "${OFFSITE_S3_ACCESS_KEY_ID:-}" ] || export AWS_ACCESS_KEY_ID="$OFFSITE_S3_ACCESS_KEY_ID"
	[ -z "${OFFSITE_S3_SECRET_ACCESS_KEY:-}" ] || export AWS_SECRET_ACCESS_KEY="$OFFSITE_S3_SECRET_ACCESS_KEY"
	[ -z "${OFFSITE_S3_REGION:-}" ] || export AWS_DEFAULT_REGION="$OFFSITE_S3_REGION"
	RESTIC_OPTS=()
	case "$OFFSITE_REPOSITORY" in
		sftp:*) offsite_ssh_config || return 1 ;;
	esac
}

offsite_ssh_config() {
	local dir
	if [ -z "${OFFSITE_SSH_KEY:-}" ] || [ -z "${OFFSITE_SSH_KNOWN_HOSTS:-}" ]; then
		log "an sftp: repository needs OFFSITE_SSH_KEY (the private key, base64) and OFFSITE_SSH_KNOWN_HOSTS (the server's known_hosts line)"
		return 1
	fi
	dir=$(mktemp -d /tmp/offsite-ssh.XXXXXX) || return 1
	# shellcheck disable=SC2064 # expand now: this very folder
	trap "rm -rf '$dir'" EXIT
	printf '%s' "$OFFSITE_SSH_KEY" | base64 -d >"$dir/key" 2>/dev/null \
		|| { log "OFFSITE_SSH_KEY is not base64 (write it with: base64 -w0 KEYFILE)"; return 1; }
	printf '%s\n' "$OFFSITE_SSH_KNOWN_HOSTS" >"$dir/known_hosts"
	printf '%s\n' "IdentityFile $dir/key" "IdentitiesOnly yes" "UserKnownHostsFile $dir/known_hosts" \
		"GlobalKnownHostsFile /dev/null" "StrictHostKeyChecking yes" "BatchMode yes" \
		"ConnectTimeout 20" "ServerAliveInterval 15" "ServerAliveCountMax 4" >"$dir/config"
	RESTIC_OPTS=(-o "sftp.args=-F $dir/config")
}

restic_run() { restic "${RESTIC_OPTS[@]}" "$@"; }

# Opens the repository, creating it on first use (restic exits 10 when there is none).
offsite_open() {
	local status=0 err
	err=$(restic_run cat config 2>&1 >/dev/null) || status=$?
	case "$status" in
		0) ;;
		10)
			log "off-site: no repository at $(offsite_where) yet; creating it (encrypted with OFFSITE_PASSWORD)"
			restic_run init >&2 || return 1
			;;
		*)
			printf '%s\n' "$err" >&2
			log "off-site: cannot open the repository at $(offsite_where) (restic exit status $status)"
			return 1
			;;
	esac
}

# Sends backup NAME, dated with its own time, then reads every file back from the new snapshot
# and compares it with SHA256SUMS; prints the snapshot's id.
offsite_copy() { # offsite_copy NAME
	local name=$1 snapshot sum file got
	log "off-site: copying $name to $(offsite_where)"
	snapshot=$(restic_run backup --json --host drs --tag drs-backup --tag "$name" \
		--time "$(backup_time "$name")" "$BACKUP_DIR/$name" </dev/null \
		| sed -n 's/.*"message_type":"summary".*"snapshot_id":"\([0-9a-f]*\)".*/\1/p') || return 1
	[ -n "$snapshot" ] || { log "off-site: restic reported no snapshot for $name"; return 1; }
	if [ "$OFFSITE_VERIFY" = 1 ]; then
		while read -r -u 3 sum file; do
			got=$(restic_run dump "$snapshot" "$BACKUP_DIR/$name/$file" </dev/null | sha256sum) \
				|| { log "off-site: could not read $file back from snapshot $snapshot"; return 1; }
			[ "${got%% *}" = "$sum" ] \
				|| { log "off-site: $file read back from snapshot $snapshot differs from the verified backup"; return 1; }
		done 3<"$BACKUP_DIR/$name/SHA256SUMS"
		log "off-site: read $name back from snapshot $snapshot: every checksum matches"
	fi
	printf '%s\n' "$snapshot"
}

# Keeps OFFSITE_KEEP_DAILY/WEEKLY/MONTHLY copies (restic forget --prune over all of them),
# then checks the repository's structure (every pack the index names is there).
offsite_thin() {
	restic_run forget --tag drs-backup --group-by host --keep-daily "$OFFSITE_KEEP_DAILY" \
		--keep-weekly "$OFFSITE_KEEP_WEEKLY" --keep-monthly "$OFFSITE_KEEP_MONTHLY" --prune </dev/null >&2 \
		|| { log "off-site: restic forget --prune failed"; return 1; }
	restic_run check </dev/null >&2 || { log "off-site: restic check found errors"; return 1; }
}

offsite_status() { write_line "$OFFSITE_STATUS_FILE" "$1 $2 $(now_utc) $3"; }

offsite_send() { # offsite_send NAME: the copy of a verified backup; records the outcome
	local name=$1 start=$SECONDS snapshot
	if ! offsite_setup || ! offsite_open || ! snapshot=$(offsite_copy "$name"); then
		offsite_status failed "$name" "the copy failed"
		return 1
	fi
	write_line "$OFFSITE_OK_FILE" "$name $snapshot $(now_utc)"
	if ! offsite_thin; then
		offsite_status failed "$name" "copied as snapshot $snapshot, but thinning or checking the repository failed"
		return 1
	fi
	offsite_status ok "$name" "snapshot $snapshot"
	log "off-site: $name copied as snapshot $snapshot in $((SECONDS - start))s"
}

require_offsite() {
	offsite_enabled || die "no off-site repository: set OFFSITE_REPOSITORY (docs/backups.md, \"Off-site copies\")"
	offsite_setup || die "the off-site settings are incomplete (see above)"
}

# Reads every copy back in full: a missing or corrupt pack fails it, loudly, until a check passes.
cmd_offsite_check() {
	require_dir
	require_offsite
	take_lock
	log "off-site: reading back every copy in $(offsite_where) (restic check --read-data)"
	if restic_run check --read-data </dev/null >&2; then
		write_line "$OFFSITE_CHECK_FILE" "ok $(now_utc) every copy read back"
		log "off-site: check passed"
	else
		write_line "$OFFSITE_CHECK_FILE" "failed $(now_utc) restic check --read-data found missing or corrupt data"
		die "OFF-SITE CHECK FAILED: the repository at $(offsite_where) has missing or corrupt data (see above)"
	fi
}

# Brings backup NAME back from the off-site repository into BACKUP_DIR (a lost VM, or a local
# backup rotated away) and checks it against its SHA256SUMS; `restore NAME` then restores it.
cmd_offsite_fetch() {
	local name=${1:-} snapshot tmp
	name=${name%/}
	name=${name##*/}
	[[ "$name" =~ ^backup-[0-9]{8}T[0-9]{6}Z$ ]] \
		|| die "usage: offsite-fetch backup-YYYYmmddTHHMMSSZ   (names from offsite-snapshots)"
	require_dir
	require_offsite
	take_lock
	[ ! -e "$BACKUP_DIR/$name" ] || die "$name is already in $BACKUP_DIR; restore it with: restore $name"
	snapshot=$(restic_run snapshots --json --tag "drs-backup,$name" </dev/null \
		| { grep -o '"id":"[0-9a-f]*"' || true; } | tail -n1 | cut -d'"' -f4) \
		|| die "cannot list the copies in $(offsite_where) (see above)"
	[ -n "$snapshot" ] || die "no off-site copy of $name in $(offsite_where) (list them with offsite-snapshots)"
	tmp="$BACKUP_DIR/.tmp-$name"
	rm -rf "$tmp"
	log "off-site: fetching $name (snapshot ${snapshot:0:8}) from $(offsite_where)"
	if ! restic_run restore "$snapshot:$BACKUP_DIR/$name" --target "$tmp" </dev/null >&2 \
		|| ! (cd "$tmp" && sha256sum --quiet -c SHA256SUMS) >&2; then
		rm -rf "$tmp"
		die "could not fetch $name intact from $(offsite_where) (see above); nothing was kept"
	fi
	mv "$tmp" "$BACKUP_DIR/$name"
	log "off-site: fetched $name, checksums match; restore it with: restore $name"
	printf '%s\n' "$name"
}

cmd_offsite_snapshots() {
	require_offsite
	restic_run snapshots --tag drs-backup </dev/null
}

# The off-site part of list-backups: the last good copy, and what failed; exit 1 on a failure.
offsite_report() {
	local state='' ok=0 name snapshot when
	if [ -s "$OFFSITE_OK_FILE" ]; then
		read -r name snapshot when _ <"$OFFSITE_OK_FILE"
		printf 'off-site: last good copy %s (snapshot %s) at %s in %s\n' "$name" "$snapshot" "$when" "$(offsite_where)"
	else
		printf 'off-site: no copy yet in %s\n' "$(offsite_where)"
	fi
	[ ! -s "$OFFSITE_STATUS_FILE" ] || read -r state _ <"$OFFSITE_STATUS_FILE"
	if [ "$state" = failed ]; then
		printf 'LAST OFF-SITE COPY FAILED: %s\n' "$(cat "$OFFSITE_STATUS_FILE")"
		ok=1
	fi
	state=''
	[ ! -s "$OFFSITE_CHECK_FILE" ] || read -r state _ <"$OFFSITE_CHECK_FILE"
	case "$state" in
		failed) printf 'LAST OFF-SITE CHECK FAILED: %s\n' "$(cat "$OFFSITE_CHECK_FILE")"; ok=1 ;;
		ok) printf 'off-site: last full check %s\n' "$(cat "$OFFSITE_CHECK_FILE")" ;;
		*) printf 'off-site: no full check yet (make offsite-check)\n' ;;
	esac
	return "$ok"
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
	local status=0
	if [ -s "$STATUS_FILE" ]; then
		read -r state name _ <"$STATUS_FILE"
		if [ "$state" != ok ]; then
			printf 'LAST BACKUP RUN FAILED: %s\n' "$(cat "$STATUS_FILE")"
			status=1
		else
			printf 'last run: %s\n' "$(cat "$STATUS_FILE")"
		fi
	else
		printf 'last run: none yet\n'
	fi
	if offsite_enabled; then
		offsite_report || status=1
	fi
	return "$status"
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
	local newest due state=''
	# After a failed run (also one before a restart) the next backup is due now; so after a failed
	# off-site copy (a new backup is taken and copied).
	[ "$(last_state)" != failed ] || { echo 0; return; }
	! offsite_enabled || [ ! -s "$OFFSITE_STATUS_FILE" ] || read -r state _ <"$OFFSITE_STATUS_FILE"
	[ "$state" != failed ] || { echo 0; return; }
	newest=$(backup_names | head -n1)
	[ -n "$newest" ] || { echo 0; return; }
	due=$(($(date -u -d "$(backup_time "$newest")" +%s) + $1))
	echo $((due > $(date +%s) ? due - $(date +%s) : 0))
}

cmd_scheduler() {
	local every wait
	every=$(interval_seconds "$BACKUP_INTERVAL")
	interval_seconds "$BACKUP_HEALTH_GRACE" BACKUP_HEALTH_GRACE >/dev/null
	require_dir
	date +%s >"$SCHEDULER_FILE"
	log "scheduler: a backup every $BACKUP_INTERVAL, keeping $BACKUP_KEEP_DAILY daily and $BACKUP_KEEP_WEEKLY weekly"
	if offsite_enabled; then
		log "scheduler: each backup also copied to $(offsite_where), keeping $OFFSITE_KEEP_DAILY daily, $OFFSITE_KEEP_WEEKLY weekly and $OFFSITE_KEEP_MONTHLY monthly there"
	else
		log "scheduler: no off-site repository (OFFSITE_REPOSITORY is empty): backups stay on this machine only"
	fi
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
	local newest
	newest=$(backup_names | head -n1)
	if [ -n "$newest" ]; then
		date -u -d "$(backup_time "$newest")" +%s
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
	! offsite_enabled || offsite_healthcheck "$every" "$grace"
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

# Unhealthy when the last off-site copy or full check failed, or when no copy succeeded for
# BACKUP_INTERVAL + BACKUP_HEALTH_GRACE since the backup last copied (or the scheduler's start,
# if later: a repository set up since).
offsite_healthcheck() { # offsite_healthcheck EVERY GRACE (seconds)
	local state='' name='' since=0 started=0 overdue
	[ ! -s "$OFFSITE_STATUS_FILE" ] || read -r state _ <"$OFFSITE_STATUS_FILE"
	[ "$state" != failed ] || { printf 'OFF-SITE COPY FAILED: %s\n' "$(cat "$OFFSITE_STATUS_FILE")"; exit 1; }
	state=''
	[ ! -s "$OFFSITE_CHECK_FILE" ] || read -r state _ <"$OFFSITE_CHECK_FILE"
	[ "$state" != failed ] || { printf 'OFF-SITE CHECK FAILED: %s\n' "$(cat "$OFFSITE_CHECK_FILE")"; exit 1; }
	[ ! -s "$OFFSITE_OK_FILE" ] || read -r name _ <"$OFFSITE_OK_FILE"
	[ -z "$name" ] || since=$(date -u -d "$(backup_time "$name")" +%s)
	[ ! -s "$SCHEDULER_FILE" ] || started=$(cat "$SCHEDULER_FILE")
	[ "$started" -le "$since" ] || since=$started
	[ "$since" -gt 0 ] || return 0
	overdue=$(($(date +%s) - since - $1))
	if [ "$overdue" -gt "$2" ]; then
		printf 'no off-site copy succeeded for %ss (last: %s; BACKUP_INTERVAL=%s, BACKUP_HEALTH_GRACE=%s)\n' \
			"$(($(date +%s) - since))" "${name:-none}" "$BACKUP_INTERVAL" "$BACKUP_HEALTH_GRACE"
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
		offsite-check) cmd_offsite_check "$@" ;;
		offsite-snapshots) cmd_offsite_snapshots "$@" ;;
		offsite-fetch) cmd_offsite_fetch "$@" ;;
		*) die "run me as backup, list-backups, restore, rotate-backups, backup-scheduler, backup-healthcheck, offsite-check, offsite-snapshots or offsite-fetch" ;;
	esac
}

main "$@"
