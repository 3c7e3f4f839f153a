#!/usr/bin/env bash
# Builds the debian:trixie-slim image locally with debootstrap, the way the official
# image is made (minbase; trixie, trixie-updates and trixie-security sources; the
# slim variant's dpkg excludes for docs, man pages and locales; no apt lists or
# .deb cache), for machines where Docker Hub cannot be reached.
#
# Usage: scripts/build-base-image.sh [TAG]   (default tag: debian:trixie-slim)
# Env:   DEBIAN_MIRROR   (default http://deb.debian.org/debian)
#        DEBIAN_SECURITY (default http://deb.debian.org/debian-security)
set -Eeuo pipefail

TAG="${1:-debian:trixie-slim}"
SUITE=trixie
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[base-image] %s\n' "$*"; }
die() { printf '[base-image] error: %s\n' "$*" >&2; exit 1; }

base_require_tools() {
	[ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root or pull $TAG from a registry"
	if ! command -v debootstrap >/dev/null; then
		command -v apt-get >/dev/null || die "debootstrap is missing; install it (apt-get install debootstrap)"
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
	fi
	[ -e /usr/share/debootstrap/scripts/$SUITE ] || die "this debootstrap does not know '$SUITE'; upgrade debootstrap"
	[ -r "$KEYRING" ] || die "missing $KEYRING; install debian-archive-keyring"
}

# dpkg and apt settings of the official slim image: keep documentation, man pages and
# translations out of every later 'apt-get install' too, and never keep a .deb cache.
base_write_slim_config() {
	local root=$1
	cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
# slim: no documentation, man pages or translations (copyright files are kept)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
	cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
	echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
	echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
	printf 'Apt::AutoRemove::SuggestsImportant "false";\n' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
}

base_write_sources() {
	local root=$1
	rm -f "$root/etc/apt/sources.list"
	cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: $KEYRING

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: $KEYRING
SRC
}

# Remove what the slim config would have kept out had it been there from the start,
# and every cache and log the bootstrap left behind.
base_slim_down() {
	local root=$1
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/*
	find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
		"$root"/var/lib/dpkg/*-old "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* \
		"$root"/debootstrap
	: >"$root/etc/machine-id"
	echo 'debian' >"$root/etc/hostname"
}

main() {
	base_require_tools
	work=$(mktemp -d /var/tmp/trixie-rootfs.XXXXXX)
	trap 'mountpoint -q "$work/rootfs/proc" && umount "$work/rootfs/proc"; rm -rf "$work"' EXIT
	local root="$work/rootfs"
	log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
	debootstrap --variant=minbase --keyring="$KEYRING" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
		|| { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	log "applying the slim variant's dpkg/apt settings and sources (updates, security)"
	base_write_slim_config "$root"
	base_write_sources "$root"
	log "installing updates from $SUITE-updates and $SUITE-security"
	mount -t proc proc "$root/proc"
	chroot "$root" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade' >"$work/upgrade.log" 2>&1 \
		|| { tail -20 "$work/upgrade.log" >&2; die "apt-get upgrade in the new root failed"; }
	umount "$root/proc"
	log "removing docs, man pages, locales, apt lists and caches"
	base_slim_down "$root"
	log "importing as $TAG"
	tar --numeric-owner --xattrs -C "$root" -c . \
		| docker import --change 'CMD ["bash"]' - "$TAG" >/dev/null
	log "done: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%s %.0f MB", "'"$TAG"'", $1/1e6}')"
}

main "$@"
