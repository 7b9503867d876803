#!/usr/bin/env bash
# The apimesh gateway vs nginx as a reverse proxy on loopback, side by side
# in one run, with the upstream called directly as the baseline.
#
#   scripts/gateway-bench.sh [--duration 5s] [--rounds 5] [--connections 32]
#                            [--targets "direct nginx gateway"]
#
# Targets:
#   direct       the upstream alone (`bench_server --mode bare`), on core 0
#   nginx        nginx, one worker, upstream keepalive 32, HTTP/1.1 to the
#                upstream, access log off
#   gateway      `examples/gateway.rs`, one route `path_prefix = "/"` to the
#                upstream, access log off (`access_log_sample = 0`,
#                RUST_LOG=warn)
#   gateway-1t   the same with one Tokio worker thread (TOKIO_WORKER_THREADS=1)
#   gateway-info the same as `gateway` with RUST_LOG=info (spans formatted)
#
# The proxies and the upstream run on core 0 and wrk on core 1 (as in
# loadtest.sh: "the server" is proxy + upstream here), so core 0 is the
# bottleneck and wrk never is. Each round runs every target in turn
# (wrk -t1 --latency); the script prints the median requests/s, p50, p99,
# the proxy's own CPU time per request (user and system, from /proc, all
# its processes; for `direct`, the upstream's), and the median of each
# round's ratio to nginx (rounds are adjacent in time, so the ratio is
# steadier than the throughput on a shared machine). nginx is
# installed with apt-get when missing; Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5s rounds=5 connections=32 targets="direct nginx gateway"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

apt_updated=""
need() { # command package...
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return
  echo "$cmd is missing; installing $* with apt-get" >&2
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  local p
  for p in "$@"; do apt-get install -y -qq "$p" >/dev/null 2>&1 && return; done
  echo "could not install $cmd" >&2; exit 1
}
need wrk wrk
export PATH="$PATH:/usr/sbin"
need nginx nginx-light nginx
need curl curl

cargo build --release -q --example gateway --example bench_server
bin=${CARGO_TARGET_DIR:-target}/release/examples

proxy_cpu="" other_cpu=""
if [ "$(nproc)" -ge 2 ]; then proxy_cpu="taskset -c 0"; other_cpu="taskset -c 1"; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

dir=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

path=/svc/0/items/1
wait_ok() { # url
  for _ in $(seq 200); do curl -sf "$1" >/dev/null && return; sleep 0.05; done
  echo "no answer from $1" >&2; exit 1
}

# The proxies' upstream; and the same server, alone, as the baseline.
up_port=$(free_port)
$proxy_cpu "$bin/bench_server" --mode bare --listen "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
declare -A port pid
port[direct]=$(free_port)
$proxy_cpu "$bin/bench_server" --mode bare --listen "127.0.0.1:${port[direct]}" >/dev/null &
pid[direct]=$!; pids+=($!)

if [[ " $targets " == *" nginx "* ]]; then
  port[nginx]=$(free_port)
  mkdir -p "$dir/nginx"
  cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/body;
  proxy_temp_path $dir/nginx/proxy;
  fastcgi_temp_path $dir/nginx/fastcgi;
  uwsgi_temp_path $dir/nginx/uwsgi;
  scgi_temp_path $dir/nginx/scgi;
  upstream up {
    server 127.0.0.1:$up_port;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port[nginx]};
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  $proxy_cpu nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" &
  pid[nginx]=$!; pids+=($!)
fi

cat >"$dir/gateway.toml" <<EOF
[observability]
access_log_sample = 0

[[services]]
name = "upstream"
endpoints = [{ address = "127.0.0.1:$up_port" }]

[[routes]]
id = "all"
match = { path_prefix = "/" }
destinations = [{ service = "upstream" }]
EOF
start_gateway() { # target env...
  local t=$1; shift
  port[$t]=$(free_port)
  env "$@" $proxy_cpu "$bin/gateway" --config "$dir/gateway.toml" \
    --listen "127.0.0.1:${port[$t]}" --admin "127.0.0.1:$(free_port)" >"$dir/$t.log" 2>&1 &
  pid[$t]=$!; pids+=($!)
}
for t in $targets; do
  case $t in
    direct|nginx) ;;
    gateway) start_gateway gateway RUST_LOG=warn ;;
    gateway-1t) start_gateway gateway-1t RUST_LOG=warn TOKIO_WORKER_THREADS=1 ;;
    gateway-info) start_gateway gateway-info RUST_LOG=info ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
wait_ok "http://127.0.0.1:$up_port$path"
for t in $targets; do wait_ok "http://127.0.0.1:${port[$t]}$path"; done

# User and system CPU time (ticks) of a process and its children (nginx's
# worker).
ticks() {
  local p user=0 sys=0 u s
  for p in $1 $(ps -o pid= --ppid "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$(( user + u )); sys=$(( sys + s ))
  done
  echo "$user $sys"
}
hz=$(getconf CLK_TCK)

results="$dir/results"
run() { # target [duration]
  local t=$1 d=${2:-$duration} out before after
  before=$(ticks "${pid[$t]}")
  out=$($other_cpu wrk -t1 -c"$connections" -d"$d" --latency "http://127.0.0.1:${port[$t]}$path")
  after=$(ticks "${pid[$t]}")
  [ -n "${2:-}" ] && return
  local rps reqs p50 p99 non2xx errors
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  errors=$(awk '/Socket errors/ {print}' <<<"$out")
  if [ -n "$non2xx" ] || [ -n "$errors" ]; then echo "$t: $non2xx non-2xx, $errors" >&2; exit 1; fi
  local user sys
  read -r user sys < <(python3 -c "
b, a = '$before'.split(), '$after'.split()
print(*[(int(y) - int(x)) / $hz * 1e6 / $reqs for x, y in zip(b, a)])")
  echo "$t $rps $p50 $p99 $user $sys" >>"$results"
  printf '%-12s %12s req/s  p50 %8s  p99 %8s  cpu %6.2f us/req (user %.2f, sys %.2f)\n' \
    "$t" "$rps" "$p50" "$p99" "$(python3 -c "print($user + $sys)")" "$user" "$sys"
}

echo "gateway-bench: $rounds rounds x $duration, $connections connections, $(nproc) cores, $(nginx -v 2>&1)"
for t in $targets; do run "$t" 1s; done # warm-up: connections, pools
for _ in $(seq "$rounds"); do for t in $targets; do run "$t"; done; done

python3 - "$results" <<'PY'
import statistics, sys
def us(v):
    for suf, f in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(suf): return float(v[:-len(suf)]) * f
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    t, rps, p50, p99, user, sys_ = line.split()
    rows.setdefault(t, []).append(
        (float(rps), us(p50), us(p99), float(user) + float(sys_), float(user), float(sys_)))
med = {t: [statistics.median(c) for c in zip(*r)] for t, r in rows.items()}
print()
print("median of %d rounds" % len(next(iter(rows.values()))))
for t, (rps, p50, p99, cpu, user, sys_) in med.items():
    ratio = ""
    if "nginx" in rows and t != "nginx":
        r = statistics.median(a[0] / b[0] for a, b in zip(rows[t], rows["nginx"]))
        ratio = f"  ratio to nginx {r:.3f}"
    print(f"{t:12} {rps:12.0f} req/s  p50 {p50:8.1f}us  p99 {p99:8.1f}us"
          f"  cpu {cpu:6.2f}us/req (user {user:.2f}, sys {sys_:.2f}){ratio}")
PY
