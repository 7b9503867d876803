#!/usr/bin/env bash
# Whole-stack throughput on loopback: bare axum vs the same handler behind
# apimesh, side by side in one run.
#
#   scripts/loadtest.sh [--duration 5s] [--rounds 3] [--connections 32] [--routes 100]
#                       [--modes "bare mesh mesh-jwt"]
#
# Modes: `bare` (axum alone), `mesh` (behind apimesh, routing only),
# `mesh-jwt` (every route requires an RS256 token; the clients reuse one).
# `mesh-limit` (a per-IP rate limit on every route, in process) and
# `mesh-redis` (the same limit counted in Redis; the script starts a
# redis-server on loopback, installing it with apt-get if missing).
# Every mode is sent the same request, `Authorization` header included.
# Builds in release, pins each server to core 0 and wrk to core 1 (when
# there are two cores), runs the modes in turn for --rounds rounds, and
# prints the median requests/s, p50 and p99 of each and its ratio to bare.
# Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5s rounds=3 connections=32 routes=100 modes="bare mesh"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --routes) routes=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null; then
  echo "wrk is missing; installing it with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

features=()
redis_url=""
if [[ " $modes " == *" mesh-redis "* ]]; then
  command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
  redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  redis_dir=$(mktemp -d)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" >/dev/null &
  redis_pid=$!
  redis_url="redis://127.0.0.1:$redis_port/"
  features=(--features redis)
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi
cargo build --release --example bench_server -q "${features[@]}"
bin=target/release/examples/bench_server
token=$("$bin" --print-token)

server_cpu="" client_cpu=""
if [ "$(nproc)" -ge 2 ]; then server_cpu="taskset -c 0"; client_cpu="taskset -c 1"; fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

results=$(mktemp)
trap 'rm -f "$results"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true' EXIT

run() { # mode
  local mode=$1 port
  port=$(free_port)
  local extra=()
  [ -n "$redis_url" ] && extra=(--redis "$redis_url")
  $server_cpu "$bin" --mode "$mode" --listen "127.0.0.1:$port" --routes "$routes" "${extra[@]}" >/dev/null &
  pid=$!
  for _ in $(seq 100); do
    curl -sf -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$port/svc/$(( (routes - 1) / 3 * 3 ))/items/1" >/dev/null && break
    sleep 0.05
  done
  local out
  # Every mode gets the same request, token included, so the baseline pays
  # for parsing the same headers; only mesh-jwt checks it.
  local auth=(-H "Authorization: Bearer $token")
  out=$($client_cpu wrk -t1 -c"$connections" -d"$duration" --latency "${auth[@]}" \
        "http://127.0.0.1:$port/svc/$(( (routes - 1) / 3 * 3 ))/items/1")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  if [ -n "$non2xx" ]; then echo "$mode: $non2xx non-2xx responses" >&2; exit 1; fi
  echo "$mode $rps $p50 $p99" >>"$results"
  printf '%-8s %12s req/s  p50 %8s  p99 %8s\n' "$mode" "$rps" "$p50" "$p99"
}

echo "loadtest: $rounds rounds x $duration, $connections connections, $routes routes, $(nproc) cores"
for _ in $(seq "$rounds"); do for m in $modes; do run "$m"; done; done

python3 - "$results" <<'PY'
import statistics, sys
def us(v):
    for suf, f in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(suf): return float(v[:-len(suf)]) * f
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    mode, rps, p50, p99 = line.split()
    rows.setdefault(mode, []).append((float(rps), us(p50), us(p99)))
med = {m: [statistics.median(c) for c in zip(*r)] for m, r in rows.items()}
print()
first = next(iter(rows))
print("median of %d rounds" % len(rows[first]))
for m, (rps, p50, p99) in med.items():
    ratio = f"  ratio to bare {rps / med['bare'][0]:.3f}" if "bare" in med and m != "bare" else ""
    print(f"{m:8} {rps:12.0f} req/s  p50 {p50:8.1f}us  p99 {p99:8.1f}us{ratio}")
PY
