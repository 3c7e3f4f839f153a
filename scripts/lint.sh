#!/usr/bin/env bash
# The file linters of `make test-lint`, one per call. The pre-commit hooks
# (.pre-commit-config.yaml) run these same commands, and `make test-lint` runs them through
# pre-commit, so the hooks and the tests cannot drift apart.
#   - ruff: ruff check of the Python code (RUFF_PATHS, each folder with its own ruff config)
#   - ruff-format: ruff format --check of the same
#   - shellcheck: every shell script, found by name (*.sh) or by a sh or bash shebang
#   - hadolint: every Dockerfile (.hadolint.yaml)
#   - docs: scripts/docs-check.py
#   - portability: scripts/portability-check.py (developer-path scripts: bash 3.2, BSD tools)
#   - workflow: .github/workflows/*.yml against GitHub's workflow schema (check-jsonschema)
#   - renovate: .github/renovate.json against Renovate's schema (check-jsonschema, vendored)
#   - shell-scripts, dockerfiles: list the files those linters check
# Tools: ruff from the dev image drs/web-dev:$DRS_TAG (the project's one ruff version; `make build`
# makes it); shellcheck, hadolint and check-jsonschema from .cache/venv (tests/requirements.txt;
# `make test-lint` installs them). Runs with macOS's bash 3.2 and BSD tools.
# Usage: scripts/lint.sh ruff|ruff-format|shellcheck|hadolint|docs|portability|workflow|renovate|shell-scripts|dockerfiles
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.cache/venv"
RUFF_PATHS=(services/web bench tests)

die() { printf 'lint: error: %s\n' "$*" >&2; exit 1; }

# The working tree's files (tracked, and new ones git does not ignore) that exist, matching the
# git pathspecs given (all when none).
files() {
	local f
	git ls-files -co --exclude-standard -- "$@" | while IFS= read -r f; do
		if [ -f "$f" ]; then printf '%s\n' "$f"; fi
	done
}

# Shell scripts wherever they are: by name (*.sh) or by their first line (a sh or bash shebang).
shell_scripts() {
	files | tr '\n' '\0' | xargs -0 awk '
		FNR == 1 && (FILENAME ~ /\.sh$/ || /^#!.*[\/ ](ba)?sh([[:space:]]|$)/) { print FILENAME }'
}

dockerfiles() { files '*Dockerfile'; }

workflows() { files '.github/workflows/*.yml' '.github/workflows/*.yaml'; }

renovate_config() { files .github/renovate.json; }

venv_tool() { # venv_tool NAME: the path of a lint tool in .cache/venv
	[ -x "$VENV/bin/$1" ] || die "$1 is not installed in $VENV: run 'make test-lint' once (it installs the lint tools)"
	printf '%s\n' "$VENV/bin/$1"
}

ruff() { # ruff ARGS...: the dev image's ruff over the working tree (read-only, no network)
	local image="drs/web-dev:${DRS_TAG:-latest}"
	docker image inspect "$image" >/dev/null 2>&1 || die "no image $image: run 'make build' first"
	docker run --rm --network none -v "$ROOT:/src:ro" -w /src "$image" ruff "$@" --no-cache "${RUFF_PATHS[@]}"
}

# with_files LISTER TOOL ARGS...: TOOL ARGS... and every file LISTER prints; fails when none.
with_files() {
	local lister=$1 tool f
	local -a found=()
	shift
	while IFS= read -r f; do found+=("$f"); done < <("$lister")
	[ "${#found[@]}" -gt 0 ] || die "no files for $1: $lister found none"
	tool=$(venv_tool "$1")
	shift
	"$tool" "$@" "${found[@]}"
}

main() {
	case "${1:-}" in
		ruff) ruff check ;;
		ruff-format) ruff format --check ;;
		shellcheck) with_files shell_scripts shellcheck ;;
		hadolint) with_files dockerfiles hadolint --config .hadolint.yaml ;;
		docs) scripts/docs-check.py ;;
		portability) scripts/portability-check.py ;;
		workflow) with_files workflows check-jsonschema --builtin-schema vendor.github-workflows ;;
		renovate) with_files renovate_config check-jsonschema --builtin-schema vendor.renovate ;;
		shell-scripts) shell_scripts ;;
		dockerfiles) dockerfiles ;;
		*) die "usage: $0 ruff|ruff-format|shellcheck|hadolint|docs|portability|workflow|renovate|shell-scripts|dockerfiles" ;;
	esac
}

main "$@"
