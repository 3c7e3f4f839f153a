#!/usr/bin/env bash
# Regenerates the hashed, universal (Python 3.11+) lock files with uv:
#   services/web/requirements.txt      runtime (what the prod image installs)
#   services/web/requirements-dev.txt  runtime + test/lint/dev tools (the dev image, native venvs)
#   tests/requirements.txt             host-side test tools
#   bench/requirements.txt             host-side benchmark tools (make bench)
# Env: LOCK_UPGRADE (empty: keep every pin that still fits; "all"; or NAME,NAME: newer releases).
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV_VERSION=0.13.9
venv="$PWD/.cache/uv"
if [ ! -x "$venv/bin/uv" ]; then
	echo "lock: installing uv $UV_VERSION into $venv"
	python3 -m venv "$venv"
	"$venv/bin/pip" install -q "uv==$UV_VERSION"
fi
uv() { "$venv/bin/uv" "$@"; }

# uv keeps the versions a lock file already pins whenever they still fit, so that a lock changes
# only where pyproject.toml or a .in file changed. LOCK_UPGRADE takes newer releases: "all", or
# the packages named (comma-separated), within the ranges those files allow (docs/upgrades.md).
UPGRADE=()
case "${LOCK_UPGRADE:-}" in
	'') ;;
	all) UPGRADE=(--upgrade) ;;
	*) for package in $(printf '%s' "$LOCK_UPGRADE" | tr ',' ' '); do UPGRADE+=(--upgrade-package "$package"); done ;;
esac
compile() {
	uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		${UPGRADE[@]+"${UPGRADE[@]}"} "$@"
}

echo "lock: services/web/requirements.txt"
(cd services/web && compile pyproject.toml -o requirements.txt)
echo "lock: services/web/requirements-dev.txt"
(cd services/web && compile pyproject.toml --extra dev -o requirements-dev.txt)
echo "lock: tests/requirements.txt"
(cd tests && compile requirements.in -o requirements.txt)
echo "lock: bench/requirements.txt"
(cd bench && compile requirements.in -o requirements.txt)
echo "lock: done${LOCK_UPGRADE:+ (upgraded: $LOCK_UPGRADE)}; see 'git diff --stat', rebuild with 'make build'"
