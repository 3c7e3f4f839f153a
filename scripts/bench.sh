#!/usr/bin/env bash
# The benchmark behind `make bench`: the prod stack (compose project drs-bench) against the
# set-ups users would otherwise run, with wrk in a container on the stack's own network.
# See docs/benchmarks.md.
# BENCH_QUICK=1: one short round on a small dataset, only to check that the harness works.
# The harness is the Python package bench/ (python -m bench). Each run overwrites
# bench/results/{latest.json,latest.md,rps.png,p99.png} (BENCH_QUICK: .cache/bench-results/).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.cache/bench-venv"
export DRS_TAG="${DRS_TAG:-latest}"

log() { printf '[bench] %s\n' "$*"; }

ensure_venv() {
	local stamp="$VENV/.requirements.sha" want
	want=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
	if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		log "installing the benchmark's Python tools into $VENV (bench/requirements.txt)"
		rm -rf "$VENV"
		python3 -m venv "$VENV"
		"$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r bench/requirements.txt
		echo "$want" >"$stamp"
	fi
}

main() {
	ensure_venv
	if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
		log "building images (tag $DRS_TAG; cached builds are fast)"
		scripts/build.sh >/dev/null
	fi
	exec "$VENV/bin/python" -m bench
}

main "$@"
