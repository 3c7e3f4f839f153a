#!/usr/bin/env bash
# A self-signed CA and a certificate it signs, for trying TLS (docs/tls.md). Never overwrites.
# Usage: scripts/certs-selfsigned.sh DOMAIN [DIR]   (make certs-selfsigned DOMAIN=example.com)
#   DIR/fullchain.pem, DIR/privkey.pem   what nginx serves (mounted at /etc/nginx/certs)
#   DIR/ca.pem                           the CA to trust on clients (curl --cacert DIR/ca.pem)
#   DIR/ca-key.pem                       the CA's key (only needed to sign again)
# The certificate names DOMAIN, plus localhost and 127.0.0.1 when DOMAIN is localhost.
# Valid CERT_DAYS days (default 825). nginx runs as uid 33: as root, the key is made group 33
# and mode 0640; otherwise it has to be world-readable (0644), and the script says so.
set -Eeuo pipefail

say() { printf '[certs] %s\n' "$*"; }
die() { printf '[certs] error: %s\n' "$*" >&2; exit 1; }

domain="${1:-}"
dir="${2:-certs}"
days="${CERT_DAYS:-825}"

validate() {
	[ -n "$domain" ] || die "usage: $0 DOMAIN [DIR]  (e.g. make certs-selfsigned DOMAIN=example.com)"
	[[ "$domain" =~ ^[A-Za-z0-9.-]+$ ]] || die "DOMAIN '$domain' is not a host name"
	command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
}

subject_alt_names() {
	if [ "$domain" = localhost ]; then
		echo "DNS:localhost,IP:127.0.0.1,IP:::1"
	else
		echo "DNS:$domain"
	fi
}

make_ca() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
		-subj "/CN=drs self-signed CA for $domain" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
}

make_leaf() {
	local tmp
	tmp=$(mktemp -d)
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$domain" \
		-keyout "$tmp/privkey.pem" -out "$tmp/req.csr" 2>/dev/null
	openssl x509 -req -in "$tmp/req.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
		-days "$days" -out "$tmp/cert.pem" -extfile <(printf '%s\n' \
			"subjectAltName=$(subject_alt_names)" "basicConstraints=critical,CA:FALSE" \
			"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth") 2>/dev/null
	cat "$tmp/cert.pem" "$dir/ca.pem" >"$dir/fullchain.pem"
	mv "$tmp/privkey.pem" "$dir/privkey.pem"
	rm -rf "$tmp" "$dir/ca.srl"
}

# nginx (uid 33 in the container) must read the key through the bind mount.
key_permissions() {
	chmod 0644 "$dir/fullchain.pem" "$dir/ca.pem"
	chmod 0755 "$dir"
	if [ "$(id -u)" = 0 ]; then
		chown 33:0 "$dir/privkey.pem" && chmod 0400 "$dir/privkey.pem"
	else
		chmod 0644 "$dir/privkey.pem"
		say "note: privkey.pem is world-readable (not root, cannot give it to nginx's uid 33); fine for trying, see docs/tls.md"
	fi
}

main() {
	validate
	if [ -e "$dir/fullchain.pem" ] || [ -e "$dir/privkey.pem" ]; then
		say "$dir already holds a certificate; not touching it (remove fullchain.pem and privkey.pem to start over)"
		return 0
	fi
	mkdir -p "$dir"
	(umask 077 && make_ca && make_leaf)
	key_permissions
	say "wrote $dir/fullchain.pem and $dir/privkey.pem for $domain (self-signed, $days days); clients trust $dir/ca.pem"
}

main "$@"
