#!/usr/bin/env bash
# Prints where the dev stack answers (called by make dev).
set -Eeuo pipefail
web="http://127.0.0.1:${DEV_WEB_PORT:-8000}"
cat <<URLS

Dev stack is up (code in services/web reloads on save):
  API            $web/api/
  API docs       $web/api/docs/
  Admin          $web/admin/          (admin / admin)
  Demo user      demo / demo          (POST $web/api/auth/token/)
  Health         $web/healthz  $web/readyz
  Postgres       127.0.0.1:${DEV_POSTGRES_PORT:-5432}  (app / dev-password)   Redis 127.0.0.1:${DEV_REDIS_PORT:-6379}
Logs: make logs    Stop: make dev-down    Tests: make test
URLS
# Flower's opt-in profile (COMPOSE_PROFILES=flower make dev; docs/observability.md).
case ",${COMPOSE_PROFILES:-}," in
	*,flower,*) printf '  Flower         http://127.0.0.1:%s/flower/   (flower / dev-flower-password)\n' "${DEV_FLOWER_PORT:-5555}" ;;
esac
