# Django REST Stack. `make help` (the default) lists every target; docs/ has the details.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# ---- settings (override on the command line: make prod-up PROD_ENV=/etc/drs/prod.env) ----------
DRS_TAG         ?= latest
PROD_ENV        ?= compose/prod.env
DEV_PROJECT     ?= drs-dev
PROD_PROJECT    ?= drs
STACK           ?= dev
export DRS_TAG DEV_PROJECT PROD_PROJECT PROD_ENV

# Every compose call goes through scripts/compose.sh: it knows each stack's files, env file,
# project and image tag (the prod stack runs the tag `make deploy` recorded in $(PROD_ENV).tags).
DEV_COMPOSE  = scripts/compose.sh dev
PROD_COMPOSE = scripts/compose.sh prod
COMPOSE      = scripts/compose.sh $(STACK)
SETUP        = scripts/docker-setup.sh
# Targets that only talk to a running stack check that Docker answers; they install nothing.
CHECK        = scripts/docker-setup.sh check
# Every opt-in profile, so that stopping a stack stops them too, whichever are switched on now
# (COMPOSE_PROFILES, in the shell or the env file, switches them on: docs/configuration.md).
ALL_PROFILES = --profile proxy --profile flower --profile monitoring

.PHONY: help
help: ## Show this help (the default target)
	@echo "Django REST Stack: make TARGET [VAR=value]   (STACK=dev|prod picks the stack for ps/logs/shell/...)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2} /^## / {printf "\n%s\n", substr($$0, 4)}' $(MAKEFILE_LIST)

## Development
.PHONY: dev dev-down dev-proxy
dev: ## Start the dev stack (runserver + autoreloading worker/beat, Postgres, Redis) and print its URLs
	@$(SETUP)
	$(DEV_COMPOSE) up -d --build --wait
	@scripts/dev-urls.sh

dev-proxy: ## Also start nginx in front of the dev server (http://127.0.0.1:8080)
	@$(SETUP)
	@# nginx bakes in the static files of the prod web image: build that first.
	scripts/build.sh
	@# --profile would replace COMPOSE_PROFILES (e.g. flower): added to it instead.
	COMPOSE_PROFILES="$${COMPOSE_PROFILES:+$$COMPOSE_PROFILES,}proxy" $(DEV_COMPOSE) up -d --build --wait

dev-down: ## Stop the dev stack (data volumes are kept; `make clean` removes them)
	@$(SETUP)
	$(DEV_COMPOSE) $(ALL_PROFILES) down --remove-orphans

## Production (single VM)
.PHONY: prod-env prod-up prod-down
prod-env: ## Write compose/prod.env with strong random secrets (never overwrites; mode 600) and a self-signed certificate if none
	@scripts/prod-env.sh $(PROD_ENV)
	@scripts/certs-selfsigned.sh "$$(sed -n 's/^NGINX_SERVER_NAME=//p' $(PROD_ENV) | awk '{print $$1}')" \
		"$$(sed -n 's/^TLS_CERTS_DIR=//p' $(PROD_ENV) | tail -n1 | grep . || echo certs)"

prod-up: ## Build and start the hardened prod stack behind nginx; waits until healthy
	@test -f $(PROD_ENV) || { echo "error: $(PROD_ENV) does not exist; run 'make prod-env' to create one, then review it" >&2; exit 1; }
	@$(SETUP)
	$(PROD_COMPOSE) up -d --build --wait
	@echo "prod stack is up: http on $$($(PROD_COMPOSE) port nginx 8080), https on $$($(PROD_COMPOSE) port nginx 8443)"

prod-down: ## Stop the prod stack (volumes are kept)
	@$(SETUP)
	$(PROD_COMPOSE) $(ALL_PROFILES) down --remove-orphans

## Monitoring (COMPOSE_PROFILES=monitoring; docs/observability.md)
.PHONY: monitoring-ui
monitoring-ui: ## Prometheus and Alertmanager UIs on the server's 127.0.0.1:9090 and :9093, for an SSH tunnel (prod)
	@$(CHECK)
	scripts/compose.sh -f compose/monitoring-ui.yml prod up -d --no-deps prometheus alertmanager
	@echo "Prometheus: http://127.0.0.1:$${PROMETHEUS_UI_PORT:-9090}/  Alertmanager: http://127.0.0.1:$${ALERTMANAGER_UI_PORT:-9093}/"
	@echo "from your machine: ssh -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 SERVER; closed again by make prod-up or make deploy"

## Backups, deploys, updates and TLS (prod stack; docs/backups.md, docs/deploy-single-vm.md, docs/upgrades.md, docs/tls.md)
.PHONY: backup backups offsite-check offsite-fetch restore drill deploy rollback update certs-selfsigned
backup: ## Take a verified backup now (database + media) into the backups volume, and its off-site copy if set up
	@$(SETUP)
	@scripts/backup.sh backup

backups: ## List the backups, newest first, with their state and the last off-site copy (fails if a run failed)
	@$(SETUP)
	@scripts/backup.sh list

offsite-check: ## Read back every off-site copy in full (restic check --read-data); fails on missing or corrupt data
	@$(SETUP)
	@scripts/backup.sh offsite-check

offsite-fetch: ## Bring backup FILE=NAME back from the off-site repository into the backups volume (then make restore)
	@$(SETUP)
	@scripts/backup.sh offsite-fetch "$(FILE)"

restore: ## Restore backup FILE=NAME (stops web/worker/beat; one transaction), or to TIME='2026-12-01 21:30 UTC' (or latest) from off-site WAL, also on a new VM
	@$(SETUP)
	@if [ -n "$(TIME)" ]; then scripts/backup.sh restore-time "$(TIME)"; else scripts/backup.sh restore "$(FILE)"; fi

drill: ## Monthly restore drill: the latest off-site state into a throwaway project, timed (RTO), checked, removed; the live stack untouched
	@$(SETUP)
	@scripts/backup.sh drill

deploy: ## Zero-downtime deploy: build images tagged with the git commit, migrate, replace containers one by one
	@$(SETUP)
	@scripts/deploy.sh deploy

rollback: ## Go back to the tag deployed before the last `make deploy` (same rolling replacement)
	@$(SETUP)
	@scripts/deploy.sh rollback

update: ## Patch day: refresh the base image, rebuild every image with the newest Debian packages, print what changed, deploy (docs/upgrades.md)
	@$(SETUP)
	@scripts/update.sh

certs-selfsigned: ## Self-signed CA + certificate for DOMAIN=... (default localhost) into certs/ for trying TLS
	@scripts/certs-selfsigned.sh "$(or $(DOMAIN),localhost)" "$(or $(CERTS_DIR),certs)"

## Docker Swarm: the prod stack on one or more nodes (docs/swarm.md; SWARM_STACK, REGISTRY)
.PHONY: swarm-init swarm-render swarm-deploy swarm-rollback swarm-ps swarm-logs swarm-push swarm-registry swarm-backup swarm-backups swarm-restore
swarm-init: ## Make this Docker a swarm manager (if it is not) and label it for data and media
	@$(SETUP)
	@scripts/swarm.sh init

swarm-render: ## Write the stack file rendered from the compose files to $(PROD_ENV).stack.json
	@scripts/swarm.sh render

swarm-deploy: ## Deploy or update the swarm stack: secrets, Postgres/Redis, migrations job, rolling update
	@$(SETUP)
	@scripts/swarm.sh deploy

swarm-push: ## Tag the stack's images and push them to REGISTRY (or REGISTRY_PUSH); swarm-deploy does it too
	@$(CHECK)
	@scripts/swarm.sh push

swarm-registry: ## Run a registry for the nodes (Debian's docker-registry) as a service on port REGISTRY_PORT (5000; REGISTRY_PUBLISH)
	@$(CHECK)
	@scripts/swarm.sh registry

swarm-rollback: ## Roll the swarm stack's app services back to their previous spec (one step)
	@$(CHECK)
	@scripts/swarm.sh rollback

swarm-backup: ## Take a verified backup of the swarm stack now (on the node that runs its backup service)
	@$(CHECK)
	@scripts/swarm.sh backup

swarm-backups: ## List the swarm stack's backups, newest first, with their state
	@$(CHECK)
	@scripts/swarm.sh backups

swarm-restore: ## Restore the swarm stack's backup FILE=NAME (scales web/worker/beat to 0 and back; one transaction)
	@$(CHECK)
	@scripts/swarm.sh restore "$(FILE)"

swarm-ps: ## List the swarm stack's tasks, their nodes and states
	@$(CHECK)
	@scripts/swarm.sh ps

swarm-logs: ## Follow a swarm service's logs (SERVICE=web by default)
	@$(CHECK)
	@scripts/swarm.sh logs $(SERVICE)

## Operating a stack (STACK=dev by default, STACK=prod for the prod stack)
.PHONY: ps logs migrate makemigrations createsuperuser shell psql readyz
ps: ## List the stack's containers and their health
	@$(CHECK)
	$(COMPOSE) ps -a

logs: ## Follow the stack's logs (SERVICE=web for one service)
	@$(CHECK)
	$(COMPOSE) logs -f --tail=100 $(SERVICE)

migrate: ## Apply migrations with the one-shot migrate service
	@$(SETUP)
	$(COMPOSE) run --rm migrate migrate

makemigrations: ## Create migrations for model changes (dev stack; files land in services/web)
	@$(SETUP)
	$(DEV_COMPOSE) run --rm --no-deps web manage makemigrations

createsuperuser: ## Create a Django superuser interactively
	@$(CHECK)
	$(COMPOSE) exec web python manage.py createsuperuser

shell: ## Django shell in the running web container (no statement timeout: DJANGO_DB_STATEMENT_TIMEOUT_MS=0)
	@$(CHECK)
	$(COMPOSE) exec -e DJANGO_DB_STATEMENT_TIMEOUT_MS=0 web python manage.py shell

readyz: ## Readiness of the running stack (database, cache, broker) as JSON, asked inside web; exit 1 unless ready
	@$(COMPOSE) exec -T web python manage.py readyz

psql: ## psql in the running postgres container
	@$(CHECK)
	$(COMPOSE) exec postgres sh -c 'psql -U "$$POSTGRES_USER" "$$POSTGRES_DB"'

## Building
.PHONY: build base-image docker-setup lock outdated
build: ## Build every image (prod and dev)
	@$(SETUP)
	scripts/build.sh

base-image: ## Build debian:trixie-slim locally with debootstrap (when no registry is reachable)
	scripts/build-base-image.sh debian:trixie-slim

docker-setup: ## Install/start Docker and Compose v2 if missing and make the base image
	@$(SETUP)

lock: ## Regenerate the hashed lock files (pyproject.toml, *.in); LOCK_UPGRADE=all or NAME,NAME takes newer releases
	scripts/lock.sh

outdated: ## List the locked Python packages that have a newer release on PyPI (a report; docs/upgrades.md)
	@scripts/outdated.py

## Testing
.PHONY: lint test test-lint test-images test-django test-dev test-e2e test-tls test-backup test-deploy test-swarm test-swarm-cluster test-bench test-hardening test-fuzz test-abuse test-faults
lint: ## Lint only (the same as test-lint)
	@scripts/test.sh lint

test: ## Everything CI runs: lint, image contracts, Django suite on Postgres+Redis, end to end via nginx
	@scripts/test.sh all

test-lint: ## The pre-commit hooks (ruff, shellcheck, hadolint, docs, workflow schema), compose config, nginx -t, gunicorn and schema checks
	@scripts/test.sh lint

test-images: ## Contract tests of the postgres and redis images
	@scripts/test.sh images

test-django: ## The Django suite inside the web image against the stack's Postgres and Redis
	@scripts/test.sh django

test-dev: ## `make dev` itself from a copy of the tree on free ports: healthy, URLs answer, demo data, code reloads
	@scripts/test.sh dev

test-e2e: ## Prod stack on free 127.0.0.1 ports, tested over HTTPS (its own CA) through nginx, then removed
	@scripts/test.sh e2e

test-hardening: ## docker inspect of every prod container, password/network refusals, no secrets in images, check --deploy, hadolint, compose-lint
	@scripts/test.sh hardening

test-fuzz: ## schemathesis on /api/schema/ with a token (all checks) and hostile input through nginx: never a 5xx or a hang
	@scripts/test.sh fuzz

test-abuse: ## Hostile traffic through nginx: search bombs, login brute force, export floods, slow clients, token revocation, least privilege
	@scripts/test.sh abuse

test-faults: ## Kill/restart worker, Postgres, Redis, web, beat, the whole stack under load: nothing acknowledged lost (docs/reliability.md)
	@scripts/test.sh faults

test-tls: ## TLS of the prod stack: HTTPS with the generated CA, HTTP redirect, ACME webroot, no TLS 1.1
	@scripts/test.sh tls

test-backup: ## Backup, verification, restore (checksums identical), truncated backup refused, rotation, off-site copies to an SFTP server, point-in-time restore, the rebuild drill (RPO, RTO)
	@scripts/test.sh backup

test-deploy: ## make deploy under a read/write request loop with zero failures, exports finish, make rollback, make update
	@scripts/test.sh deploy

test-swarm: ## Prod stack on a single-node swarm of this Docker: smoke, rolling update, auto-rollback, scale, secret rotation under load
	@scripts/test.sh swarm

test-swarm-cluster: ## Prod stack on a 3-node swarm of containers (not in make test): registry, smoke, rolling update, drain, node loss
	@scripts/test.sh swarm-cluster

## Benchmarks
.PHONY: bench
bench: ## Benchmark the prod stack against runserver and gunicorn defaults (~35 min; BENCH_QUICK=1: seconds); docs/benchmarks.md
	@$(SETUP)
	@BENCH_QUICK=$(BENCH_QUICK) scripts/bench.sh

test-bench: ## The benchmark harness on a small dataset (BENCH_QUICK=1): checks it works, never speed
	@scripts/test.sh bench

## Cleaning
.PHONY: clean
clean: ## Remove the dev stack with its volumes, test stacks, and local caches
	@$(SETUP)
	$(DEV_COMPOSE) $(ALL_PROFILES) down -v --remove-orphans
	scripts/test.sh clean
	rm -rf .cache
