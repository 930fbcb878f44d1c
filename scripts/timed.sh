#!/usr/bin/env bash
# timed.sh NAME CMD...: run CMD, then print how long stage NAME took (CI reads these lines).
set -uo pipefail
name=$1; shift
start=$(date +%s)
echo "::: ${name} started $(date -u +%H:%M:%S)"
"$@"; rc=$?
echo "::: ${name} took $(($(date +%s) - start)) s (rc=${rc})"
exit "$rc"
