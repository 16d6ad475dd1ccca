"""Figures for the SSH guest: image build time, boot-to-login time, observation time.

    python3 bench/ssh_guest.py [--cpu MODEL ...] [--accel tcg] [--fresh-image]

Prints one line per figure.  ``--fresh-image`` builds the image again (new keys,
same cached debootstrap tree) to time stage 2; the debootstrap time is the one
recorded when the cached tree was built (``rootfs_seconds``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rig.guest.ssh import SshGuest  # noqa: E402
from rig.images.ssh import build_default_ssh_image  # noqa: E402
from rig.qemu.cmdline import QemuCommand  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="append", default=None)
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--fresh-image", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    image = build_default_ssh_image()
    lookup = time.monotonic() - t0
    if args.fresh_image:
        shutil.rmtree(image.dir)
        t0 = time.monotonic()
        image = build_default_ssh_image()
        print(f"image build (stage 2: copy, keys, mkfs.ext4): {time.monotonic() - t0:.1f} s")
    else:
        print(f"image lookup (cached): {lookup * 1000:.0f} ms")
    print(f"debootstrap tree build (recorded): {image.rootfs_seconds} s")
    print(f"disk image: {image.disk.stat().st_size / 2**20:.0f} MiB, initrd {image.initrd.stat().st_size / 2**20:.1f} MiB")
    for cpu in args.cpu or ["qemu64", "Skylake-Server", "EPYC-Rome"]:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.monotonic()
            obs = SshGuest(image).run_case(QemuCommand(machine="q35", accel=args.accel, cpu=cpu), workdir=Path(d))
            total = time.monotonic() - t0
        steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in obs.timings_s.items())
        print(f"{args.accel} {cpu}: boot-to-login {obs.boot_to_login_s:.1f} s, whole case {total:.1f} s ({steps}); "
              f"findings: {len(obs.insncheck.findings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
