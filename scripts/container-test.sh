#!/usr/bin/env bash
# Builds the FROM-scratch image (deploy/Containerfile.static) around a static
# freesky binary and runs it with podman: /health and /ready must answer from the
# container, and SIGTERM (freesky is PID 1) must stop it cleanly.
#
# The static binary is a release build (several minutes on 2 cores), so it is built
# only when FREESKY_CONTAINER_TEST=1 asks for it; FREESKY_STATIC_BIN names one built
# already. Otherwise, and where podman cannot run containers, it says why and skips.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { printf 'container test skipped: %s\n' "$*"; exit 0; }
target=x86_64-unknown-linux-gnu
static=${FREESKY_STATIC_BIN:-}
if [ -z "$static" ]; then
  [ "${FREESKY_CONTAINER_TEST:-}" = 1 ] ||
    skip "set FREESKY_CONTAINER_TEST=1 to build the static release binary (several minutes) and test the image"
  [ "$(uname -m)" = x86_64 ] || skip "the static build is set up for $target only"
  echo "--> static release build for $target"
  t=$SECONDS
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$target" --bin freesky
  echo "    (${SECONDS - t}s)"
  static=target/$target/release/freesky
fi
# A static binary has no program interpreter (ld-linux) to ask for.
if readelf -l "$static" | grep -q 'program interpreter'; then
  echo "error: $static is dynamically linked" >&2
  exit 1
fi

if ! command -v podman >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends podman runc >/dev/null ||
    skip "podman could not be installed"
fi
podman_run=(podman --runtime runc)
# This kind of machine needs explicit limits (the defaults exceed what it allows).
limits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

ctx=$(mktemp -d /tmp/freesky-image.XXXXXX)
name=freesky-test-$$
cleanup() {
  "${podman_run[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${podman_run[@]}" rmi -f "localhost/freesky:static-test-$$" >/dev/null 2>&1 || true
  rm -rf "$ctx"
}
trap cleanup EXIT
cp "$static" "$ctx/freesky"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/" 2>/dev/null || : >"$ctx/ca-certificates.crt"
mkdir "$ctx/data"
echo "--> podman build -f deploy/Containerfile.static"
"${podman_run[@]}" build -q -f deploy/Containerfile.static -t "localhost/freesky:static-test-$$" "$ctx" >/dev/null ||
  skip "podman cannot build images here"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${podman_run[@]}" run -d --name "$name" "${limits[@]}" -p "127.0.0.1:$port:8005" \
  "localhost/freesky:static-test-$$" >/dev/null 2>"$ctx/run.err" ||
  skip "podman cannot run containers here: $(tail -1 "$ctx/run.err")"
ok=""
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/health" >"$ctx/health" 2>/dev/null; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { "${podman_run[@]}" logs "$name" >&2; echo "error: /health did not answer from the container" >&2; exit 1; }
echo "    /health from the container: $(cat "$ctx/health")"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "    /ready: $(curl -sS "http://127.0.0.1:$port/ready")"
t=$SECONDS
"${podman_run[@]}" stop -t 20 "$name" >/dev/null
code=$("${podman_run[@]}" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { "${podman_run[@]}" logs "$name" >&2; echo "error: exit code $code after SIGTERM" >&2; exit 1; }
echo "    SIGTERM as PID 1: exited 0 in $((SECONDS - t))s"
echo "container test passed ($(du -h "$static" | cut -f1) binary)"
