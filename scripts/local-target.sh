#!/usr/bin/env bash
# The local target: one command from a fresh Debian machine to a PersonaPlex server at
# https://localhost:8998 (CPU profile, tiny random test model; no cloud account).
#
#   scripts/local-target.sh            # create/start the container, run configure.yml
#   scripts/local-target.sh --destroy  # remove the container (the wheelhouse is kept)
#   scripts/local-target.sh -- --tags server   # extra ansible-playbook arguments
#
# It prepares podman and the local Debian 12 systemd image (scripts/molecule-host-prepare.sh),
# starts a privileged systemd container `personaplex-local` publishing 127.0.0.1:8998, mounts
# the control node's wheelhouse (.work/wheelhouse, filled once by pip download) read-only,
# and runs playbooks/configure.yml with inventory/local.yml. Rerun it at any time: it
# repairs drift and changes nothing else.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
NAME=personaplex-local
IMAGE="${MOLECULE_IMAGE:-localhost/personaplex-molecule-debian12:latest}"
PORT="${PERSONAPLEX_LOCAL_PORT:-8998}"

if [[ ${1:-} == --destroy ]]; then
  podman rm -f "$NAME" >/dev/null 2>&1 && echo "removed $NAME" || echo "no container $NAME"
  exit 0
fi
[[ ${1:-} == -- ]] && shift

start=$(date +%s)
if [[ ! -x .venv/bin/ansible-playbook ]]; then
  echo "--- control-node toolchain (.venv)"
  scripts/setup-venv.sh python3 .venv -r requirements.txt  # no half-built .venv on failure
fi
export PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg"

echo "--- podman and the local Debian 12 systemd image"
scripts/molecule-host-prepare.sh

mkdir -p .work/wheelhouse
if ! podman container exists "$NAME"; then
  echo "--- creating container $NAME (https://localhost:$PORT)"
  podman run -d --name "$NAME" --hostname "$NAME" --privileged --systemd=always \
    -p "127.0.0.1:$PORT:8998" -v "$root/.work/wheelhouse:/opt/wheelhouse:ro" \
    "$IMAGE" /sbin/init >/dev/null
elif [[ $(podman container inspect -f '{{.State.Running}}' "$NAME") != true ]]; then
  podman start "$NAME" >/dev/null
fi
state=$(podman exec "$NAME" systemctl is-system-running --wait || true)
echo "container systemd: $state"

echo "--- configure.yml (inventory/local.yml)"
ansible-playbook -i inventory/local.yml playbooks/configure.yml "$@"
echo "--- done in $(($(date +%s) - start)) s: open https://localhost:$PORT"
echo "    token: podman exec $NAME cat /etc/personaplex/access-token"
