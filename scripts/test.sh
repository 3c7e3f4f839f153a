#!/usr/bin/env bash
# The test runner behind `make test` (and CI). Stages, run in this order by `all`:
#   lint     the pre-commit hooks, each run through pre-commit (.pre-commit-config.yaml:
#            ruff check + format, hadolint, every shell script through shellcheck, docs-check,
#            portability of developer scripts, the GitHub workflow's and Renovate config's
#            schemas); compose config
#            (dev, prod), nginx -t, gunicorn --check-config, the OpenAPI schema
#   images   contract tests of the postgres and redis images (tests/images)
#   django   the Django suite inside the web dev image against the stack's Postgres + Redis
#   e2e      the prod stack under its own project name on a free 127.0.0.1 port; tests over
#            HTTP through nginx (tests/e2e); torn down always, also on failure. Later host-side
#            suites (STACK_SUITES) share that stack.
#   abuse    hostile traffic through nginx: search bombs, login brute force, export floods,
#            slow clients, token revocation, least privilege; each case records its figure
#   tls      HTTPS with the run's own CA, HTTP->HTTPS redirect, ACME webroot, TLS 1.1 refused
#   backup   backup, verification, restore, truncated backup refused, rotation, off-site copies to an
#            SFTP server on the stack's offsite network (disruptive); point-in-time restore and the
#            rebuild drill on stacks of their own (tests/backup/test_drill.py)
#   deploy   make deploy under load with zero failed requests, then make rollback (disruptive)
#   swarm    the prod stack on a single-node Docker Swarm made by the suite (tests/swarm): deploy,
#            smoke through nginx, rolling update, automatic rollback, scale, secret rotation
#            under load; the swarm is left afterwards, also on failure. In `all` after the
#            stack suites (their stack is down by then), alone: a swarm changes Docker's networks
#   swarm-cluster (not in `all`) the prod stack on a 3-node swarm of containers made by the
#            suite (tests/cluster): registry, smoke, rolling update, drain and node loss under load
#   bench    make bench BENCH_QUICK=1 (last in `all`): checks the benchmark harness works, never speed
#   dev      `make dev` itself, from a copy of the tree under its own project name (tests/dev);
#            in `all` it runs after django, before the prod stack
# The verdict (scripts/test-verdict.py) passes only on a full pass: every stage's runner exited 0,
# ran at least the tests tests/expected-counts.txt names, and skipped none not listed in
# tests/allowed-skips.txt. It ends with "N passed, N failed"; any "FAIL stage ..." line above it
# names what failed, and the exit status is non-zero.
# Usage: scripts/test.sh [all|lint|images|django|dev|e2e|hardening|fuzz|abuse|faults|tls|backup|deploy|swarm|swarm-cluster|bench|clean]
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DRS_TAG="${DRS_TAG:-latest}"
# TEST_RESULTS: another folder, so that runs side by side do not wipe each other's results.
RESULTS="${TEST_RESULTS:-$ROOT/.cache/test-results}"
export TEST_RESULTS="$RESULTS"
VENV="$ROOT/.cache/venv"
RUN_ID="$$"
# Suites that share one prod stack in `all`, in order (destructive ones last).
STACK_SUITES=(e2e hardening fuzz abuse tls backup deploy faults)

log() { printf '\n\033[1m[test] %s\033[0m\n' "$*"; }

# ---- bookkeeping: every check and every pytest run leaves a result in $RESULTS -------------
results_reset() { rm -rf "$RESULTS"; mkdir -p "$RESULTS"; chmod 0777 "$RESULTS"; }

stage_status() { # stage_status STAGE STATUS: what the stage's runner exited with ("-": never ran)
	printf '%s\t%s\n' "$1" "$2" >>"$RESULTS/stages.tsv"
}

check() { # check NAME CMD...: run one lint-style check of stage $CURRENT_STAGE, record pass/fail
	local name=$1; shift
	if "$@" >"$RESULTS/check.log" 2>&1; then
		printf '  PASS  %s\n' "$name"
		printf '%s\tpass\t%s\n' "$CURRENT_STAGE" "$name" >>"$RESULTS/checks.tsv"
	else
		printf '  FAIL  %s\n' "$name"
		sed 's/^/        /' "$RESULTS/check.log" | tail -40
		printf '%s\tfail\t%s\n' "$CURRENT_STAGE" "$name" >>"$RESULTS/checks.tsv"
	fi
}

summary() { scripts/test-verdict.py "$RESULTS"; }

# A step outside any test (a build, a stack that would not start) stops the run: say which stage.
CURRENT_STAGE=setup
verdict_done=''
on_exit() {
	local status=$?
	if [ "$status" != 0 ] && [ -z "$verdict_done" ]; then
		printf '\n\033[1m[test] FAIL  stage %s: stopped the run (exit status %s); no verdict\033[0m\n' \
			"$CURRENT_STAGE" "$status" >&2
	fi
}
trap on_exit EXIT

# ---- tools ------------------------------------------------------------------------------------
ensure_venv() {
	local stamp="$VENV/.requirements.sha"
	local want; want=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' tests/requirements.txt)
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

# The pre-commit hooks, from the tools venv, with pre-commit's state in .cache: `hook ID` runs
# one hook of .pre-commit-config.yaml over every file, as `pre-commit run --all-files` does.
precommit() { PRE_COMMIT_HOME="$ROOT/.cache/pre-commit" "$VENV/bin/pre-commit" "$@"; }
hook() { precommit run --all-files --color never "$1"; }

pytest_run() { # pytest_run STAGE ARGS...: host pytest with a junit file per stage
	local stage=$1 status=0; shift
	CURRENT_STAGE=$stage
	"$VENV/bin/pytest" -p no:cacheprovider --junitxml="$RESULTS/$stage.xml" "$@" || status=$?
	stage_status "$stage" "$status"
}

# ---- stages -------------------------------------------------------------------------------------
stage_lint() {
	log "lint"
	CURRENT_STAGE=lint
	local dev="drs/web-dev:$DRS_TAG" prod="drs/web:$DRS_TAG" dockerfiles scripts
	dockerfiles=$(scripts/lint.sh dockerfiles | wc -l | tr -d ' ')
	scripts=$(scripts/lint.sh shell-scripts | wc -l | tr -d ' ')
	check "pre-commit config valid (.pre-commit-config.yaml)" precommit validate-config
	check "ruff check (services/web, bench, tests)" hook ruff-check
	check "ruff format --check (services/web, bench, tests)" hook ruff-format
	check "hadolint ($dockerfiles Dockerfiles)" hook hadolint
	check "shellcheck ($scripts shell scripts, found by name and shebang)" hook shellcheck
	check "compose config (dev)" scripts/compose.sh dev config -q
	check "compose config (prod)" scripts/compose.sh --env-file compose/prod.env.example prod config -q
	cp compose/prod.env.example "$RESULTS/lint-swarm.env"
	check "swarm stack file renders from the compose files (scripts/swarm.sh render)" \
		env PROD_ENV="$RESULTS/lint-swarm.env" scripts/swarm.sh render
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
	check "docs list every Make target and variable, and name nothing that does not exist" hook docs-check
	check "developer-path scripts use bash 3.2 and BSD tools only" hook portability
	check "GitHub workflow valid against GitHub's schema (check-jsonschema)" hook workflow
	check "monitoring configs valid (promtool check config, amtool check-config, blackbox)" \
		docker run --rm --network none "drs/monitoring:$DRS_TAG" check-config
	check "promtool test rules: every alert has a test, and they pass" monitoring_rules_tested
	check "Renovate config valid against Renovate's schema (check-jsonschema)" hook renovate
	check "OpenAPI schema without warnings" docker run --rm --network none -e DJANGO_DEBUG=1 "$dev" \
		python manage.py spectacular --fail-on-warn --validate --file /dev/null
	stage_status lint 0
}

# Every alert of the shipped rules is named by a test of services/monitoring/tests, and the tests
# pass (promtool test rules, in the monitoring image).
monitoring_rules_tested() {
	local dir=services/monitoring alert missing=''
	while IFS= read -r alert; do
		grep -q "alertname: $alert\$" "$dir/tests/"*.test.yml || missing+=" $alert"
	done < <(sed -n 's/^ *- alert: *//p' "$dir/prometheus/rules/"*.yml)
	[ -z "$missing" ] || { echo "alerts without a test:$missing"; return 1; }
	docker run --rm --network none -v "$ROOT/$dir:/monitoring:ro" "drs/monitoring:$DRS_TAG" \
		promtool test rules /monitoring/tests/alerts.test.yml
}

stage_images() {
	log "image contract tests (postgres, redis)"
	DRS_POSTGRES_IMAGE="drs/postgres:$DRS_TAG" DRS_REDIS_IMAGE="drs/redis:$DRS_TAG" \
		pytest_run images tests/images -q
}

# The Django suite, in the dev image, against a throwaway Postgres + Redis of the stack.
stage_django() {
	log "Django suite against PostgreSQL and Redis"
	local project="drs-test-$RUN_ID" status=0
	CURRENT_STAGE=django
	local -a compose=(scripts/compose.sh --project "$project" test)
	# shellcheck disable=SC2064 # expand now: the trap must remove this very project
	trap "${compose[*]} down -v --remove-orphans >/dev/null 2>&1 || true" RETURN
	"${compose[@]}" up -d --wait postgres redis
	"${compose[@]}" run --rm -v "$RESULTS:/results" pytest \
		pytest -p no:cacheprovider -q --junitxml=/results/django.xml || status=$?
	stage_status django "$status"
}

# `make dev` itself, from a copy of the working tree, under its own project on free ports.
stage_dev() {
	log "make dev (tests/dev)"
	pytest_run dev tests/dev -q
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
	CURRENT_STAGE="stack for $*"
	log "prod stack for: $*"
	scripts/prod-env.sh "$env_file" >/dev/null
	# Free ports chosen by Docker, on loopback only; HTTPS with a CA made for this run.
	local edited # rewritten in place (keeps mode 600), as BSD sed -i cannot
	edited=$(sed -e 's/^HTTP_PORT=.*/HTTP_PORT=/' -e 's/^HTTPS_PORT=.*/HTTPS_PORT=/' \
		-e 's/^HTTP_BIND=.*/HTTP_BIND=127.0.0.1/' "$env_file")
	printf '%s\n' "$edited" >"$env_file"
	scripts/certs-selfsigned.sh localhost "$STACK_DIR/certs" >/dev/null
	{
		printf 'TLS_CERTS_DIR=%s\n' "$STACK_DIR/certs"
		# A browser front end on another origin, for the CORS tests (tests/e2e/test_cors.py).
		printf 'DJANGO_CORS_ALLOWED_ORIGINS=%s\n' "https://app.example.test"
		# Errors reach the stand-ins for Sentry and a mail server that
		# tests/e2e/test_error_reporting.py runs on the stack's backend network (as errors-sink);
		# its test-only error views on.
		printf 'SENTRY_DSN=%s\n' "http://e2e-public-key@errors-sink:8080/1"
		printf 'EMAIL_URL=%s\n' "smtp://errors-sink:8025"
		printf 'DJANGO_ADMINS=%s\n' "E2E Ops <ops@example.test>"
		printf 'DJANGO_ERROR_TEST_VIEWS=1\n'
		# The opt-in profiles: Flower (tests/e2e/test_flower.py) and monitoring
		# (tests/e2e/test_monitoring.py); the hardening suite checks their containers as every other.
		printf 'COMPOSE_PROFILES=flower,monitoring\n'
	} >>"$env_file"
	STACK_COMPOSE=(scripts/compose.sh --project "$project" --env-file "$env_file" prod)
	trap stack_teardown RETURN
	local start; start=$(date +%s)
	if ! "${STACK_COMPOSE[@]}" up -d --wait --wait-timeout 180; then
		"${STACK_COMPOSE[@]}" ps -a
		"${STACK_COMPOSE[@]}" logs --tail=80
		for suite in "$@"; do stage_status "$suite" -; done
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
	if grep -qsv $'\t0$' "$RESULTS/stages.tsv" || grep -qs '<failure\|<error' "$RESULTS"/*.xml; then
		"${STACK_COMPOSE[@]}" logs --tail=100 >"$RESULTS/stack.log" 2>&1 || true
		echo "stack logs: $RESULTS/stack.log"
	fi
	"${STACK_COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$STACK_DIR"
}

# The benchmark harness end to end on a small dataset, one short round, under its own project;
# a check that it runs and writes its results (BENCH_QUICK=1), never an assertion on speed.
stage_bench_quick() {
	log "benchmark harness, quick: checks it works, never speed"
	CURRENT_STAGE=bench
	local name="bench harness (make bench BENCH_QUICK=1)" outcome=pass shown=PASS status=0
	# Its progress goes to the console (it takes minutes), so not through check().
	BENCH_QUICK=1 BENCH_SKIP_BUILD=1 BENCH_PROJECT="drs-bench-test-$RUN_ID" BENCH_OUT="$RESULTS/bench" \
		scripts/bench.sh || { status=$?; outcome=fail; shown=FAIL; }
	printf '  %s  %s\n' "$shown" "$name"
	printf 'bench\t%s\t%s\n' "$outcome" "$name" >>"$RESULTS/checks.tsv"
	stage_status bench "$status"
}

# The prod stack on a single-node swarm of this Docker (tests/swarm makes the swarm and leaves
# it). Its env file and certificates, like stage_stack's. nginx publishes no port on the node:
# the suite reaches it through a relay on an overlay network it makes, on 127.0.0.1 only.
# A swarm deploys images by a fixed tag (scripts/swarm.sh: DRS_TAG, or the git commit's when it
# is `latest`, which this run never builds): the run's images under a tag of its own.
swarm_images_tag() {
	local image
	for image in $(docker images --format '{{.Repository}}' --filter "reference=drs/*:$DRS_TAG"); do
		docker tag "$image:$DRS_TAG" "$image:$1"
	done
}
swarm_images_untag() {
	docker images --format '{{.Repository}}:{{.Tag}}' --filter "reference=drs/*:$1" | xargs docker rmi >/dev/null 2>&1 || true
}

stage_swarm() {
	local name="drs-swarm-$RUN_ID" dir
	dir="$ROOT/.cache/$name"
	CURRENT_STAGE=swarm
	log "Docker Swarm (tests/swarm)"
	rm -rf "$dir"
	mkdir -p "$dir"
	scripts/prod-env.sh "$dir/swarm.env" >/dev/null
	scripts/certs-selfsigned.sh localhost "$dir/certs" >/dev/null
	printf 'TLS_CERTS_DIR=%s\n' "$dir/certs" >>"$dir/swarm.env"
	local tag="swarm-test-$RUN_ID"
	swarm_images_tag "$tag"
	DRS_TAG="$tag" SWARM_STACK="$name" SWARM_ENV_FILE="$dir/swarm.env" E2E_CA_BUNDLE="$dir/certs/ca.pem" \
		pytest_run swarm tests/swarm -q
	# The suite removes its stack and volumes and leaves the swarm; this catches what a killed
	# run left (a swarm holding the run's stack is the suite's own: it refuses to start in another).
	if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$name"; then
		docker stack rm "$name" >/dev/null 2>&1 || true
		docker swarm leave --force >/dev/null 2>&1 || true
	fi
	docker volume ls -q --filter "label=com.docker.stack.namespace=$name" | xargs docker volume rm -f >/dev/null 2>&1 || true
	swarm_images_untag "$tag"
	rm -rf "$dir"
}

# The prod stack on a 3-node swarm of containers on this machine (tests/cluster; not in `all`:
# too long for CI). The suite makes the nodes, their network and the registry, and removes them,
# also on failure; this removes what a killed run left (everything carries drs.cluster=NAME).
stage_swarm_cluster() {
	local name="drs-cluster-$RUN_ID" dir
	dir="$ROOT/.cache/$name"
	CURRENT_STAGE=swarm-cluster
	log "Docker Swarm, 3 nodes (tests/cluster)"
	rm -rf "$dir"
	mkdir -p "$dir"
	scripts/prod-env.sh "$dir/swarm.env" >/dev/null
	scripts/certs-selfsigned.sh localhost "$dir/certs" >/dev/null
	printf '%s\n' "TLS_CERTS_DIR=$dir/certs" HTTP_PORT=8080 HTTPS_PORT=8443 WEB_REPLICAS=3 >>"$dir/swarm.env"
	local tag="cluster-test-$RUN_ID"
	swarm_images_tag "$tag"
	DRS_TAG="$tag" CLUSTER_NAME="$name" CLUSTER_ENV_FILE="$dir/swarm.env" CLUSTER_CERTS_DIR="$dir/certs" \
		E2E_CA_BUNDLE="$dir/certs/ca.pem" pytest_run swarm-cluster tests/cluster -q
	docker ps -aq --filter "label=drs.cluster=$name" | xargs docker rm -f -v >/dev/null 2>&1 || true
	docker volume ls -q --filter "name=$name-" | xargs docker volume rm -f >/dev/null 2>&1 || true
	docker network rm "$name-net" >/dev/null 2>&1 || true
	swarm_images_untag "$tag"
	rm -rf "$dir"
}

stage_clean() {
	local p
	for p in $(docker compose ls -a --format json 2>/dev/null | python3 -c \
		'import json,sys; [print(x["Name"]) for x in json.load(sys.stdin) if x["Name"].startswith(("drs-test-","drs-e2e-","drs-bench-test-","drs-devtest-"))]'); do
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
	# The Django suite runs inside its image: a laptop needs no host Python tools for it.
	[ "$what" = django ] || ensure_venv
	ensure_images
	case "$what" in
		all)
			stage_lint
			stage_images
			stage_django
			stage_dev
			stage_stack "${STACK_SUITES[@]}"
			stage_swarm
			stage_bench_quick
			;;
		lint | images | django | dev) "stage_$what" ;;
		bench) stage_bench_quick ;;
		swarm) stage_swarm ;;
		swarm-cluster) stage_swarm_cluster ;;
		e2e | tls | backup | deploy) stage_stack "$what" ;;
		faults | fuzz | hardening | abuse) stage_stack "$what" ;;
		*) echo "usage: $0 [all|lint|images|django|dev|e2e|hardening|fuzz|abuse|faults|tls|backup|deploy|swarm|swarm-cluster|bench|clean]" >&2; exit 64 ;;
	esac
	log "summary"
	verdict_done=1
	summary
}

main "$@"
