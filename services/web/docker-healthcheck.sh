#!/usr/bin/env bash
# Health check of drs/web (the image's HEALTHCHECK): /healthz answers 2xx within 3 s (the
# process is up and serving; /readyz is the one that checks the database, cache and broker).
set -Eeuo pipefail
exec python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"
