#!/usr/bin/env bash
# Prepare this machine for the app's tests that drive real Debian programs:
#   - app/tests/test_browser_ui.py: Debian's chromium, driven by Playwright (a pinned test extra
#     of app/) through executable_path; Playwright's own browser download is never used.
#   - app/tests/test_fleet_simulation.py: Debian's haproxy in front of local voice servers.
#   - app/tests/test_ui_decoder.py: Debian's nodejs runs the official UI's Opus decoder worker.
# Idempotent: installs only what is missing; concurrent callers serialise on a lock.
set -euo pipefail

CHROMIUM="${PERSONAPLEX_CHROMIUM:-/usr/bin/chromium}"
LOCK=/var/lock/personaplex-app-test-prepare.lock

missing() {  # the Debian packages whose program is not there
  [[ -x $CHROMIUM ]] || echo chromium
  command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || echo haproxy
  command -v node >/dev/null 2>&1 || echo nodejs
}

need=$(missing)
[[ -z $need ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "app-test-prepare: missing $(echo $need); install with: sudo apt-get install -y $(echo $need)" >&2
  exit 1
fi
exec 9>"$LOCK"
flock 9
need=$(missing)
if [[ -n $need ]]; then
  echo "app-test-prepare: installing $(echo $need) (Debian packages)"
  apt-get update -qq
  # shellcheck disable=SC2086  # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
"$CHROMIUM" --version
