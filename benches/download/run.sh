#!/usr/bin/env bash
# Download serving: 1,000 concurrent downloads of a 1.6 MB firmware image from ota's download
# server (ota_local::download::Downloads as `ota serve` runs it: sendfile, signed links) and
# from nginx serving the same
# file (sendfile on, access_log off), both on 127.0.0.1, measured with wrk in the same run.
# Prints MB/s and requests/s for each run (in ABBA order) and the ratio of the means.
#
#   bash benches/download/run.sh            # from the repository root
#
# Settings (environment): DURATION (15s), CONNECTIONS (1000), THREADS (2), IMAGE_BYTES
# (1600000), NGINX_PORT (18080), OTA_PORT (18081). Not part of CI: it installs packages and
# its figures depend on the machine. wrk shares the machine's cores with the server it
# measures, as it does for nginx.
set -euo pipefail

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-1000}
THREADS=${THREADS:-2}
IMAGE_BYTES=${IMAGE_BYTES:-1600000}
NGINX_PORT=${NGINX_PORT:-18080}
OTA_PORT=${OTA_PORT:-18081}
VERSION=2.0.0
DEVICE_TYPE=pet_feeder

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

# --- tools ------------------------------------------------------------------------------
nginx_bin=$(command -v nginx || true)
[ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
if [ -z "$nginx_bin" ] || ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "need nginx, wrk and curl (Debian: apt-get install -y nginx wrk curl)" >&2
        exit 1
    fi
    # The nginx package starts a system nginx on port 80 when it is installed; a
    # policy-rc.d that says "no" keeps it from doing so (only when none is in place).
    policy=/usr/sbin/policy-rc.d
    added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl >/dev/null
    [ -n "$added_policy" ] && rm -f "$policy"
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
fi

# 1,000 client sockets plus 1,000 server sockets per server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- the image, in the catalog layout -------------------------------------------------------
work=$(mktemp -d /tmp/ota-download-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$work/nginx/nginx.pid" ]; then kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; fi
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT

catalog="$work/catalog"
artifact="$catalog/firmwares/v$VERSION/$DEVICE_TYPE"
mkdir -p "$artifact"
head -c "$IMAGE_BYTES" /dev/urandom >"$artifact/firmware.bin"
sha=$(sha256sum "$artifact/firmware.bin" | cut -d' ' -f1)
echo "$sha  firmware.bin" >"$artifact/firmware.sha256"
# nginx's workers run as nobody when started by root: they must be able to read the file.
chmod -R a+rX "$work"

# --- nginx ----------------------------------------------------------------------------------
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile 65536;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon on;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $catalog;
    }
}
EOF
"$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx"
nginx_url="http://127.0.0.1:$NGINX_PORT/firmwares/v$VERSION/$DEVICE_TYPE/firmware.bin"

# --- ota's server ---------------------------------------------------------------------------
cargo build --release -q -p ota-benches --bin download_server
target_dir=${CARGO_TARGET_DIR:-$repo/target}
"$target_dir/release/download_server" "$catalog" "$OTA_PORT" "$VERSION" "$DEVICE_TYPE" >"$work/ota.out" 2>"$work/ota.err" &
ota_pid=$!
pids+=("$ota_pid")
for _ in $(seq 1 100); do
    [ -s "$work/ota.out" ] && break
    sleep 0.1
done
ota_url=$(head -n1 "$work/ota.out")
[ -n "$ota_url" ] || { cat "$work/ota.err" >&2; exit 1; }

# --- both serve the same bytes --------------------------------------------------------------
for url in "$nginx_url" "$ota_url"; do
    got=$(curl -fsS "$url" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$sha" ] || { echo "wrong bytes from $url" >&2; exit 1; }
done

# --- measure --------------------------------------------------------------------------------
# Throughput counts completed downloads only (requests/s x image size, in 10^6 bytes): wrk's
# own Transfer/sec also counts the partial bodies still in flight when the run stops, and
# prints two digits.
req_per_s() { awk '/^Requests\/sec:/ { printf "%.1f", $2 }' "$1"; }
mb_per_s() { awk -v r="$(req_per_s "$1")" -v b="$IMAGE_BYTES" 'BEGIN { printf "%.0f", r * b / 1e6 }'; }

run_wrk() {
    local name=$1 url=$2 out="$work/wrk-$1.txt"
    # A generous timeout: a download that is slow under load still counts once it completes.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 30s "$url" >"$out" 2>&1
    echo "== $name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --timeout 30s" >&2
    cat "$out" >&2
}

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "image: $IMAGE_BYTES bytes; $CONNECTIONS connections, $THREADS wrk threads, $DURATION each"
# In ABBA order (nginx, ota, ota, nginx): whichever runs first on this machine ran faster
# (up to 1.7x for the same server), so one run each measured the order as much as the server.
run_wrk nginx-1 "$nginx_url"
run_wrk ota-1 "$ota_url"
run_wrk ota-2 "$ota_url"
run_wrk nginx-2 "$nginx_url"
ota_peak_rss=$(awk '/^VmHWM:/ { printf "%.0f MB", $2 * 1024 / 1e6 }' "/proc/$ota_pid/status")

for name in nginx-1 ota-1 ota-2 nginx-2; do
    if grep -q -e 'Non-2xx' -e 'Socket errors' "$work/wrk-$name.txt"; then
        echo "warning: $name: $(grep -e 'Non-2xx' -e 'Socket errors' "$work/wrk-$name.txt" | tr -s ' ')"
    fi
    printf '%-8s %10s MB/s %10s requests/s\n' "$name" "$(mb_per_s "$work/wrk-$name.txt")" "$(req_per_s "$work/wrk-$name.txt")"
done
nginx_rps=$(awk -v a="$(req_per_s "$work/wrk-nginx-1.txt")" -v b="$(req_per_s "$work/wrk-nginx-2.txt")" 'BEGIN { printf "%.1f", (a + b) / 2 }')
ota_rps=$(awk -v a="$(req_per_s "$work/wrk-ota-1.txt")" -v b="$(req_per_s "$work/wrk-ota-2.txt")" 'BEGIN { printf "%.1f", (a + b) / 2 }')
echo "ota's server peak RSS: $ota_peak_rss"
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v o="$ota_rps" -v n="$nginx_rps" -v b="$IMAGE_BYTES" \
    'BEGIN { printf "mean of two runs each: nginx %.1f requests/s (%.0f MB/s), ota %.1f requests/s (%.0f MB/s)\nratio ours/nginx: %.2f\n", n, n * b / 1e6, o, o * b / 1e6, o / n }'
