#!/usr/bin/env bash
# Prepare this machine to run Molecule's podman driver with systemd containers, and
# build the local Debian 12 image the scenarios use (no image registry is reachable).
# Idempotent: installs only what is missing and reuses the image when it exists.
# Concurrent callers serialise on a lock.
set -euo pipefail

IMAGE="${MOLECULE_IMAGE:-localhost/personaplex-molecule-debian12:latest}"
LOCK=/var/lock/personaplex-molecule-host.lock

exec 9>"$LOCK"
flock 9

# command -> Debian package. gpg, dpkg-deb and cc build the signed stand-in apt
# repositories (molecule/shared/standin_repo.py) on this machine.
declare -A pkg_of=(
  [podman]=podman [runc]=runc [debootstrap]=debootstrap
  [gpg]=gnupg [dpkg-deb]=dpkg [cc]=gcc
)
need=()
for cmd in "${!pkg_of[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("${pkg_of[$cmd]}")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" uidmap slirp4netns fuse-overlayfs >/dev/null
fi

# These machines lack CAP_SYS_RESOURCE (so no default ulimits) and have a hybrid
# cgroup layout that crun rejects (so runc).
conf=/etc/containers/containers.conf
want=$'[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
if [[ ! -f $conf ]] || ! grep -q '^runtime = "runc"' "$conf" || ! grep -q '^default_ulimits = \[\]' "$conf"; then
  mkdir -p /etc/containers
  [[ -f $conf ]] && cp "$conf" "$conf.bak.$(date +%s)"
  printf '%s' "$want" >"$conf"
  echo "wrote $conf"
fi

if podman image exists "$IMAGE"; then
  echo "image $IMAGE exists (cached; 'podman rmi $IMAGE' and rerun to rebuild)"
  exit 0
fi

start=$(date +%s)
rootfs=$(mktemp -d /var/tmp/molecule-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $IMAGE (debootstrap bookworm, about a minute on an idle machine)"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,python3,python3-apt,dbus,iproute2,sudo,ca-certificates,gnupg,curl,procps,kmod,pciutils \
  bookworm "$rootfs" >/dev/null
# Without a machine-id systemd generates one at each boot, which is what we want;
# make the file exist but empty so tools that expect it find it.
: >"$rootfs/etc/machine-id"
# The downloaded .debs are not needed in the image (about 100 MB less to import and store).
rm -f "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$IMAGE" >/dev/null
echo "built $IMAGE in $(($(date +%s) - start)) s"
