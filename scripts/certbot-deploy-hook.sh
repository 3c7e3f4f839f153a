#!/usr/bin/env bash
# certbot --deploy-hook (docs/tls.md): copies the renewed certificate into the stack's TLS
# folder and reloads nginx gracefully (no connection is dropped).
#   certbot certonly --webroot -w ... -d example.com --deploy-hook /opt/drs/scripts/certbot-deploy-hook.sh
# Env: RENEWED_LINEAGE (set by certbot: /etc/letsencrypt/live/DOMAIN), PROD_ENV, PROD_PROJECT.
set -Eeuo pipefail
# shellcheck source=prod-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/prod-lib.sh"
cd "$(compose_root)"

main() {
	local src="${RENEWED_LINEAGE:-${1:-}}" dir
	[ -n "$src" ] && [ -r "$src/fullchain.pem" ] && [ -r "$src/privkey.pem" ] \
		|| die "RENEWED_LINEAGE (or the first argument) must name a folder with fullchain.pem and privkey.pem"
	require_env_file
	dir=$(sed -n 's/^TLS_CERTS_DIR=//p' "$(prod_env_file)" | tail -n1)
	dir=${dir:-./certs}
	mkdir -p "$dir"
	install -m 0644 "$src/fullchain.pem" "$dir/fullchain.pem.new"
	install -m 0600 "$src/privkey.pem" "$dir/privkey.pem.new"
	# nginx runs as uid 33 (no capabilities, never root): as root, the key becomes that uid's
	# alone (mode 0400, group root), no host group's; else everyone must read it (docs/tls.md).
	if [ "$(id -u)" = 0 ]; then
		chown 33:0 "$dir/privkey.pem.new" && chmod 0400 "$dir/privkey.pem.new"
	else
		chmod 0644 "$dir/privkey.pem.new"
		say "WARNING: not root: privkey.pem is world-readable (run the hook as root, as certbot does)"
	fi
	mv -f "$dir/fullchain.pem.new" "$dir/fullchain.pem"
	mv -f "$dir/privkey.pem.new" "$dir/privkey.pem"
	say "installed the certificate from $src into $dir"
	prod_compose exec -T nginx nginx -e stderr -t -q
	prod_compose exec -T nginx nginx -e stderr -s reload
	say "nginx reloaded"
}

main "$@"
