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
# Roles: the cluster's superuser is `postgres`, with no password, reachable only
# over the Unix socket inside the container. POSTGRES_USER (unless it is
# `postgres`) is an ordinary role (LOGIN CREATEDB) that owns POSTGRES_DB and
# everything in it: the app can migrate, but SQL it runs cannot become a shell
# (COPY ... TO PROGRAM, untrusted languages need a superuser). A volume made by
# an earlier release, where POSTGRES_USER was the cluster's bootstrap
# superuser, is upgraded in place at start (docker_upgrade_roles).
#
# The script can be sourced (e.g. by docker-healthcheck) to reuse its functions.
set -Eeuo pipefail

DRS_INIT_MARKER=.drs-init-in-progress
# The cluster's superuser, and a role that exists only while an upgrade runs.
DRS_SUPERUSER=postgres
DRS_UPGRADE_ROLE=drs_upgrade
# The backup service's role for physical base backups (REPLICATION, nothing else), present and
# able to log in only while POSTGRES_BACKUP_PASSWORD is set (docs/backups.md, "Point-in-time
# recovery").
DRS_BACKUP_ROLE=drs_backup
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
	file_env POSTGRES_BACKUP_PASSWORD
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

# docker_temp_abort STATUS STOP_MODE WHAT: the end of a failed initialisation or
# upgrade (called through an EXIT trap): the temporary server is stopped, the
# failure named, and the container stops with the status (at least 1).
docker_temp_abort() {
	local status=$1 mode=$2 what=$3
	trap - EXIT
	[ "$status" != 0 ] || status=1
	if [ -n "${DRS_TEMP_SERVER:-}" ]; then
		pg_ctl -D "$DRS_TEMP_DATA" -m "$mode" -w stop >/dev/null 2>&1 || true
	fi
	docker_error "$what failed (exit status $status); ${*:4}"
	exit "$status"
}

# While initialising: a failure (or an init script calling exit) leaves the
# marker directory behind and the container stops.
docker_init_abort() {
	docker_temp_abort "$1" immediate "database initialisation" \
		"the volume is marked unfinished and later starts will refuse it: fix the cause, then remove the volume"
}

docker_init_database_dir() {
	docker_log "initialising a new cluster in $DRS_INIT_DIR"
	mkdir -m 0700 "$DRS_INIT_DIR"
	local -a args=(--username="$DRS_SUPERUSER" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD"
		--encoding=UTF8 --data-checksums)
	# POSTGRES_INITDB_ARGS is split on whitespace on purpose (it holds several flags);
	# the password reaches initdb through a pipe, never the command line. The superuser
	# gets it only when it is POSTGRES_USER (the official image's default).
	if [ -n "$POSTGRES_PASSWORD" ] && docker_app_is_superuser; then
		# shellcheck disable=SC2086
		initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS -D "$DRS_INIT_DIR"
	else
		# shellcheck disable=SC2086
		initdb "${args[@]}" $POSTGRES_INITDB_ARGS -D "$DRS_INIT_DIR"
	fi
}

# True when POSTGRES_USER is the superuser itself (POSTGRES_USER=postgres, the
# official image's behaviour): then there is no separate app role.
docker_app_is_superuser() { [ "$POSTGRES_USER" = "$DRS_SUPERUSER" ]; }

# Unix socket (only reachable inside the container): trust. TCP: passwords, and
# never the superuser (unless it is POSTGRES_USER).
docker_setup_hba() {
	{
		printf '\n# drs/postgres: any address may connect over TCP with a password\n'
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >>"$DRS_INIT_DIR/pg_hba.conf"
	docker_hba_reject_superuser "$DRS_INIT_DIR/pg_hba.conf"
	docker_hba_backup_role "$DRS_INIT_DIR/pg_hba.conf"
	cat >"$DRS_INIT_DIR/postgresql.conf" <<-EOF
		# Not read: drs/postgres starts the server with -c config_file=$POSTGRES_CONFIG_FILE.
		# Put overrides in /etc/postgresql/conf.d/*.conf, use ALTER SYSTEM
		# (postgresql.auto.conf), or pass -c name=value arguments.
	EOF
}

# First match wins in pg_hba.conf: this line on top keeps the superuser off TCP
# whatever follows. Idempotent (also run on every start of an existing volume).
docker_hba_reject_superuser() {
	local hba=$1 line="host all $DRS_SUPERUSER all reject"
	! docker_app_is_superuser || return 0
	grep -qx "$line" "$hba" && return 0
	docker_log "pg_hba.conf: the superuser $DRS_SUPERUSER may log in over the Unix socket only"
	{
		printf '# drs/postgres: the superuser only over the Unix socket (inside the container)\n'
		printf '%s\n' "$line"
		cat "$hba"
	} >"$hba.new"
	chmod 0600 "$hba.new"
	mv -f "$hba.new" "$hba"
}

# Replication connections (base backups) for the backup role only, with a password. Idempotent
# (also run on every start of an existing volume).
docker_hba_backup_role() {
	local hba=$1 line="host replication $DRS_BACKUP_ROLE all scram-sha-256"
	grep -qx "$line" "$hba" && return 0
	printf '# drs/postgres: base backups by the backup service (POSTGRES_BACKUP_PASSWORD)\n%s\n' "$line" >>"$hba"
}

# The backup role: LOGIN REPLICATION with POSTGRES_BACKUP_PASSWORD when it is set, NOLOGIN when
# not. Run against a temporary server as the superuser, at initialisation and every start.
docker_setup_backup_role() {
	local -a sql=(docker_superuser_sql "$DRS_SUPERUSER" --dbname postgres --set r="$DRS_BACKUP_ROLE")
	"${sql[@]}" <<-'SQL'
		SELECT format('CREATE ROLE %I NOLOGIN REPLICATION', :'r')
		WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'r') \gexec
	SQL
	if [ -n "${POSTGRES_BACKUP_PASSWORD:-}" ]; then
		# from the environment, never on a command line
		"${sql[@]}" <<<'\getenv password POSTGRES_BACKUP_PASSWORD
ALTER ROLE :"r" LOGIN REPLICATION PASSWORD :'"'password'"';'
	else
		"${sql[@]}" <<<'ALTER ROLE :"r" NOLOGIN PASSWORD NULL;'
	fi
}

# The server's own arguments: our config file and socket directory first, so
# that the user's -c arguments (later on the command line) win.
docker_server_args() {
	printf '%s\0' -c "config_file=$POSTGRES_CONFIG_FILE" -c "unix_socket_directories=$POSTGRES_SOCKET_DIR" "$@"
}

# docker_temp_server_start DATADIR [SERVER ARGS]: a server on the Unix socket only.
docker_temp_server_start() {
	local -a args
	DRS_TEMP_DATA=$1
	shift
	mapfile -d '' args < <(docker_server_args "$@" -c "listen_addresses=" -p "${PGPORT:-5432}")
	docker_log "starting a temporary server (Unix socket only) in $DRS_TEMP_DATA"
	DRS_TEMP_SERVER=1
	pg_ctl -D "$DRS_TEMP_DATA" -o "$(printf '%q ' "${args[@]}")" -w -t 120 start
}

docker_temp_server_stop() {
	pg_ctl -D "$DRS_TEMP_DATA" -m fast -w -t 120 stop
	DRS_TEMP_SERVER=
}

# psql against the temporary server as POSTGRES_USER, stopping at the first error.
docker_process_sql() {
	psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

# The same as the superuser (docker_superuser_sql ROLE: as ROLE, during an upgrade).
docker_superuser_sql() {
	local role=$1
	shift
	PGOPTIONS='-c client_min_messages=warning' psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --quiet \
		--tuples-only --no-align --username "$role" --dbname "$POSTGRES_DB" "$@"
}

# The app's role (unless POSTGRES_USER is the superuser) and its database, owned by it.
docker_setup_db() {
	local -a sql=(docker_superuser_sql "$DRS_SUPERUSER" --dbname postgres --set user="$POSTGRES_USER"
		--set db="$POSTGRES_DB")
	if ! docker_app_is_superuser; then
		docker_log "creating role $POSTGRES_USER (LOGIN CREATEDB, not a superuser)"
		if [ -n "$POSTGRES_PASSWORD" ]; then
			# from the environment, never on a command line
			"${sql[@]}" <<<'\getenv password POSTGRES_PASSWORD
CREATE ROLE :"user" LOGIN CREATEDB PASSWORD :'"'password'"';'
		else
			"${sql[@]}" <<<'CREATE ROLE :"user" LOGIN CREATEDB;'
		fi
	fi
	if [ -z "$("${sql[@]}" <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")" ]; then
		docker_log "creating database $POSTGRES_DB owned by $POSTGRES_USER"
		"${sql[@]}" <<<'CREATE DATABASE :"db" OWNER :"user";'
	else
		"${sql[@]}" <<<'ALTER DATABASE :"db" OWNER TO :"user";'
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
	docker_temp_server_start "$DRS_INIT_DIR" "$@"
	docker_setup_db
	docker_setup_backup_role
	PGDATA="$DRS_INIT_DIR" docker_process_init_files "$POSTGRES_INITDB_DIR"/*
	docker_temp_server_stop
	unset PGHOST PGPORT PGUSER PGDATABASE
	docker_finish_init
	trap - EXIT
}

# Ownership of everything in the current database moves from the bootstrap
# superuser (oid 10) to the app role; its name and the superuser's new name come
# in as the settings drs.app and drs.superuser. One statement, so one
# transaction: the roles are renamed, created and handed the database together,
# or nothing changes. Objects in system schemas and extension members stay.
DRS_UPGRADE_SQL=$(cat <<-'SQL'
	DO $upgrade$
	DECLARE
		app text := current_setting('drs.app');
		su text := current_setting('drs.superuser');
		pw text;
		r record;
	BEGIN
		SELECT rolpassword INTO pw FROM pg_authid WHERE oid = 10;
		EXECUTE format('ALTER ROLE %I RENAME TO %I', app, su);
		EXECUTE format('ALTER ROLE %I PASSWORD NULL', su);
		-- The stored SCRAM (or MD5, salted with the same name) verifier, as it was.
		EXECUTE format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', app, pw);
		EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), app);
		CREATE TEMP VIEW drs_user_objects AS
			SELECT n.oid AS nsp FROM pg_namespace n
			WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema';
		FOR r IN SELECT nspname FROM pg_namespace WHERE nspowner = 10
				AND oid IN (SELECT nsp FROM drs_user_objects) LOOP
			EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, app);
		END LOOP;
		-- Tables first: their indexes and owned (serial, identity) sequences follow them.
		FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
				WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
				AND c.relnamespace IN (SELECT nsp FROM drs_user_objects)
				AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
					AND d.objid = c.oid AND d.deptype = 'e') LOOP
			EXECUTE format('ALTER %s %s OWNER TO %I', CASE r.relkind WHEN 'v' THEN 'VIEW'
				WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.name, app);
		END LOOP;
		FOR r IN SELECT c.oid::regclass AS name FROM pg_class c
				WHERE c.relowner = 10 AND c.relkind = 'S'
				AND c.relnamespace IN (SELECT nsp FROM drs_user_objects)
				AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
					AND d.objid = c.oid AND d.deptype = 'e') LOOP
			EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', r.name, app);
		END LOOP;
		FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
				WHERE p.proowner = 10 AND p.pronamespace IN (SELECT nsp FROM drs_user_objects)
				AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
					AND d.objid = p.oid AND d.deptype = 'e') LOOP
			EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.name, app);
		END LOOP;
		-- Domains, enums, ranges, stand-alone composite types (array and row types follow).
		FOR r IN SELECT t.oid::regtype AS name, t.typtype FROM pg_type t
				WHERE t.typowner = 10 AND t.typnamespace IN (SELECT nsp FROM drs_user_objects)
				AND (t.typtype IN ('d', 'e', 'r')
					OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
				AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
					AND d.objid = t.oid AND d.deptype = 'e') LOOP
			EXECUTE format('ALTER %s %s OWNER TO %I', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
				r.name, app);
		END LOOP;
		FOR r IN SELECT format('COLLATION %I.%I', n.nspname, c.collname) AS name FROM pg_collation c
				JOIN pg_namespace n ON n.oid = c.collnamespace
				WHERE c.collowner = 10 AND n.oid IN (SELECT nsp FROM drs_user_objects)
			UNION ALL SELECT format('CONVERSION %I.%I', n.nspname, c.conname) FROM pg_conversion c
				JOIN pg_namespace n ON n.oid = c.connamespace
				WHERE c.conowner = 10 AND n.oid IN (SELECT nsp FROM drs_user_objects)
			UNION ALL SELECT format('STATISTICS %I.%I', n.nspname, s.stxname) FROM pg_statistic_ext s
				JOIN pg_namespace n ON n.oid = s.stxnamespace
				WHERE s.stxowner = 10 AND n.oid IN (SELECT nsp FROM drs_user_objects)
			UNION ALL SELECT format('TEXT SEARCH CONFIGURATION %I.%I', n.nspname, c.cfgname) FROM pg_ts_config c
				JOIN pg_namespace n ON n.oid = c.cfgnamespace
				WHERE c.cfgowner = 10 AND n.oid IN (SELECT nsp FROM drs_user_objects)
			UNION ALL SELECT format('TEXT SEARCH DICTIONARY %I.%I', n.nspname, d.dictname) FROM pg_ts_dict d
				JOIN pg_namespace n ON n.oid = d.dictnamespace
				WHERE d.dictowner = 10 AND n.oid IN (SELECT nsp FROM drs_user_objects)
			UNION ALL SELECT format('OPERATOR %s', o.oid::regoperator) FROM pg_operator o
				WHERE o.oprowner = 10 AND o.oprnamespace IN (SELECT nsp FROM drs_user_objects)
			UNION ALL SELECT format('LARGE OBJECT %s', l.oid) FROM pg_largeobject_metadata l
				WHERE l.lomowner = 10 LOOP
			EXECUTE format('ALTER %s OWNER TO %I', r.name, app);
		END LOOP;
		-- Extensions (pg_trgm, made by a migration while the app was the superuser): there is no
		-- ALTER EXTENSION ... OWNER, so the catalog is set as CREATE EXTENSION by a non-superuser
		-- sets it (the extension the app's, its member objects the superuser's), with the owner
		-- dependency that keeps the role from being dropped while it owns one.
		FOR r IN SELECT oid FROM pg_extension WHERE extowner = 10 AND extname <> 'plpgsql' LOOP
			UPDATE pg_extension SET extowner = (SELECT oid FROM pg_roles WHERE rolname = app) WHERE oid = r.oid;
			INSERT INTO pg_shdepend (dbid, classid, objid, objsubid, refclassid, refobjid, deptype)
			SELECT d.oid, 'pg_extension'::regclass, r.oid, 0, 'pg_authid'::regclass, a.oid, 'o'
			FROM pg_database d, pg_roles a WHERE d.datname = current_database() AND a.rolname = app;
		END LOOP;
		DROP VIEW drs_user_objects;
	END
	$upgrade$;
SQL
)

# While upgrading: nothing changed (the upgrade is one transaction), the next
# start tries again.
docker_upgrade_abort() {
	docker_temp_abort "$1" fast "upgrading the roles of this volume" \
		"nothing was changed, the next start tries again (see above)"
}

# The bootstrap superuser's name (oid 10), asked as the superuser or, on a volume
# made by an earlier release, as POSTGRES_USER (which was that superuser).
docker_bootstrap_role() {
	local role
	for role in "$DRS_SUPERUSER" "$POSTGRES_USER"; do
		docker_superuser_sql "$role" --dbname template1 -c 'SELECT rolname FROM pg_roles WHERE oid = 10' \
			2>/dev/null && return 0
	done
	docker_die "cannot connect over the Unix socket as $DRS_SUPERUSER or $POSTGRES_USER to check the roles"
}

# A volume made by an earlier release: POSTGRES_USER is the bootstrap superuser,
# which PostgreSQL (16+) cannot demote. It is renamed to postgres (no password,
# socket only), and a new POSTGRES_USER with its stored password, LOGIN CREATEDB,
# takes over POSTGRES_DB and every object in it. A temporary superuser does the
# renaming (a session cannot rename its own role); it is dropped at the end, or
# on the next start if this one was interrupted.
docker_upgrade_app_role() {
	docker_log "upgrading roles: $POSTGRES_USER is the cluster's superuser; it becomes $DRS_SUPERUSER (Unix socket only) and a new non-superuser $POSTGRES_USER (same password) takes over database $POSTGRES_DB"
	if [ -n "$(docker_superuser_sql "$POSTGRES_USER" --dbname template1 --set su="$DRS_SUPERUSER" \
		<<<"SELECT 1 FROM pg_roles WHERE rolname = :'su'")" ]; then
		docker_die "cannot upgrade: a role named $DRS_SUPERUSER exists beside the superuser $POSTGRES_USER; rename or drop it (docker exec ... psql -U $POSTGRES_USER), then start again"
	fi
	docker_superuser_sql "$POSTGRES_USER" --dbname template1 --set r="$DRS_UPGRADE_ROLE" <<-'SQL'
		SELECT format('CREATE ROLE %I SUPERUSER LOGIN', :'r')
		WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'r') \gexec
	SQL
	docker_superuser_sql "$DRS_UPGRADE_ROLE" --set app="$POSTGRES_USER" --set su="$DRS_SUPERUSER" >/dev/null \
		<<<"SELECT set_config('drs.app', :'app', false), set_config('drs.superuser', :'su', false);
$DRS_UPGRADE_SQL"
	docker_log "upgraded: $POSTGRES_USER owns $POSTGRES_DB and its objects and is not a superuser"
}

# Every start of an existing volume: the app's role must not be a superuser.
# Idempotent; a no-op (one short socket-only server start) once upgraded.
docker_upgrade_roles() {
	! docker_app_is_superuser || return 0
	docker_hba_reject_superuser "$PGDATA/pg_hba.conf"
	docker_hba_backup_role "$PGDATA/pg_hba.conf"
	trap 'docker_upgrade_abort $?' EXIT
	export PGHOST="$POSTGRES_SOCKET_DIR" PGPORT="${PGPORT:-5432}"
	docker_temp_server_start "$PGDATA" "$@"
	local bootstrap
	bootstrap=$(docker_bootstrap_role)
	if [ "$bootstrap" = "$POSTGRES_USER" ]; then
		docker_upgrade_app_role
		bootstrap=$DRS_SUPERUSER
	fi
	if [ "$bootstrap" = "$DRS_SUPERUSER" ]; then
		docker_superuser_sql "$DRS_SUPERUSER" --dbname template1 --set app="$POSTGRES_USER" \
			--set r="$DRS_UPGRADE_ROLE" <<-'SQL'
			SELECT format('DROP ROLE %I', :'r') FROM pg_roles WHERE rolname = :'r' \gexec
			SELECT format('ALTER ROLE %I NOSUPERUSER', :'app') FROM pg_roles
			WHERE rolname = :'app' AND rolsuper \gexec
		SQL
		docker_setup_backup_role
	else
		docker_log "WARNING: the cluster's superuser is $bootstrap (made elsewhere); roles left as they are"
	fi
	docker_temp_server_stop
	unset PGHOST PGPORT
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
			if [ -e "$PGDATA/recovery.signal" ]; then
				# A point-in-time restore (pitr-prepare): a temporary server would start the
				# recovery itself, read-only; the roles come with the restored cluster.
				docker_log "$PGDATA/recovery.signal: recovering from archived WAL; roles left as they are"
			else
				docker_upgrade_roles "$@"
			fi
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
