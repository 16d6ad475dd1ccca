"""``rig ssh``: boot one SSH guest for a -cpu line, log in, show what it saw and the instruction checks.

    rig ssh --cpu Skylake-Server                      # the rig's image (built on demand, needs root once)
    rig ssh --cpu EPYC-Rome --json -o run/            # the observation as JSON, logs kept in run/
    rig ssh --image disk.qcow2 --user debian --key id_ed25519 --host-key host.pub --cpu qemu64

Exit status 1 when an instruction the guest is told it has faults ("advertised but faults").
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ..qemu.cmdline import QemuCommand
from .ssh import BOOT_TIMEOUT, COMMAND_TIMEOUT, SshGuest, SshObservation


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ssh",
        help="boot an SSH guest (Debian image or your own) and run the probe and instruction checks in it",
        description="Boot a full-OS guest under QEMU with user networking (port forwarded on 127.0.0.1 only), "
        "log in with paramiko verifying the recorded host key, run the user-mode probe and insncheck, and "
        "collect /proc/cpuinfo, /sys/devices/system/cpu/vulnerabilities and the kernel's CPU messages.",
    )
    p.add_argument("--cpu", default="qemu64", help="the -cpu value (default qemu64)")
    p.add_argument("--machine", default="q35", help="q35 or pc (default q35)")
    p.add_argument("--accel", default="tcg", help="tcg or kvm (default tcg)")
    p.add_argument("--qemu", default=None, help="QEMU binary path or version (default: the system's)")
    p.add_argument("--image", default="rig", help="'rig' (the rig's image), its directory, or a disk image")
    p.add_argument("--user", help="login user (user images)")
    p.add_argument("--key", help="private key file (user images)")
    p.add_argument("--host-key", help="the guest's host public key, inline or a .pub/known_hosts file")
    p.add_argument("--kernel", help="boot this kernel with -kernel (disk images without a bootloader)")
    p.add_argument("--initrd", help="with --kernel: its initrd")
    p.add_argument("--append", help="with --kernel: the kernel command line")
    p.add_argument("--memory", default="512M", help="guest memory (default 512M)")
    p.add_argument("--boot-timeout", type=float, default=BOOT_TIMEOUT, help="seconds to wait for the login")
    p.add_argument("--command-timeout", type=float, default=COMMAND_TIMEOUT, help="seconds per guest command")
    p.add_argument("--test", action="append", dest="tests", metavar="NAME", help="run only this insncheck test")
    p.add_argument("-o", "--workdir", type=Path, help="keep serial.log, cmdline.txt, stderr.log here")
    p.add_argument("--json", action="store_true", help="print the observation as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    spec = {"type": "ssh", "image": args.image, "memory": args.memory}
    for k in ("user", "key", "host_key", "kernel", "initrd", "append"):
        if getattr(args, k) is not None:
            spec[k] = getattr(args, k)
    guest = SshGuest.from_spec(spec, where="rig ssh")
    binary, firmware = "qemu-system-x86_64", None
    if args.qemu:
        from ..qemu.binaries import find_qemu

        qb = find_qemu(args.qemu)
        binary, firmware = str(qb.path), qb.firmware_dir
    cmd = QemuCommand(binary=binary, machine=args.machine, accel=args.accel, cpu=args.cpu, firmware_dir=firmware)
    obs = guest.run_case(cmd, workdir=args.workdir, boot_timeout=args.boot_timeout,
                         command_timeout=args.command_timeout, tests=args.tests)
    if args.json:
        print(json.dumps(obs.to_json(), indent=1))
    else:
        print(format_observation(obs, cpu=args.cpu, accel=args.accel))
    return 1 if obs.insncheck.advertised_but_faults else 0


def format_observation(obs: SshObservation, *, cpu: str, accel: str) -> str:
    lines = [f"ssh guest, -cpu {cpu} ({accel}): kernel {obs.kernel_release}, login after {obs.boot_to_login_s:.1f} s"]
    lines.append(f"cpuinfo: {len(obs.cpuinfo_flags)} flags; bugs: {' '.join(obs.cpuinfo_bugs) or '-'}")
    affected = {k: v for k, v in obs.vulnerabilities.items() if v != "Not affected"}
    lines.append(f"vulnerabilities: {len(obs.vulnerabilities)} reported, {len(affected)} not 'Not affected'")
    lines += [f"  {k}: {v}" for k, v in sorted(affected.items())]
    lines.append(f"kernel CPU messages: {len(obs.kernel_messages)}")
    lines += [f"  {m}" for m in obs.kernel_messages]
    counts = Counter(r.verdict for r in obs.insncheck.results)
    lines.append("instruction checks: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    findings = obs.insncheck.findings
    lines.append(f"findings: {len(findings)}" + ("" if findings else " (every advertised instruction runs)"))
    lines += [f"  {r.line()}" for r in findings]
    return "\n".join(lines)
