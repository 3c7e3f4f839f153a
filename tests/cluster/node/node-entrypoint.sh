#!/usr/bin/env bash
# The cluster test's node: dockerd, stopped with the container (SIGTERM). Arguments go to dockerd
# (the test adds --insecure-registry and, on the manager, a second socket for the host).
#
# The node runs without --privileged where the host's Docker cannot grant every capability (a
# host whose own bounding set lacks one: "unable to apply caps"): the test gives it every
# capability the host has, no seccomp or AppArmor profile, unmasked /proc and every device, and
# here /sys and the cgroup hierarchies are made writable again, as --privileged would leave them.
set -Eeuo pipefail

log() { printf '[node] %s\n' "$*" >&2; }

node_writable_sys() {
	local target fstype
	mount -o remount,rw /sys 2>/dev/null || log "/sys stays read-only"
	while read -r _ target fstype _; do
		case "$fstype" in
			cgroup | cgroup2) mount -o remount,bind,rw "$target" 2>/dev/null \
				|| mount -o remount,rw "$target" 2>/dev/null || log "$target stays read-only" ;;
			tmpfs) [ "$target" != /sys/fs/cgroup ] || mount -o remount,rw "$target" ;;
		esac
	done </proc/self/mounts
}

node_writable_sys
mkdir -p /run/docker /var/lib/docker
exec dockerd --storage-driver overlay2 --log-level warn "$@"
