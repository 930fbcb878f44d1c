#!/usr/bin/env bash
# Run Molecule scenarios one after another from the repository root, print each
# scenario's wall time, and stop at the first failure.
#
#   scripts/run-molecule.sh                 # the default list below
#   scripts/run-molecule.sh docker          # only these scenarios, in this order
#   MOLECULE_COMMAND=converge scripts/run-molecule.sh docker   # another molecule command
#
# Add a new scenario to DEFAULT_SCENARIOS once it runs on a machine without GPU
# or cloud access (the gce scenario never belongs here).
set -euo pipefail

DEFAULT_SCENARIOS=(
  # the host layer: the GPU host roles, in the order configure.yml applies them
  nvidia_driver
  cuda_toolkit
  docker
  nvidia_container_toolkit
  # the application layer: configure.yml end to end, then its repair of drift (same instance)
  full_stack
  # the README's apt-get line, make setup and make plan as root on a stock Debian 12
  stock_debian
)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$root/ansible.cfg}"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
command=${MOLECULE_COMMAND:-test}

if (($#)); then
  scenarios=("$@")
else
  scenarios=("${DEFAULT_SCENARIOS[@]}")
fi

command -v molecule >/dev/null || {
  echo "molecule not found: run 'make setup' first (it builds .venv)" >&2
  exit 2
}
for s in "${scenarios[@]}"; do
  [[ -f molecule/$s/molecule.yml ]] || {
    have=$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done | tr '\n' ' ')
    echo "no scenario molecule/$s/molecule.yml (have: $have)" >&2
    exit 2
  }
done

declare -a summary=()
total_start=$(date +%s)
for s in "${scenarios[@]}"; do
  echo "=== molecule $command -s $s"
  start=$(date +%s)
  log=$(mktemp "${TMPDIR:-/tmp}/molecule-$s.XXXXXX.log")
  if molecule "$command" -s "$s" 2>&1 | tee "$log"; then
    rc=0
  else
    rc=${PIPESTATUS[0]}
  fi
  took=$(($(date +%s) - start))
  summary+=("$(printf '%-32s %5d s  %s' "$s" "$took" "$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (rc=$rc)")")")
  printf '=== %s: %d s (rc=%d)\n' "$s" "$took" "$rc"
  ((rc != 0)) || rm -f "$log"
  if ((rc != 0)); then
    # CI keeps only the tail of the output: repeat what failed (fatal/failed task lines
    # with the task name before them) so it is there too.
    echo "--- what failed in $s (from $log)"
    grep -n -B3 -A12 -E '^(fatal|failed):|^ERROR|FAILED!|^E  ' "$log" | grep -v 'FAILED - RETRYING' | tail -n 120 || true
    printf '%s\n' "--- summary" "${summary[@]}"
    exit "$rc"
  fi
done
printf '%s\n' "--- summary" "${summary[@]}"
printf 'total: %d s\n' "$(($(date +%s) - total_start))"
