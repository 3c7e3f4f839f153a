#!/usr/bin/env bash
# Entrypoint of drs/postgres. Initialises an empty $PGDATA on first start (user,
# database, /docker-entrypoint-initdb.d scripts), then execs postgres as PID 1.
#
# Unlike the official image, a failed initialisation is never mistaken for a
# finished one: the cluster is built in $PGDATA/.drs-init-in-progress and moved
# into $PGDATA only after every init script succeeded. If that directory is
# found on start, an earlier initialisation failed or was interrupted and the
# container refuses to start until the operator removes the volume.
#
# The script can be sourced (e.g. by docker-healthcheck) to reuse its functions.
set -Eeuo pipefail

DRS_INIT_MARKER=.drs-init-in-progress
: "${POSTGRES_CONFIG_FILE:=/etc/postgresql/postgresql.conf}"
: "${POSTGRES_INITDB_DIR:=/docker-entrypoint-initdb.d}"

docker_log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
docker_error() { printf '%s [entrypoint] error: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
docker_die() { docker_error "$@"; exit 1; }

# file_env VAR [DEFAULT]: set VAR from $VAR or from the file named by $VAR_FILE
# (Docker secrets); both set is an error.
file_env() {
	local var=$1 def=${2:-}
	local fileVar="${var}_FILE"
	if [ -n "${!var:-}" ] && [ -n "${!fileVar:-}" ]; then
		docker_die "both $var and $fileVar are set; set only one of them"
	fi
	local val=$def
	if [ -n "${!var:-}" ]; then
		val=${!var}
	elif [ -n "${!fileVar:-}" ]; then
		[ -r "${!fileVar}" ] || docker_die "$fileVar points to ${!fileVar}, which does not exist or is not readable"
		val=$(<"${!fileVar}")
	fi
	export "$var"="$val"
	unset "$fileVar"
}

# True when the arguments only ask postgres for information (no server start).
docker_pg_wants_help() {
	local arg
	for arg; do
		case "$arg" in
			-'?' | --help | --describe-config | -V | --version | -C | -C*) return 0 ;;
		esac
	done
	return 1
}

docker_setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	: "${POSTGRES_SOCKET_DIR:=/var/run/postgresql}"
	export POSTGRES_HOST_AUTH_METHOD POSTGRES_SOCKET_DIR
	DRS_INIT_DIR="$PGDATA/$DRS_INIT_MARKER"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

# Started as root (e.g. `--user root` for a root-owned bind mount): fix the
# ownership of the data and socket directories, then re-run as postgres.
docker_drop_root() {
	[ "$(id -u)" = 0 ] || return 0
	mkdir -p "$PGDATA" "$POSTGRES_SOCKET_DIR"
	if [ "$(stat -c %u "$PGDATA")" != "$(id -u postgres)" ]; then
		find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
	fi
	chmod 0700 "$PGDATA"
	chown postgres:postgres "$POSTGRES_SOCKET_DIR"
	docker_log "dropping root: re-running as user postgres"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
}

docker_verify_directories() {
	local uid
	uid=$(id -u)
	if [ ! -d "$PGDATA" ]; then
		mkdir -p "$PGDATA" 2>/dev/null || docker_die "PGDATA $PGDATA does not exist and cannot be created by uid $uid; mount a volume there"
	fi
	if [ ! -w "$PGDATA" ] || [ "$(stat -c %u "$PGDATA")" != "$uid" ]; then
		docker_die "PGDATA $PGDATA must be owned and writable by uid $uid (it is owned by uid $(stat -c %u "$PGDATA")): a new named volume gets this right by itself; chown a bind-mounted directory to $uid:$(id -g), or start once with --user root to let the entrypoint fix it"
	fi
	# postgres refuses a data directory that others can read
	chmod 0700 "$PGDATA"
	if [ ! -d "$POSTGRES_SOCKET_DIR" ]; then
		mkdir -p "$POSTGRES_SOCKET_DIR" 2>/dev/null || true
	fi
	if [ ! -w "$POSTGRES_SOCKET_DIR" ]; then
		docker_die "socket directory $POSTGRES_SOCKET_DIR is not writable by uid $uid; with a read-only root filesystem mount a tmpfs there (--tmpfs $POSTGRES_SOCKET_DIR) or set POSTGRES_SOCKET_DIR to a writable directory"
	fi
}

docker_refuse_unfinished_init() {
	if [ -e "$DRS_INIT_DIR" ]; then
		docker_die "an earlier initialisation of this data volume failed or was interrupted ($DRS_INIT_DIR exists), so the database would be half set up; fix the cause (see the first start's log), then remove the volume (docker compose down -v, or docker volume rm NAME) and start again"
	fi
	if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
		local entry
		for entry in "$PGDATA"/* "$PGDATA"/.[!.]*; do
			[ -e "$entry" ] || continue
			case "${entry##*/}" in lost+found) continue ;; esac
			docker_die "PGDATA $PGDATA is not empty but holds no database (no PG_VERSION; found ${entry##*/}); refusing to initialise over it: empty the volume or point PGDATA elsewhere"
		done
	fi
}

docker_verify_minimum_env() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		docker_die "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) must be set to a non-empty password; set POSTGRES_HOST_AUTH_METHOD=trust instead only if anyone who can reach the port may log in"
	fi
	if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
		docker_log "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every client that reaches port 5432 logs in without a password"
	fi
}

# Called through an EXIT trap while initialising: a failure (or an init script
# calling exit) leaves the marker directory behind and the container stops.
docker_init_abort() {
	local status=$1
	trap - EXIT
	[ "$status" != 0 ] || status=1
	if [ -n "${DRS_TEMP_SERVER:-}" ]; then
		pg_ctl -D "$DRS_INIT_DIR" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	docker_error "database initialisation failed (exit status $status); the volume is marked unfinished and later starts will refuse it: fix the cause, then remove the volume"
	exit "$status"
}

docker_init_database_dir() {
	docker_log "initialising a new cluster in $DRS_INIT_DIR"
	mkdir -m 0700 "$DRS_INIT_DIR"
	local -a args=(--username="$POSTGRES_USER" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD"
		--encoding=UTF8 --data-checksums)
	# POSTGRES_INITDB_ARGS is split on whitespace on purpose (it holds several flags);
	# the password reaches initdb through a pipe, never the command line.
	if [ -n "$POSTGRES_PASSWORD" ]; then
		# shellcheck disable=SC2086
		initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS -D "$DRS_INIT_DIR"
	else
		# shellcheck disable=SC2086
		initdb "${args[@]}" $POSTGRES_INITDB_ARGS -D "$DRS_INIT_DIR"
	fi
}

# Unix socket (only reachable inside the container): trust. TCP: passwords.
docker_setup_hba() {
	{
		printf '\n# drs/postgres: any address may connect over TCP with a password\n'
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >>"$DRS_INIT_DIR/pg_hba.conf"
	cat >"$DRS_INIT_DIR/postgresql.conf" <<-EOF
		# Not read: drs/postgres starts the server with -c config_file=$POSTGRES_CONFIG_FILE.
		# Put overrides in /etc/postgresql/conf.d/*.conf, use ALTER SYSTEM
		# (postgresql.auto.conf), or pass -c name=value arguments.
	EOF
}

# The server's own arguments: our config file and socket directory first, so
# that the user's -c arguments (later on the command line) win.
docker_server_args() {
	printf '%s\0' -c "config_file=$POSTGRES_CONFIG_FILE" -c "unix_socket_directories=$POSTGRES_SOCKET_DIR" "$@"
}

docker_temp_server_start() {
	local -a args
	mapfile -d '' args < <(docker_server_args "$@" -c "listen_addresses=" -p "${PGPORT:-5432}")
	docker_log "starting a temporary server (Unix socket only) for initialisation"
	DRS_TEMP_SERVER=1
	pg_ctl -D "$DRS_INIT_DIR" -o "$(printf '%q ' "${args[@]}")" -w -t 120 start
}

docker_temp_server_stop() {
	pg_ctl -D "$DRS_INIT_DIR" -m fast -w -t 120 stop
	DRS_TEMP_SERVER=
}

# psql against the temporary server, stopping at the first error.
docker_process_sql() {
	psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

docker_setup_db() {
	if [ "$POSTGRES_DB" != postgres ]; then
		local exists
		exists=$(docker_process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only --no-align \
			<<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
		if [ -z "$exists" ]; then
			docker_log "creating database $POSTGRES_DB"
			docker_process_sql --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
		fi
	fi
}

# Runs init files in the order given (the caller's glob sorts them):
# *.sh executed if executable, else sourced; *.sql and *.sql.gz through psql.
docker_process_init_files() {
	local f
	for f; do
		[ -e "$f" ] || continue
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					docker_log "running $f"
					"$f"
				else
					docker_log "sourcing $f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql)
				docker_log "running $f"
				docker_process_sql -f "$f"
				;;
			*.sql.gz)
				docker_log "running $f"
				gzip -dc "$f" | docker_process_sql
				;;
			*) docker_log "ignoring $f (not .sh, .sql or .sql.gz)" ;;
		esac
	done
}

# Move the finished cluster into $PGDATA; PG_VERSION last, the marker directory
# after it, so an interruption at any point leaves the marker in place.
docker_finish_init() {
	find "$DRS_INIT_DIR" -mindepth 1 -maxdepth 1 \! -name PG_VERSION -exec mv -t "$PGDATA" -- '{}' +
	sync "$PGDATA" || true
	mv -- "$DRS_INIT_DIR/PG_VERSION" "$PGDATA/PG_VERSION"
	sync "$PGDATA" || true
	rmdir -- "$DRS_INIT_DIR"
	sync "$PGDATA" || true
	docker_log "initialisation complete; starting the server"
}

docker_init_cluster() {
	trap 'docker_init_abort $?' EXIT
	docker_init_database_dir
	docker_setup_hba
	# init scripts find the temporary server through the usual libpq variables
	export PGHOST="$POSTGRES_SOCKET_DIR" PGPORT="${PGPORT:-5432}" PGUSER="$POSTGRES_USER" PGDATABASE="$POSTGRES_DB"
	docker_temp_server_start "$@"
	docker_setup_db
	PGDATA="$DRS_INIT_DIR" docker_process_init_files "$POSTGRES_INITDB_DIR"/*
	docker_temp_server_stop
	unset PGHOST PGPORT PGUSER PGDATABASE
	docker_finish_init
	trap - EXIT
}

_main() {
	if [ "${1:0:1}" = - ]; then
		set -- postgres "$@"
	fi
	if [ "$1" = postgres ] && ! docker_pg_wants_help "$@"; then
		shift
		docker_setup_env
		docker_drop_root postgres "$@"
		docker_verify_directories
		docker_refuse_unfinished_init
		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			docker_verify_minimum_env
			docker_init_cluster "$@"
		else
			docker_log "$PGDATA holds a database; skipping initialisation"
		fi
		local -a args
		mapfile -d '' args < <(docker_server_args "$@")
		set -- postgres "${args[@]}"
	fi
	exec "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	_main "$@"
fi
