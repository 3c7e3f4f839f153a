# Django REST Stack. `make help` (the default) lists every target; docs/ has the details.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# ---- settings (override on the command line: make prod-up PROD_ENV=/etc/drs/prod.env) ----------
DRS_TAG         ?= latest
PROD_ENV        ?= compose/prod.env
DEV_PROJECT     ?= drs-dev
PROD_PROJECT    ?= drs
STACK           ?= dev
# CA bundle handed to pip in image builds as a BuildKit secret (for TLS-intercepting proxies).
BUILD_CA_BUNDLE ?= $(or $(firstword $(wildcard /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt)),/dev/null)
export DRS_TAG BUILD_CA_BUNDLE

DEV_COMPOSE  = docker compose -p $(DEV_PROJECT) --env-file compose/dev.env -f docker-compose.yml -f docker-compose.dev.yml
PROD_COMPOSE = DRS_ENV_FILE=$(PROD_ENV) docker compose -p $(PROD_PROJECT) --env-file $(PROD_ENV) -f docker-compose.yml -f docker-compose.prod.yml
COMPOSE      = $(if $(filter prod,$(STACK)),$(PROD_COMPOSE),$(DEV_COMPOSE))
SETUP        = scripts/docker-setup.sh

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
	$(DEV_COMPOSE) --profile proxy up -d --build --wait

dev-down: ## Stop the dev stack (data volumes are kept; `make clean` removes them)
	@$(SETUP)
	$(DEV_COMPOSE) --profile proxy down --remove-orphans

## Production (single VM)
.PHONY: prod-env prod-up prod-down
prod-env: ## Write compose/prod.env with strong random secrets (never overwrites; mode 600)
	@scripts/prod-env.sh $(PROD_ENV)

prod-up: ## Build and start the hardened prod stack behind nginx; waits until healthy
	@test -f $(PROD_ENV) || { echo "error: $(PROD_ENV) does not exist; run 'make prod-env' to create one, then review it" >&2; exit 1; }
	@$(SETUP)
	$(PROD_COMPOSE) up -d --build --wait
	@echo "prod stack is up: $$($(PROD_COMPOSE) port nginx 8080)"

prod-down: ## Stop the prod stack (volumes are kept)
	@$(SETUP)
	$(PROD_COMPOSE) down --remove-orphans

## Operating a stack (STACK=dev by default, STACK=prod for the prod stack)
.PHONY: ps logs migrate makemigrations createsuperuser shell psql
ps: ## List the stack's containers and their health
	@$(SETUP)
	$(COMPOSE) ps -a

logs: ## Follow the stack's logs (SERVICE=web for one service)
	@$(SETUP)
	$(COMPOSE) logs -f --tail=100 $(SERVICE)

migrate: ## Apply migrations with the one-shot migrate service
	@$(SETUP)
	$(COMPOSE) run --rm migrate migrate

makemigrations: ## Create migrations for model changes (dev stack; files land in services/web)
	@$(SETUP)
	$(DEV_COMPOSE) run --rm --no-deps web manage makemigrations

createsuperuser: ## Create a Django superuser interactively
	@$(SETUP)
	$(COMPOSE) exec web python manage.py createsuperuser

shell: ## Django shell in the running web container
	@$(SETUP)
	$(COMPOSE) exec web python manage.py shell

psql: ## psql in the running postgres container
	@$(SETUP)
	$(COMPOSE) exec postgres sh -c 'psql -U "$$POSTGRES_USER" "$$POSTGRES_DB"'

## Building
.PHONY: build base-image docker-setup lock
build: ## Build every image (prod and dev)
	@$(SETUP)
	scripts/build.sh

base-image: ## Build debian:trixie-slim locally with debootstrap (when no registry is reachable)
	scripts/build-base-image.sh debian:trixie-slim

docker-setup: ## Install/start Docker and Compose v2 if missing and make the base image
	@$(SETUP)

lock: ## Regenerate the hashed lock files from services/web/pyproject.toml and tests/requirements.in
	scripts/lock.sh

## Testing
.PHONY: lint test test-lint test-images test-django test-e2e
lint: ## Lint only (the same as test-lint)
	@scripts/test.sh lint

test: ## Everything CI runs: lint, image contracts, Django suite on Postgres+Redis, end to end via nginx
	@scripts/test.sh all

test-lint: ## ruff, hadolint, shellcheck, compose config, nginx -t, gunicorn and migrations checks
	@scripts/test.sh lint

test-images: ## Contract tests of the postgres and redis images
	@scripts/test.sh images

test-django: ## The Django suite inside the web image against the stack's Postgres and Redis
	@scripts/test.sh django

test-e2e: ## Prod stack on a free 127.0.0.1 port, tested over HTTP through nginx, then removed
	@scripts/test.sh e2e

## Cleaning
.PHONY: clean
clean: ## Remove the dev stack with its volumes, test stacks, and local caches
	@$(SETUP)
	$(DEV_COMPOSE) --profile proxy down -v --remove-orphans
	scripts/test.sh clean
	rm -rf .cache
