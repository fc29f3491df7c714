#!/usr/bin/env bash
# Sets up and runs the whole test suite: installs what is missing, builds
# three times and runs every test in each: gcc with warnings as errors
# (integration tests with [proxy] workers = 1), clang with AddressSanitizer
# and UndefinedBehaviorSanitizer (integration tests with workers = 2), clang
# with ThreadSanitizer (integration tests with workers = 2). The tests start
# their own ZooKeeper servers, backends and clients.
# Usage: scripts/test.sh [ctest arguments, e.g. -L unit or -R registry]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test
jobs=$(nproc)

echo "== build: gcc, -Werror" >&2
cmake -S . -B build -DZKGATE_WERROR=ON -DZKGATE_TEST_MODES=1 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== tests: gcc build" >&2
ctest --test-dir build --output-on-failure --timeout 600 "$@"

echo "== build: clang-14, -fsanitize=address,undefined, -Werror" >&2
CC=clang-14 cmake -S . -B build-asan -DZKGATE_WERROR=ON -DZKGATE_SANITIZE=ON \
  -DZKGATE_FUZZ=ON -DZKGATE_TEST_MODES=2 -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests: sanitizer build" >&2
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 600 "$@"

echo "== build: clang-14, -fsanitize=thread, -Werror" >&2
CC=clang-14 cmake -S . -B build-tsan -DZKGATE_WERROR=ON -DZKGATE_TSAN=ON \
  -DZKGATE_TEST_MODES=2 -DZKGATE_TEST_ONLY= -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$jobs"
echo "== tests: ThreadSanitizer build" >&2
TSAN_OPTIONS=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp \
  ctest --test-dir build-tsan --output-on-failure --timeout 600 -L 'unit|workers2|integration' \
  -E 'style|lint|docker' "$@"
