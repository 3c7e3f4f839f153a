#!/usr/bin/env bash
# The cluster test's node: dockerd as PID 1's child, stopped with the container (SIGTERM).
# Arguments go to dockerd (the test adds --insecure-registry and a second socket for the manager).
set -Eeuo pipefail

# containerd-shim and runc need a writable /run; a fresh PID namespace needs nothing else.
mkdir -p /run/docker /var/lib/docker
exec dockerd --storage-driver overlay2 --log-level warn "$@"
