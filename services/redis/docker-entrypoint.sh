#!/usr/bin/env bash
# Entrypoint of drs/redis: checks the password settings, then execs
# redis-server as PID 1 with the password handed over on its standard input
# (never on the command line, never in a file). Any other command is exec'd
# as given (e.g. `redis-cli`).
#
# The script can be sourced (e.g. by docker-healthcheck) to reuse its functions.
set -Eeuo pipefail

: "${REDIS_CONFIG_FILE:=/usr/local/etc/redis/redis.conf}"

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

docker_setup_env() {
	file_env REDIS_PASSWORD
	: "${REDIS_MAXMEMORY:=128mb}"
}

docker_verify_env() {
	if [ -z "$REDIS_PASSWORD" ]; then
		docker_die "REDIS_PASSWORD (or REDIS_PASSWORD_FILE) must be set to a non-empty password"
	fi
	case "$REDIS_PASSWORD" in
		*[[:cntrl:]]*) docker_die "REDIS_PASSWORD must not contain control characters (newlines, tabs)" ;;
	esac
	if [[ ! "$REDIS_MAXMEMORY" =~ ^[0-9]+([kKmMgG][bB]?)?$ ]]; then
		docker_die "REDIS_MAXMEMORY must be a size such as 128mb or 1gb (got '$REDIS_MAXMEMORY')"
	fi
}

docker_verify_data_dir() {
	if [ ! -w /data ]; then
		docker_die "/data is not writable by uid $(id -u): a new named volume gets this right by itself; chown a bind-mounted directory to $(id -u):$(id -g)"
	fi
}

# A config value in double quotes with \ and " escaped (redis' sdssplitargs).
docker_redis_quote() {
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

# The settings read from standard input (`redis-server FILE ... -`).
docker_stdin_config() {
	printf 'requirepass %s\n' "$(docker_redis_quote "$REDIS_PASSWORD")"
	printf 'maxmemory %s\n' "$REDIS_MAXMEMORY"
}

_main() {
	if [ "${1:0:1}" = - ]; then
		set -- redis-server "$@"
	fi
	if [ "$1" = redis-server ] && [ "${2:-}" != --version ] && [ "${2:-}" != -v ] && [ "${2:-}" != --help ]; then
		shift
		docker_setup_env
		docker_verify_env
		docker_verify_data_dir
		umask 0077
		local config
		config=$(docker_stdin_config)
		unset REDIS_PASSWORD
		# "-" must be the last argument: read more config from standard input.
		exec redis-server "$REDIS_CONFIG_FILE" "$@" - <<<"$config"
	fi
	exec "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	_main "$@"
fi
