#!/usr/bin/env bash
# Sets up and runs the whole test suite: installs what is missing, builds
# three times and runs the tests in each, ctest running $(nproc) at once
# (files that stop or restart ZooKeeper servers are RUN_SERIAL):
#   1. gcc with warnings as errors: every test, integration tests with
#      [proxy] workers = 1; those whose result does not depend on how
#      zkgate is built (style, Dockerfile lint and image, the harness
#      checks, cmake --install, the scripts) run in this stage only;
#   2. clang with AddressSanitizer and UndefinedBehaviorSanitizer: unit,
#      fuzz and integration tests with workers = 2;
#   3. clang with ThreadSanitizer: unit tests, and the integration files
#      whose code runs on more than one thread (worker loops fed by the
#      control loop, shared health marks, pools and reloads handed across,
#      resolver threads) with workers = 2: $tsan_files below.
# A stage whose tests fail does not stop the next: the run ends with the
# failures of all three (exit status 1), and each stage's wall time.
# The tests start their own ZooKeeper servers, backends and clients.
# Usage: scripts/test.sh [ctest arguments, e.g. -L unit or -R registry]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test
jobs=$(nproc)
# What stage 1 runs alone: the same result in every build.
neutral='^(style|docker)\.|\.test_(harness|install|scripts)$'
stage() { # NAME: prints the stage's wall time when it ends
  echo "== $1: $((SECONDS - t0)) s" >&2
  t0=$SECONDS
}
t0=$SECONDS
failed="" # the stages whose tests failed

echo "== build: gcc, -Werror" >&2
cmake -S . -B build -DZKGATE_WERROR=ON -DZKGATE_TEST_MODES=1 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
stage "built: gcc"
echo "== tests: gcc build" >&2
ctest --test-dir build --output-on-failure --timeout 600 -j"$jobs" "$@" ||
  failed="$failed gcc"
stage "tested: gcc"

echo "== build: clang-14, -fsanitize=address,undefined, -Werror" >&2
CC=clang-14 cmake -S . -B build-asan -DZKGATE_WERROR=ON -DZKGATE_SANITIZE=ON \
  -DZKGATE_FUZZ=ON -DZKGATE_TEST_MODES=2 -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
stage "built: sanitizers"
echo "== tests: sanitizer build" >&2
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 600 -j"$jobs" \
  -E "$neutral" "$@" || failed="$failed sanitizers"
stage "tested: sanitizers"

# The files that drive no thread of their own beyond what these do (the
# registry clients, zkgate-register, the configuration and CLI checks,
# request parsing) are left to the other two stages: they add minutes,
# not races.
tsan_files="test_workers;test_http;test_http2;test_grpc;test_tcp_proxy;test_tcp_splice;test_sni"
tsan_files="$tsan_files;test_tls;test_upstream_tls;test_reload;test_operations"
tsan_files="$tsan_files;test_registry;test_events;test_balance"
echo "== build: clang-14, -fsanitize=thread, -Werror" >&2
CC=clang-14 cmake -S . -B build-tsan -DZKGATE_WERROR=ON -DZKGATE_TSAN=ON \
  -DZKGATE_TEST_MODES=2 -DZKGATE_TEST_ONLY="$tsan_files" \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$jobs"
stage "built: ThreadSanitizer"
echo "== tests: ThreadSanitizer build" >&2
TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp \
  ctest --test-dir build-tsan --output-on-failure --timeout 600 -j"$jobs" \
  -E "$neutral" "$@" || failed="$failed ThreadSanitizer"
stage "tested: ThreadSanitizer"
if [ -n "$failed" ]; then
  echo "== tests failed in:$failed" >&2
  exit 1
fi
