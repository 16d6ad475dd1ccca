#!/bin/bash
# Install everything kvm-cpuid-rig needs on a fresh Debian 12 (bookworm) x86-64 machine.
# Idempotent: re-running installs nothing new.  Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    qemu-system-x86      # QEMU 7.2 (bookworm); other versions are fetched into the cache by `rig images build qemu`
    cpio busybox-static  # initramfs guests and emulated hosts
    cpuid                # independent CPUID dumps (tests cross-check the rig's own capture)
    xz-utils zstd lz4    # Debian kernel modules / linux-source / kernel images (6.1: lz4) are compressed
    debootstrap e2fsprogs openssh-client  # the SSH guest image
    gcc make binutils libc6-dev  # the guest probe is built from source
    dpkg-dev             # dpkg-source: QEMU source packages for `rig qemu facts import` (tests)
    git                  # rig policy import TREE --rev REV (and its test) reads kernel git revisions
    python3-venv
    chromium             # headless browser: the HTML report's browser test and bench/bench_report.py
    redis-server postgresql  # the fleet (rig fleet): broker and shared history; tests start their own servers
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Installing them may start a system Redis and PostgreSQL cluster; nothing here needs them (the fleet's
    # tests start their own on unix sockets), so stop what this script just started.
    for p in "${missing[@]}"; do
        case "$p" in
            redis-server) $SUDO service redis-server stop >/dev/null 2>&1 || true ;;
            postgresql) { pg_lsclusters -h 2>/dev/null || true; } | while read -r v c _; do
                            $SUDO pg_ctlcluster "$v" "$c" stop >/dev/null 2>&1 || true; done ;;
        esac
    done
fi

PY=${PYTHON:-python3}
# The rig must be installed from *this* tree (a CI clone must not test another checkout's editable install).
here=$(pwd -P)
installed=$(cd / && $PY -c 'import os, rig; print(os.path.dirname(os.path.dirname(os.path.realpath(rig.__file__))))' 2>/dev/null || true)
# pyproject.toml's digest, recorded after a successful install: a changed dependency list reinstalls
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$installed" != "$here" ] || [ "$(cat .setup-stamp 2>/dev/null)" != "$want" ] || [ "${RIG_SETUP_FORCE_PIP:-}" = 1 ]; then
    echo "setup: installing the rig and its Python dependencies"
    $PY -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" > .setup-stamp
fi
echo "setup: ok ($(qemu-system-x86_64 --version | head -1))"
