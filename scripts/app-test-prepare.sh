#!/usr/bin/env bash
# Prepare this machine for the app's browser test (app/tests/test_browser_ui.py): Debian's
# chromium, driven by Playwright (a pinned test extra of app/) through executable_path.
# Playwright's own browser download is never used (no such download is reachable).
# Idempotent: installs only when missing; concurrent callers serialise on a lock.
set -euo pipefail

CHROMIUM="${PERSONAPLEX_CHROMIUM:-/usr/bin/chromium}"
LOCK=/var/lock/personaplex-app-test-prepare.lock

if [[ -x $CHROMIUM ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "app-test-prepare: $CHROMIUM is missing; install it with: sudo apt-get install -y chromium" >&2
  exit 1
fi
exec 9>"$LOCK"
flock 9
if [[ ! -x $CHROMIUM ]]; then
  echo "app-test-prepare: installing chromium (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
"$CHROMIUM" --version
