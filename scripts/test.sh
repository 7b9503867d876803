#!/usr/bin/env bash
# The whole test suite: the one command CI runs and the README gives.
#
#   scripts/test.sh
#
# Installs the system packages the tests need (with apt-get, as root, when
# missing), then runs: rustfmt check, clippy with warnings denied on every
# target and feature (which also proves benches and examples compile), every
# test, and the docs with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The dashboard test opens /mesh/dashboard in headless Chromium.
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
# The etcd registry's tests start a real etcd (tests/etcd/support.rs).
[ -x /usr/bin/etcd ] || command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
# Its TLS test makes a throwaway CA with the openssl command.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The auth interop tests mint tokens with PyJWT, an independent implementation.
if ! python3 -c "import jwt, cryptography" >/dev/null 2>&1; then
  echo "installing PyJWT and cryptography with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check "pyjwt[crypto]>=2.8" \
    || python3 -m pip install --quiet --break-system-packages "pyjwt[crypto]>=2.8"
fi

step() { printf '\n==> %s\n' "$*" >&2; "$@"; }

# mesh-tower must never depend on a registry backend.
if cargo tree -p mesh-tower --locked -e normal | grep -E 'mesh-registry|etcd-client|notify' >&2; then
  echo "mesh-tower depends on a registry backend (see above)" >&2
  exit 1
fi

step cargo fmt --all --check
step cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
step cargo test --workspace --all-features --locked
RUSTDOCFLAGS="-D warnings" step cargo doc --workspace --no-deps --all-features --locked
