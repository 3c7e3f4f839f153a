#!/usr/bin/env bash
# Entrypoint of drs/monitoring: one image, one program per container (the compose profile
# `monitoring`, docs/observability.md). The first argument picks it:
#   prometheus          Prometheus on :9090, data in /prometheus (PROMETHEUS_RETENTION, 15d)
#   alertmanager        Alertmanager on :9093, data in /alertmanager; notifications to
#                       ALERTMANAGER_WEBHOOK_URL (or _FILE) when set (else the alerts are only listed)
#   node-exporter       the machine and the free space of the volumes mounted under /volumes, and
#                       the backup's textfile metrics in /backups/.metrics, on :9100
#   nginx-exporter      nginx's stub_status (nginx:8081, never published) on :9113
#   postgres-exporter   PostgreSQL (DATA_SOURCE_NAME; or DATA_SOURCE_URI, DATA_SOURCE_USER and
#                       DATA_SOURCE_PASS_FILE, read by the exporter itself) on :9187
#   redis-exporter      Redis (REDIS_ADDR, REDIS_PASSWORD or REDIS_PASSWORD_FILE) on :9121
#   blackbox-exporter   TLS handshakes with nginx (server name NGINX_SERVER_NAME) on :9115
#   check-config        check every configuration as the programs would load it (make test-lint):
#                       Prometheus's and its rules (promtool), Alertmanager's with and without a
#                       webhook (amtool), the blackbox exporter's
#   anything else       exec'd as given (promtool, amtool, bash)
# Everything it writes at start goes to /tmp.
set -Eeuo pipefail

log() { printf '[monitoring] %s\n' "$*" >&2; }

# file_env VAR: VAR from the file VAR_FILE names when VAR is empty (Docker secrets on a swarm,
# docs/swarm.md).
file_env() {
	local var=$1 file_var="$1_FILE"
	if [ -z "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		[ -r "${!file_var}" ] || { log "error: $file_var=${!file_var} cannot be read"; exit 64; }
		export "$var=$(cat "${!file_var}")"
	fi
}

# The Alertmanager configuration: one route, to the webhook when there is one.
alertmanager_config() {
	file_env ALERTMANAGER_WEBHOOK_URL
	local url=${ALERTMANAGER_WEBHOOK_URL:-}
	case "$url" in
		'' | http://* | https://*) ;;
		*) log "error: ALERTMANAGER_WEBHOOK_URL must start with http:// or https://"; exit 64 ;;
	esac
	printf '%s\n' \
		'route:' \
		'  receiver: ops' \
		'  group_by: [alertname, job]' \
		'  group_wait: 30s' \
		'  group_interval: 5m' \
		'  repeat_interval: 4h' \
		'receivers:' \
		'  - name: ops'
	if [ -n "$url" ]; then
		printf '    webhook_configs:\n      - url: "%s"\n        send_resolved: true\n' "$url"
	else
		log "ALERTMANAGER_WEBHOOK_URL is empty: alerts are listed in Alertmanager, sent nowhere"
	fi
}

# The blackbox exporter's module: a TLS handshake naming the site, as a browser makes one. The
# certificate is not verified (a self-signed one has an expiry too); only its dates are read.
blackbox_config() {
	local name=${NGINX_SERVER_NAME:-localhost}
	name=${name%% *}
	printf '%s\n' \
		'modules:' \
		'  tls_connect:' \
		'    prober: tcp' \
		'    timeout: 5s' \
		'    tcp:' \
		'      tls: true' \
		'      tls_config:' \
		"        server_name: \"$name\"" \
		'        insecure_skip_verify: true'
}

check_config() {
	promtool check config /etc/prometheus/prometheus.yml
	alertmanager_config >/tmp/alertmanager.yml
	amtool check-config /tmp/alertmanager.yml
	ALERTMANAGER_WEBHOOK_URL=https://hooks.example.test/alerts alertmanager_config >/tmp/alertmanager.yml
	amtool check-config /tmp/alertmanager.yml
	blackbox_config >/tmp/blackbox.yml
	prometheus-blackbox-exporter --config.file=/tmp/blackbox.yml --config.check
}

main() {
	mkdir -p /tmp/prometheus/rules
	case "${1:-prometheus}" in
		prometheus)
			shift || true
			exec prometheus --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus \
				--storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-15d}" --web.listen-address=:9090 "$@"
			;;
		alertmanager)
			shift
			alertmanager_config >/tmp/alertmanager.yml
			exec prometheus-alertmanager --config.file=/tmp/alertmanager.yml --storage.path=/alertmanager \
				--web.listen-address=:9093 --cluster.listen-address= "$@"
			;;
		node-exporter)
			shift
			exec prometheus-node-exporter --web.listen-address=:9100 \
				--collector.textfile.directory=/backups/.metrics "$@"
			;;
		nginx-exporter)
			shift
			exec prometheus-nginx-exporter --web.listen-address=:9113 \
				--nginx.scrape-uri="${NGINX_STATUS_URL:-http://nginx:8081/stub_status}" "$@"
			;;
		postgres-exporter)
			shift
			# postmaster: its start time (the ContainerRestarting alert); off by default.
			exec prometheus-postgres-exporter --web.listen-address=:9187 --collector.postmaster "$@"
			;;
		redis-exporter)
			shift
			file_env REDIS_PASSWORD
			exec prometheus-redis-exporter --web.listen-address=:9121 "$@"
			;;
		blackbox-exporter)
			shift
			blackbox_config >/tmp/blackbox.yml
			exec prometheus-blackbox-exporter --config.file=/tmp/blackbox.yml --web.listen-address=:9115 "$@"
			;;
		check-config) check_config ;;
		*) exec "$@" ;;
	esac
}

main "$@"
