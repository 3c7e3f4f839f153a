#!/usr/bin/env bash
# The test runner behind `make test` (and CI). Stages, run in this order by `all`:
#   lint     ruff (check + format), hadolint, shellcheck, compose config (dev, prod),
#            nginx -t, gunicorn --check-config, makemigrations --check, check --deploy
#   images   contract tests of the postgres and redis images (tests/images)
#   django   the Django suite inside the web dev image against the stack's Postgres + Redis
#   e2e      the prod stack under its own project name on a free 127.0.0.1 port; tests over
#            HTTP through nginx (tests/e2e); torn down always, also on failure. Later host-side
#            suites (STACK_SUITES) share that stack.
# Ends with one line "N passed, N failed" (pytest cases + lint checks) and a non-zero exit
# status when anything failed.
#   tls      HTTPS with the run's own CA, HTTP->HTTPS redirect, ACME webroot, TLS 1.1 refused
#   backup   backup, verification, restore, truncated backup refused, rotation (disruptive)
#   deploy   make deploy under load with zero failed requests, then make rollback (disruptive)
#   bench    make bench BENCH_QUICK=1 (last in `all`): checks the benchmark harness works, never speed
# Usage: scripts/test.sh [all|lint|images|django|e2e|hardening|fuzz|faults|tls|backup|deploy|bench|clean]
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DRS_TAG="${DRS_TAG:-latest}"
export BUILD_CA_BUNDLE="${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[ -r "$BUILD_CA_BUNDLE" ] || BUILD_CA_BUNDLE=/dev/null
# TEST_RESULTS: another folder, so that runs side by side do not wipe each other's results.
RESULTS="${TEST_RESULTS:-$ROOT/.cache/test-results}"
export TEST_RESULTS="$RESULTS"
VENV="$ROOT/.cache/venv"
RUN_ID="$$"
# Suites that share one prod stack in `all`, in order (destructive ones last).
STACK_SUITES=(e2e hardening fuzz tls backup deploy faults)

log() { printf '\n\033[1m[test] %s\033[0m\n' "$*"; }

# ---- bookkeeping: every check and every pytest run leaves a result in $RESULTS -------------
results_reset() { rm -rf "$RESULTS"; mkdir -p "$RESULTS"; chmod 0777 "$RESULTS"; }

check() { # check NAME CMD...: run one lint-style check, record pass/fail
	local name=$1; shift
	if "$@" >"$RESULTS/check.log" 2>&1; then
		printf '  PASS  %s\n' "$name"
		printf 'pass\t%s\n' "$name" >>"$RESULTS/checks.tsv"
	else
		printf '  FAIL  %s\n' "$name"
		sed 's/^/        /' "$RESULTS/check.log" | tail -40
		printf 'fail\t%s\n' "$name" >>"$RESULTS/checks.tsv"
	fi
}

summary() {
	python3 - "$RESULTS" <<'PY'
import pathlib, sys, xml.etree.ElementTree as ET
results = pathlib.Path(sys.argv[1])
passed = failed = skipped = 0
for xml in sorted(results.glob("*.xml")):
    for suite in ET.parse(xml).getroot().iter("testsuite"):
        t, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += t - f - e - s; failed += f + e; skipped += s
        print(f"  {xml.stem:<8} {t - f - e - s} passed, {f + e} failed, {s} skipped")
checks = results / "checks.tsv"
if checks.exists():
    rows = [line.split("\t", 1) for line in checks.read_text().splitlines() if line]
    p = sum(1 for r in rows if r[0] == "pass"); f = len(rows) - p
    passed += p; failed += f
    print(f"  {'checks':<8} {p} passed, {f} failed")
for missing in sorted(results.glob("*.missing")):
    failed += 1
    print(f"  {missing.stem:<8} did not produce results (counted as 1 failed)")
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed or passed == 0 else 0)
PY
}

# ---- tools ------------------------------------------------------------------------------------
ensure_venv() {
	local stamp="$VENV/.requirements.sha"
	local want; want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
	if [ ! -x "$VENV/bin/pytest" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		log "installing host test tools into $VENV (tests/requirements.txt)"
		rm -rf "$VENV"
		python3 -m venv "$VENV"
		"$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r tests/requirements.txt
		echo "$want" >"$stamp"
	fi
}

ensure_images() {
	log "building images (tag $DRS_TAG)"
	scripts/build.sh
}

pytest_run() { # pytest_run STAGE ARGS...: host pytest with a junit file per stage
	local stage=$1; shift
	"$VENV/bin/pytest" -p no:cacheprovider --junitxml="$RESULTS/$stage.xml" "$@" || true
	[ -s "$RESULTS/$stage.xml" ] || touch "$RESULTS/$stage.missing"
}

# ---- stages -------------------------------------------------------------------------------------
stage_lint() {
	log "lint"
	local dev="drs/web-dev:$DRS_TAG" prod="drs/web:$DRS_TAG" f
	local -a dockerfiles scripts
	mapfile -t dockerfiles < <(git ls-files -co --exclude-standard '*Dockerfile')
	mapfile -t scripts < <(git ls-files -co --exclude-standard '*.sh' .ci/run)
	check "ruff check" docker run --rm --network none "$dev" ruff check --no-cache .
	check "ruff format --check" docker run --rm --network none "$dev" ruff format --no-cache --check .
	for f in "${dockerfiles[@]}"; do
		check "hadolint $f" "$VENV/bin/hadolint" --config .hadolint.yaml "$f"
	done
	check "shellcheck (${#scripts[@]} scripts)" "$VENV/bin/shellcheck" "${scripts[@]}"
	check "compose config (dev)" docker compose --env-file compose/dev.env -f docker-compose.yml -f docker-compose.dev.yml config -q
	check "compose config (prod)" env DRS_ENV_FILE=compose/prod.env.example docker compose \
		--env-file compose/prod.env.example -f docker-compose.yml -f docker-compose.prod.yml config -q
	check "nginx -t (nginx image)" docker run --rm --network none --add-host web:127.0.0.1 \
		--read-only --tmpfs /tmp:uid=33,gid=33 -e NGINX_UPSTREAM_WATCH=0 "drs/nginx:$DRS_TAG" nginx -e stderr -t
	rm -rf "$RESULTS/lint-certs"
	scripts/certs-selfsigned.sh localhost "$RESULTS/lint-certs" >/dev/null
	check "nginx -t (nginx image, HTTPS mode)" docker run --rm --network none --add-host web:127.0.0.1 \
		--read-only --tmpfs /tmp:uid=33,gid=33 -e NGINX_UPSTREAM_WATCH=0 -v "$RESULTS/lint-certs:/etc/nginx/certs:ro" \
		"drs/nginx:$DRS_TAG" nginx -e stderr -t
	check "gunicorn --check-config (prod web image)" docker run --rm --network none \
		-e DJANGO_SECRET_KEY=lint-only-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL \
		-e DJANGO_ALLOWED_HOSTS=localhost -e DATABASE_URL=postgres://u:p@db/x "$prod" gunicorn --check-config
	check "makemigrations --check" docker run --rm --network none -e DJANGO_DEBUG=1 "$dev" \
		python manage.py makemigrations --check --dry-run
	# As deployed with TLS (nginx terminates HTTPS; Django redirects and sends HSTS too).
	check "check --deploy --fail-level WARNING (prod env with TLS)" docker run --rm --network none \
		--env-file compose/prod.env.example -e DJANGO_SECURE_SSL_REDIRECT=1 -e DJANGO_HSTS_SECONDS=31536000 \
		-e DJANGO_SECRET_KEY="lint-only-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" \
		-e DJANGO_DEBUG=0 -e DATABASE_URL=postgres://u:p@db/x -e REDIS_URL=redis://:p@redis:6379/1 \
		"$prod" python manage.py check --deploy --fail-level WARNING
	check "docs list every Make target and variable" scripts/docs-check.py
	check "OpenAPI schema without warnings" docker run --rm --network none -e DJANGO_DEBUG=1 "$dev" \
		python manage.py spectacular --fail-on-warn --validate --file /dev/null
}

stage_images() {
	log "image contract tests (postgres, redis)"
	DRS_POSTGRES_IMAGE="drs/postgres:$DRS_TAG" DRS_REDIS_IMAGE="drs/redis:$DRS_TAG" \
		pytest_run images tests/images -q
}

# The Django suite, in the dev image, against a throwaway Postgres + Redis of the stack.
stage_django() {
	log "Django suite against PostgreSQL and Redis"
	local project="drs-test-$RUN_ID"
	local -a compose=(docker compose -p "$project" --env-file compose/dev.env -f docker-compose.yml -f compose/test.yml)
	# shellcheck disable=SC2064 # expand now: the trap must remove this very project
	trap "${compose[*]} down -v --remove-orphans >/dev/null 2>&1 || true" RETURN
	"${compose[@]}" up -d --wait postgres redis
	"${compose[@]}" run --rm -v "$RESULTS:/results" pytest \
		pytest -p no:cacheprovider -q --junitxml=/results/django.xml || true
	[ -s "$RESULTS/django.xml" ] || touch "$RESULTS/django.missing"
}

# Host-side suites against the prod stack, as `make prod-up` runs it, on a free loopback port:
# tests/<suite> for each suite named, in order, all on one stack (destructive suites last).
# Torn down always, also on failure; its logs are kept when a suite failed.
stage_stack() {
	local project="drs-e2e-$RUN_ID" suite
	# The stack's env file and certificates live outside $RESULTS, which a concurrent run's
	# results_reset would delete under the stack's feet; removed at teardown.
	STACK_DIR="$ROOT/.cache/$project"
	local env_file="$STACK_DIR/e2e.env"
	rm -rf "$STACK_DIR"
	mkdir -p "$STACK_DIR"
	log "prod stack for: $*"
	scripts/prod-env.sh "$env_file" >/dev/null
	# Free ports chosen by Docker, on loopback only; HTTPS with a CA made for this run.
	sed -i -e 's/^HTTP_PORT=.*/HTTP_PORT=/' -e 's/^HTTPS_PORT=.*/HTTPS_PORT=/' \
		-e 's/^HTTP_BIND=.*/HTTP_BIND=127.0.0.1/' "$env_file"
	scripts/certs-selfsigned.sh localhost "$STACK_DIR/certs" >/dev/null
	printf 'TLS_CERTS_DIR=%s\n' "$STACK_DIR/certs" >>"$env_file"
	STACK_COMPOSE=(env "DRS_ENV_FILE=$env_file" docker compose -p "$project" --env-file "$env_file"
		-f docker-compose.yml -f docker-compose.prod.yml)
	trap stack_teardown RETURN
	local start; start=$(date +%s)
	if ! "${STACK_COMPOSE[@]}" up -d --wait --wait-timeout 180; then
		"${STACK_COMPOSE[@]}" ps -a
		"${STACK_COMPOSE[@]}" logs --tail=80
		for suite in "$@"; do touch "$RESULTS/$suite.missing"; done
		return
	fi
	echo "prod stack healthy in $(( $(date +%s) - start ))s"
	export E2E_PROJECT="$project" E2E_ENV_FILE="$env_file" E2E_CA_BUNDLE="$STACK_DIR/certs/ca.pem"
	E2E_BASE_URL="https://$("${STACK_COMPOSE[@]}" port nginx 8443)"
	E2E_HTTP_URL="http://$("${STACK_COMPOSE[@]}" port nginx 8080)"
	export E2E_BASE_URL E2E_HTTP_URL
	for suite in "$@"; do
		log "suite: $suite"
		pytest_run "$suite" "tests/$suite" -q
	done
}

stack_teardown() {
	trap - RETURN
	if compgen -G "$RESULTS/*.missing" >/dev/null || grep -qs '<failure\|<error' "$RESULTS"/*.xml; then
		"${STACK_COMPOSE[@]}" logs --tail=100 >"$RESULTS/stack.log" 2>&1 || true
		echo "stack logs: $RESULTS/stack.log"
	fi
	"${STACK_COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$STACK_DIR"
}

# The benchmark harness end to end on a small dataset, one short round, under its own project;
# a check that it runs and writes its results (BENCH_QUICK=1), never an assertion on speed.
stage_bench_quick() {
	local name="bench harness (make bench BENCH_QUICK=1)"
	log "benchmark harness, quick: checks it works, never speed"
	if BENCH_QUICK=1 BENCH_SKIP_BUILD=1 BENCH_PROJECT="drs-bench-test-$RUN_ID" BENCH_OUT="$RESULTS/bench" \
		scripts/bench.sh; then
		printf '  PASS  %s\n' "$name"
		printf 'pass\t%s\n' "$name" >>"$RESULTS/checks.tsv"
	else
		printf '  FAIL  %s\n' "$name"
		printf 'fail\t%s\n' "$name" >>"$RESULTS/checks.tsv"
	fi
}

stage_clean() {
	local p
	for p in $(docker compose ls -a --format json 2>/dev/null | python3 -c \
		'import json,sys; [print(x["Name"]) for x in json.load(sys.stdin) if x["Name"].startswith(("drs-test-","drs-e2e-","drs-bench-test-"))]'); do
		echo "removing leftover test stack $p"
		docker compose -p "$p" down -v --remove-orphans >/dev/null 2>&1 || true
	done
}

main() {
	local what="${1:-all}"
	if [ "$what" = clean ]; then
		stage_clean
		return
	fi
	scripts/docker-setup.sh
	results_reset
	ensure_venv
	ensure_images
	case "$what" in
		all)
			stage_lint
			stage_images
			stage_django
			stage_stack "${STACK_SUITES[@]}"
			stage_bench_quick
			;;
		lint | images | django) "stage_$what" ;;
		bench) stage_bench_quick ;;
		e2e | tls | backup | deploy) stage_stack "$what" ;;
		faults | fuzz | hardening) stage_stack "$what" ;;
		*) echo "usage: $0 [all|lint|images|django|e2e|hardening|fuzz|faults|tls|backup|deploy|bench|clean]" >&2; exit 64 ;;
	esac
	log "summary"
	summary
}

main "$@"
