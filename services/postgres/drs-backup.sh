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
#   wal-archive PATH NAME  the server's archive_command: WAL segment PATH, gzipped, into the spool
#   wal-ship            send the WAL spool and the media folder off-site now, as one snapshot
#   pitr-fetch TIME|latest  fetch what a point-in-time restore needs from the off-site repository
#   pitr-prepare        (as postgres, data volume mounted) replace PGDATA with the fetched base backup
#                       and set it to recover to the fetched time from the fetched WAL
#   pitr-finish         (in the postgres container, after promotion) clear the recovery settings
#   pitr-media          replace the media folder with the fetched one; remove what was fetched
#
# Point-in-time recovery (POSTGRES_BACKUP_PASSWORD and OFFSITE_REPOSITORY set): each backup also
# holds a physical base backup (pg_basebackup as drs_backup); the server archives every WAL segment
# into the spool (wal-archive, at least every WAL_ARCHIVE_TIMEOUT seconds with writes), and the
# scheduler sends the spool and the media folder off-site within seconds of a new segment, tagged
# with the base backup it continues (docs/backups.md, "Point-in-time recovery").
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
# password may come from a file instead (PGPASSWORD_FILE: a Docker secret, docs/swarm.md), and so
# may the other secrets (NAME_FILE, below).
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
METRICS_DIR="$BACKUP_DIR/.metrics"
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
# Point-in-time recovery: the WAL spool, the base backup its segments continue (NAME START_WAL),
# the last WAL snapshot sent (BASE SNAPSHOT TIME EPOCH), the shipper's last good round (its mtime),
# its lock, and where pitr-fetch puts what a restore needs.
WAL_SPOOL_DIR="${WAL_SPOOL_DIR:-/wal-spool}"
WAL_ARCHIVE_TIMEOUT="${WAL_ARCHIVE_TIMEOUT:-60}"
WAL_SHIP_CHECK="${WAL_SHIP_CHECK:-5}"
WAL_BASE_FILE="$BACKUP_DIR/.wal-base"
WAL_OK_FILE="$BACKUP_DIR/.wal-last-ship"
WAL_BEAT_FILE="$BACKUP_DIR/.wal-beat"
WAL_LOCK_FILE="$BACKUP_DIR/.wal-lock"
PITR_DIR="$BACKUP_DIR/.pitr"
# Inside PGDATA during a point-in-time restore: the fetched WAL segments (gzipped).
PITR_WAL_DIR=.drs-restore-wal
BACKUP_ROLE=drs_backup
export PGUSER="${PGUSER:-${POSTGRES_USER:-postgres}}"
export PGDATABASE="${PGDATABASE:-${POSTGRES_DB:-$PGUSER}}"
# Secrets from files (Docker secrets on a swarm, docs/swarm.md): NAME_FILE when NAME is empty.
for secret_var in PGPASSWORD POSTGRES_BACKUP_PASSWORD OFFSITE_PASSWORD OFFSITE_S3_SECRET_ACCESS_KEY OFFSITE_SSH_KEY; do
	secret_file_var="${secret_var}_FILE"
	if [ -z "${!secret_var:-}" ] && [ -n "${!secret_file_var:-}" ]; then
		[ -r "${!secret_file_var}" ] || { printf 'drs-backup: error: %s=%s cannot be read\n' "$secret_file_var" "${!secret_file_var}" >&2; exit 1; }
		export "$secret_var=$(cat "${!secret_file_var}")"
	fi
done
unset secret_var secret_file_var
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
	write_metrics || log "could not write $METRICS_DIR/backup.prom (metrics only; the backup is unaffected)"
}

# The state as Prometheus metrics, for the monitoring profile's node exporter (its textfile
# collector; docs/observability.md): the last good backup's time, whether the last run
# succeeded, the interval. Readable by all (folder 0755, file 0644): the exporter runs as another
# uid and can read nothing else in this volume. Written by every run and at the scheduler's start.
write_metrics() {
	local newest last_ok=1 tmp="$METRICS_DIR/.backup.prom.tmp"
	mkdir -p "$METRICS_DIR" && chmod 0755 "$METRICS_DIR" || return 1
	[ "$(last_state)" != failed ] || last_ok=0
	newest=$(backup_names | head -n1)
	{
		printf '# HELP %s %s\n# TYPE %s gauge\n%s %s\n' drs_backup_last_run_ok \
			'1 if the last backup run succeeded, 0 if it failed.' drs_backup_last_run_ok drs_backup_last_run_ok "$last_ok"
		printf '# HELP %s %s\n# TYPE %s gauge\n%s %s\n' drs_backup_interval_seconds \
			'BACKUP_INTERVAL in seconds.' drs_backup_interval_seconds drs_backup_interval_seconds \
			"$(interval_seconds "$BACKUP_INTERVAL")"
		if [ -n "$newest" ]; then
			printf '# HELP %s %s\n# TYPE %s gauge\n%s %s\n' drs_backup_last_success_timestamp_seconds \
				'When the newest verified backup was taken (epoch seconds).' \
				drs_backup_last_success_timestamp_seconds drs_backup_last_success_timestamp_seconds \
				"$(date -u -d "$(backup_time "$newest")" +%s)"
		fi
	} >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$METRICS_DIR/backup.prom"
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
	if [ -e "$dir/base.tar.gz" ]; then
		if ! tar -tzf "$dir/base.tar.gz" >/dev/null || ! tar -tzf "$dir/pg_wal.tar.gz" >/dev/null; then
			log "verification: the base backup's archives do not read"
			return 1
		fi
	fi
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

pitr_enabled() { [ -n "${POSTGRES_BACKUP_PASSWORD:-}" ]; }

# A physical base backup (for point-in-time recovery) into DIR: base.tar.gz, pg_wal.tar.gz (the WAL
# that makes it consistent), backup_manifest, and pitr.txt: the first WAL segment it needs and the
# time it ended (a restore can target any time after that).
base_backup() { # base_backup DIR
	local dir=$1 start_wal
	pitr_enabled || return 0
	mkdir "$dir/.base" || return 1
	PGPASSWORD="$POSTGRES_BACKUP_PASSWORD" pg_basebackup --username="$BACKUP_ROLE" --no-password \
		--pgdata="$dir/.base" --format=tar --gzip --wal-method=stream --checkpoint=fast --no-sync \
		|| { log "pg_basebackup failed (is POSTGRES_BACKUP_PASSWORD the one postgres was started with?)"; return 1; }
	mv "$dir/.base/"* "$dir/" && rmdir "$dir/.base" || return 1
	start_wal=$(tar -xzOf "$dir/base.tar.gz" backup_label | sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\))$/\1/p')
	[ -n "$start_wal" ] || { log "no START WAL LOCATION in the base backup's backup_label"; return 1; }
	printf 'start_wal=%s\nend=%s\n' "$start_wal" "$(date +%s)" >"$dir/pitr.txt"
}

# pitr_value DIR KEY: a value from DIR/pitr.txt (empty when the backup has no base backup).
pitr_value() { sed -n "s/^$2=//p" "$1/pitr.txt" 2>/dev/null; }

write_backup() { # write_backup DIR   (returns non-zero on any failure)
	local dir=$1
	base_backup "$dir" || return 1
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
	if [ -s "$BACKUP_DIR/$name/pitr.txt" ]; then
		wal_switch_base "$name"
	else
		wal_drop_spool
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

# --retry-lock: the WAL shipper's backups and a copy's prune and check take turns on the
# repository's lock instead of failing when they meet.
restic_run() { restic --retry-lock 2m "${RESTIC_OPTS[@]}" "$@"; }

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
	local name=$1 snapshot sum file got end
	local -a tags=(--tag drs-backup --tag "$name")
	end=$(pitr_value "$BACKUP_DIR/$name" end)
	[ -z "$end" ] || tags+=(--tag "pitr-end:$end")
	log "off-site: copying $name to $(offsite_where)"
	snapshot=$(restic_run backup --json --host drs "${tags[@]}" \
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
		--keep-weekly "$OFFSITE_KEEP_WEEKLY" --keep-monthly "$OFFSITE_KEEP_MONTHLY" </dev/null >&2 \
		|| { log "off-site: restic forget failed"; return 1; }
	wal_thin || return 1
	restic_run prune </dev/null >&2 || { log "off-site: restic prune failed"; return 1; }
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
		! pitr_enabled || wal_report
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
	write_metrics || log "could not write $METRICS_DIR/backup.prom (metrics only)"
	log "scheduler: a backup every $BACKUP_INTERVAL, keeping $BACKUP_KEEP_DAILY daily and $BACKUP_KEEP_WEEKLY weekly"
	if offsite_enabled; then
		log "scheduler: each backup also copied to $(offsite_where), keeping $OFFSITE_KEEP_DAILY daily, $OFFSITE_KEEP_WEEKLY weekly and $OFFSITE_KEEP_MONTHLY monthly there"
	else
		log "scheduler: no off-site repository (OFFSITE_REPOSITORY is empty): backups stay on this machine only"
	fi
	local shipper=''
	if offsite_enabled && pitr_enabled; then
		log "scheduler: WAL (point-in-time recovery) and media sent to $(offsite_where) within ${WAL_SHIP_CHECK}s of each archived segment (the server archives at least every ${WAL_ARCHIVE_TIMEOUT}s)"
		wal_shipper &
		shipper=$!
	elif ! pitr_enabled; then
		log "scheduler: no point-in-time recovery (POSTGRES_BACKUP_PASSWORD is empty): restores go back to a backup only"
	fi
	# shellcheck disable=SC2064 # expand now: this very shipper
	trap "log 'scheduler: stopping'; [ -z '$shipper' ] || kill '$shipper' 2>/dev/null; exit 0" TERM INT
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
	! offsite_enabled || ! pitr_enabled || wal_healthcheck
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

# ---- point-in-time recovery (docs/backups.md, "Point-in-time recovery") ------------------------

# The server's archive_command (postgres container): segment PATH, gzipped, into the spool as
# NAME.gz, written under a temporary name and renamed. A segment archived before with the same
# content succeeds again (PostgreSQL may retry after a crash); different content fails (never
# overwritten). Group-readable: the backup service ships and trims the spool.
cmd_wal_archive() { # wal-archive PATH NAME
	local path=${1:?usage: wal-archive PATH NAME} name=${2:?usage: wal-archive PATH NAME}
	local out="$WAL_SPOOL_DIR/$name.gz" tmp="$WAL_SPOOL_DIR/.$name.gz.tmp"
	umask 027
	if [ -e "$out" ]; then
		gzip -dc "$out" | cmp -s - "$path" && return 0
		die "wal-archive: $out exists with other content; not overwriting it"
	fi
	if ! gzip -1 -c "$path" >"$tmp" || ! sync "$tmp" || ! mv "$tmp" "$out"; then
		rm -f "$tmp"
		die "wal-archive: cannot write $out"
	fi
}

# wal_ship: one restic snapshot of the spool and the media folder, tagged with the base backup the
# spool's segments continue. Call with the WAL lock held.
wal_ship() {
	local base snapshot start
	[ -s "$WAL_BASE_FILE" ] || { log "WAL: no base backup yet; nothing to send until the next backup"; return 0; }
	read -r base _ <"$WAL_BASE_FILE"
	start=$(date +%s)
	local -a paths=("$WAL_SPOOL_DIR")
	[ ! -d "$BACKUP_MEDIA_DIR" ] || paths+=("$BACKUP_MEDIA_DIR")
	snapshot=$(restic_run backup --json --host drs --tag drs-wal --tag "base:$base" --exclude '.*.tmp' \
		"${paths[@]}" </dev/null | sed -n 's/.*"message_type":"summary".*"snapshot_id":"\([0-9a-f]*\)".*/\1/p') \
		|| { log "WAL SHIP FAILED: restic backup of $WAL_SPOOL_DIR to $(offsite_where) failed (see above)"; return 1; }
	[ -n "$snapshot" ] || { log "WAL SHIP FAILED: restic reported no snapshot"; return 1; }
	write_line "$WAL_OK_FILE" "$base $snapshot $(now_utc) $start"
	touch -d "@$start" "$WAL_BEAT_FILE"
}

# wal_pending: true when a segment reached the spool since the last good round.
wal_pending() {
	[ -s "$WAL_BASE_FILE" ] || return 1
	[ -e "$WAL_BEAT_FILE" ] || return 0
	find "$WAL_SPOOL_DIR" -mindepth 1 -maxdepth 1 -type f -name '[0-9A-F]*' -newer "$WAL_BEAT_FILE" | grep -q .
}

with_wal_lock() { # with_wal_lock CMD...: CMD holding the WAL lock (waits up to 10 minutes)
	local fd status=0
	exec {fd}>"$WAL_LOCK_FILE"
	flock -w 600 "$fd" || { log "WAL: lock $WAL_LOCK_FILE still held after 600s"; exec {fd}>&-; return 1; }
	"$@" || status=$?
	exec {fd}>&-
	return "$status"
}

# The scheduler's second loop: every WAL_SHIP_CHECK seconds, send the spool when a segment arrived.
# A round with nothing new counts as good (the health check watches WAL_BEAT_FILE's age).
wal_shipper() {
	trap 'exit 0' TERM INT
	offsite_setup || { log "WAL SHIP FAILED: the off-site settings are incomplete"; return 1; }
	local now
	while :; do
		# The time before looking: a segment that lands after the look is newer than the mark.
		now=$(date +%s)
		if ! wal_pending; then
			[ ! -e "$WAL_BEAT_FILE" ] || touch -d "@$now" "$WAL_BEAT_FILE"
		elif ! with_wal_lock wal_ship; then
			log "WAL: retrying in ${WAL_SHIP_CHECK}s"
		fi
		sleep "$WAL_SHIP_CHECK" &
		wait $! || true
	done
}

cmd_wal_ship() {
	require_dir
	require_offsite
	pitr_enabled || die "no point-in-time recovery: POSTGRES_BACKUP_PASSWORD is empty"
	with_wal_lock wal_ship || die "WAL SHIP FAILED (see above)"
	log "WAL: sent $(cut -d' ' -f2 "$WAL_OK_FILE" 2>/dev/null) for base $(cut -d' ' -f1 "$WAL_BASE_FILE" 2>/dev/null)"
}

# After backup NAME (with a base backup) is verified and copied: the spool now continues NAME.
# The spool is sent once more for the previous base first, so its WAL reaches NAME's start, then
# segments before NAME's first one are removed from the spool (they are off-site, or no longer
# needed without an off-site repository).
wal_switch_base() { with_wal_lock wal_switch_base_locked "$1" || log "WAL: could not switch the spool to $1 (see above)"; }

wal_switch_base_locked() {
	local name=$1 start_wal sent=1 file
	start_wal=$(pitr_value "$BACKUP_DIR/$name" start_wal)
	if offsite_enabled && [ -s "$WAL_BASE_FILE" ]; then
		wal_ship || sent=0
	fi
	write_line "$WAL_BASE_FILE" "$name $start_wal"
	[ "$sent" = 1 ] || { log "WAL: the spool is kept whole (its last send failed)"; return 0; }
	while IFS= read -r file; do
		[[ "${file%.gz}" < "$start_wal" ]] && rm -f -- "${WAL_SPOOL_DIR:?}/$file"
	done < <(find "$WAL_SPOOL_DIR" -mindepth 1 -maxdepth 1 -type f -name '[0-9A-F]*.gz' ! -name '*.history.gz' -printf '%f\n')
	log "WAL: the spool continues $name (from segment $start_wal)"
}

# Without base backups (POSTGRES_BACKUP_PASSWORD empty) archived segments serve nothing: each
# backup empties the spool, so it never holds more than one BACKUP_INTERVAL of WAL.
wal_drop_spool() {
	[ -d "$WAL_SPOOL_DIR" ] && [ -w "$WAL_SPOOL_DIR" ] || return 0
	find "$WAL_SPOOL_DIR" -mindepth 1 -maxdepth 1 -type f -name '[0-9A-F]*.gz' -delete \
		|| log "WAL: could not empty the spool $WAL_SPOOL_DIR"
}

# WAL snapshots: the newest of each base backup's, and none of a base backup no longer kept.
wal_thin() {
	local keep orphans
	restic_run forget --tag drs-wal --group-by host,tags --keep-last 1 </dev/null >&2 \
		|| { log "off-site: restic forget of WAL snapshots failed"; return 1; }
	keep=$(restic_run snapshots --json --tag drs-backup </dev/null \
		| jq -c '[.[].tags[] | select(startswith("backup-"))]') || return 1
	orphans=$(restic_run snapshots --json --tag drs-wal </dev/null | jq -r --argjson keep "$keep" \
		'.[] | select(([.tags[] | select(startswith("base:")) | ltrimstr("base:")] | .[0]) as $b
		| ($keep | index($b)) == null) | .id') || return 1
	[ -z "$orphans" ] || {
		# shellcheck disable=SC2086 # snapshot ids: one word each
		restic_run forget $orphans </dev/null >&2 || { log "off-site: restic forget of old WAL failed"; return 1; }
	}
}

# Unhealthy once the shipper had no good round for 3 x WAL_ARCHIVE_TIMEOUT + 2 minutes.
wal_healthcheck() {
	local age limit=$((3 * WAL_ARCHIVE_TIMEOUT + 120))
	[ -s "$WAL_BASE_FILE" ] && [ -e "$WAL_BEAT_FILE" ] || return 0
	age=$(($(date +%s) - $(stat -c %Y "$WAL_BEAT_FILE")))
	if [ "$age" -gt "$limit" ]; then
		printf 'WAL SHIPPING STALLED: no good round for %ss (limit %ss); last sent: %s\n' "$age" "$limit" \
			"$(cat "$WAL_OK_FILE" 2>/dev/null || echo none)"
		exit 1
	fi
}

wal_report() {
	local base snapshot when
	if [ -s "$WAL_OK_FILE" ]; then
		read -r base snapshot when _ <"$WAL_OK_FILE"
		printf 'off-site WAL: last sent %s (snapshot %s, continues %s); point-in-time restores reach that far\n' \
			"$when" "$snapshot" "$base"
	else
		printf 'off-site WAL: none sent yet (after the first backup with a base backup)\n'
	fi
}

# pitr-fetch TIME|latest: the newest base backup that ended before TIME, and the newest WAL
# snapshot that continues it (its spool and media folder), into PITR_DIR, readable by the postgres
# container's uid for pitr-prepare. Prints "NAME TARGET".
cmd_pitr_fetch() {
	local target=${1:-} epoch='' recovery=latest snaps base name end wal
	[ -n "$target" ] || die "usage: pitr-fetch TIME|latest   (TIME: e.g. '2026-12-01 21:30:00 UTC')"
	if [ "$target" != latest ]; then
		epoch=$(date -u -d "$target" +%s) || die "TIME=$target is not a time (e.g. '2026-12-01 21:30:00 UTC')"
		recovery=$(date -u -d "$target" '+%Y-%m-%d %H:%M:%S.%6N+00')
	fi
	require_dir
	require_offsite
	take_lock
	snaps=$(restic_run snapshots --json --tag drs-backup </dev/null) || die "cannot list the copies in $(offsite_where) (see above)"
	base=$(jq -r --arg e "$epoch" '[.[] | {id, name: (.tags[] | select(startswith("backup-"))),
		end: (.tags[] | select(startswith("pitr-end:")) | ltrimstr("pitr-end:") | tonumber)}
		| select($e == "" or .end <= ($e | tonumber))] | sort_by(.end) | last // empty
		| "\(.id) \(.name) \(.end)"' <<<"$snaps")
	[ -n "$base" ] || die "no base backup in $(offsite_where) ended before ${target}; the oldest restorable time is the end of the oldest one (offsite-snapshots)"
	read -r base name end <<<"$base"
	wal=$(restic_run snapshots --json --tag "drs-wal,base:$name" </dev/null | jq -r 'sort_by(.time) | last // empty | .id') \
		|| die "cannot list the WAL in $(offsite_where) (see above)"
	umask 022
	rm -rf "$PITR_DIR"
	mkdir -p "$PITR_DIR/wal"
	log "point-in-time restore to $recovery: base backup $name (ended $(date -u -d "@$end" '+%Y-%m-%dT%H:%M:%SZ')), WAL snapshot ${wal:-none}"
	if ! restic_run restore "$base:$BACKUP_DIR/$name" --target "$PITR_DIR/base" </dev/null >&2 \
		|| ! (cd "$PITR_DIR/base" && sha256sum --quiet -c SHA256SUMS) >&2; then
		rm -rf "$PITR_DIR"
		die "could not fetch $name intact from $(offsite_where) (see above)"
	fi
	if [ -n "$wal" ]; then
		restic_run restore "$wal" --target "$PITR_DIR/wal" </dev/null >&2 \
			|| { rm -rf "$PITR_DIR"; die "could not fetch the WAL snapshot $wal from $(offsite_where) (see above)"; }
	else
		log "no WAL continues $name: the database comes back as that backup ended"
	fi
	chmod -R a+rX "$PITR_DIR"
	printf '%s\n' "$recovery" >"$PITR_DIR/target"
	log "fetched $name and $(find "$PITR_DIR/wal$WAL_SPOOL_DIR" -name '[0-9A-F]*.gz' 2>/dev/null | wc -l) WAL files"
	printf '%s %s\n' "$name" "$recovery"
}

# pitr-prepare (the postgres image as uid 999, the data volume at PGDATA, the backups volume
# read-only at BACKUP_DIR, the spool at WAL_SPOOL_DIR): PGDATA replaced by the fetched base
# backup, set to replay the fetched WAL up to the target and then promote; the spool emptied
# (its segments belong to the history being replaced).
cmd_pitr_prepare() {
	local target restore
	[ -s "$PITR_DIR/target" ] || die "nothing fetched in $PITR_DIR: run pitr-fetch first"
	[ -d "$PGDATA" ] && [ -w "$PGDATA" ] || die "$PGDATA is missing or not writable by uid $(id -u)"
	target=$(cat "$PITR_DIR/target")
	log "replacing $PGDATA with the base backup"
	find "$PGDATA" -mindepth 1 -delete
	tar -xzf "$PITR_DIR/base/base.tar.gz" -C "$PGDATA"
	mkdir -p "$PGDATA/pg_wal" "$PGDATA/$PITR_WAL_DIR"
	tar -xzf "$PITR_DIR/base/pg_wal.tar.gz" -C "$PGDATA/pg_wal"
	if [ -d "$PITR_DIR/wal$WAL_SPOOL_DIR" ]; then
		find "$PITR_DIR/wal$WAL_SPOOL_DIR" -mindepth 1 -maxdepth 1 -type f -name '[0-9A-F]*.gz' \
			-exec cp -t "$PGDATA/$PITR_WAL_DIR" -- '{}' +
	fi
	chmod -R go-rwx "$PGDATA"
	restore="f=$PGDATA/$PITR_WAL_DIR/%f.gz; test -f \$f && gzip -dc \$f > %p"
	{
		printf '# drs: point-in-time restore (pitr-finish removes these settings)\n'
		printf "restore_command = '%s'\n" "$restore"
		[ "$target" = latest ] || printf "recovery_target_time = '%s'\n" "$target"
		printf "recovery_target_action = 'promote'\n"
	} >>"$PGDATA/postgresql.auto.conf"
	touch "$PGDATA/recovery.signal"
	[ ! -d "$WAL_SPOOL_DIR" ] || find "$WAL_SPOOL_DIR" -mindepth 1 -delete
	log "$PGDATA holds the base backup and $(find "$PGDATA/$PITR_WAL_DIR" -type f | wc -l) WAL files; recovering to $target on the next start"
}

# pitr-finish (in the postgres container, once promoted): the recovery settings and the fetched
# WAL removed; prints the time of the last transaction replayed (the recovery point).
cmd_pitr_finish() {
	local -a su=(psql_q -U postgres -d postgres)
	[ "$("${su[@]}" -c 'SELECT pg_is_in_recovery()')" = f ] || die "the server is still recovering"
	"${su[@]}" -c 'ALTER SYSTEM RESET restore_command' -c 'ALTER SYSTEM RESET recovery_target_time' \
		-c 'ALTER SYSTEM RESET recovery_target_action' -c 'SELECT pg_reload_conf()' >/dev/null
	rm -rf "${PGDATA:?}/$PITR_WAL_DIR"
	"${su[@]}" -c "SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'none')"
}

# pitr-media (the backup service's uid): the media folder replaced by the fetched one (else by the
# base backup's media.tar.gz); what was fetched removed; the spool waits for the next backup.
cmd_pitr_media() {
	local fetched="$PITR_DIR/wal$BACKUP_MEDIA_DIR"
	require_dir
	[ -s "$PITR_DIR/target" ] || die "nothing fetched in $PITR_DIR: run pitr-fetch first"
	if [ -d "$fetched" ]; then
		[ -d "$BACKUP_MEDIA_DIR" ] && [ -w "$BACKUP_MEDIA_DIR" ] || die "media folder $BACKUP_MEDIA_DIR is missing or not writable by uid $(id -u)"
		find "$BACKUP_MEDIA_DIR" -mindepth 1 -delete
		cp -a "$fetched/." "$BACKUP_MEDIA_DIR/"
		log "media folder restored from the WAL snapshot ($(find "$BACKUP_MEDIA_DIR" -type f | wc -l) files)"
	elif [ "${RESTORE_MEDIA:-1}" = 1 ]; then
		restore_media "$PITR_DIR/base"
	fi
	rm -rf "$PITR_DIR" "$WAL_BASE_FILE" "$WAL_BEAT_FILE"
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
		wal-archive) cmd_wal_archive "$@" ;;
		wal-ship) cmd_wal_ship "$@" ;;
		pitr-fetch) cmd_pitr_fetch "$@" ;;
		pitr-prepare) cmd_pitr_prepare "$@" ;;
		pitr-finish) cmd_pitr_finish "$@" ;;
		pitr-media) cmd_pitr_media "$@" ;;
		*) die "run me as backup, list-backups, restore, rotate-backups, backup-scheduler, backup-healthcheck, offsite-check, offsite-snapshots, offsite-fetch, wal-archive, wal-ship, pitr-fetch, pitr-prepare, pitr-finish or pitr-media" ;;
	esac
}

main "$@"
