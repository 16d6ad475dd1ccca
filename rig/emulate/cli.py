"""``rig host emulate``: boot an emulated host, capture its profile, run L2 probes.

Attached to ``rig host`` by rig/host/cli.py through :func:`add_host_subcommands`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..host.cli import summary
from ..outfile import STDOUT, is_stdout
from .host import EmulatedHost
from .l2 import L2Result, feature_registers
from .verify import l2_check


def _case_line(cpu: str, r: L2Result, host: EmulatedHost) -> str:
    if r.timed_out:
        return f"  L2 -cpu {cpu}: timed out after {r.timeout:.0f} s inside L1"
    status = "probe ok" if r.probe_ok else f"exit {r.exit_status}"
    if not r.probe_ok:
        err = next((s for s in r.stderr.splitlines() if "error" in s.lower()), r.stderr.strip()[-200:])
        return f"  L2 -cpu {cpu}: {status}: {err}"
    kvmrun = r.args == [] and host.profile is not None  # kvmrun: KVM's supported table as it is, no QEMU
    check = l2_check(host.profile, r, feature_registers(host.profile.kvm.supported) if kvmrun else None)
    return f"  L2 -cpu {cpu}: {status} in {r.wall_seconds:.2f} s; {check.summary()}"


def cmd_emulate(args: argparse.Namespace) -> int:
    with EmulatedHost(args.cpu, args.kernel, args.kvm_param or [], boot_timeout=args.boot_timeout,
                      keep_workdir=args.keep, l2=bool(args.l2_cpu)) as host:
        prof = host.profile
        assert prof is not None and host.info is not None
        to_file = bool(args.output) and not is_stdout(args.output)
        if to_file:
            prof.save(args.output)
            print(summary(prof))
            print(f"  L1 boot       {host.info.boot_seconds:.1f} s ({host.label})")
        failures = 0
        for cpu in args.l2_cpu or []:
            r = host.run_probe(cpu, args.machine, timeout=args.l2_timeout)
            line = _case_line(cpu, r, host)
            failures += not (r.probe_ok and "differ" not in line)
            print(line, file=sys.stdout if to_file else sys.stderr)
        if not to_file:
            prof.save(STDOUT)
        else:
            print(f"profile written to {args.output}")
        if args.keep:
            print(f"rig: L1 work directory kept: {host.workdir}", file=sys.stderr)
    if prof.kvm.supported is None:
        print(f"rig: no KVM in the emulated host: {prof.kvm.error or '; '.join(prof.missing)}", file=sys.stderr)
        return 1
    return 1 if failures else 0


def add_host_subcommands(hs: argparse._SubParsersAction) -> None:
    p = hs.add_parser(
        "emulate",
        help="boot a Debian kernel with real KVM inside a TCG-emulated AMD host; capture its profile, run L2 probes",
        description="Boot a Debian kernel as an L1 guest under TCG with -cpu MODEL, load kvm/kvm-amd with the "
                    "given parameters, capture the L1 host profile (same format as `rig host capture`) and "
                    "optionally boot the probe as L2 guests under L1's real KVM.",
    )
    p.add_argument("--cpu", required=True, help="L1 CPU model for TCG (an AMD model with SVM: EPYC, EPYC-Rome, EPYC-Milan, max)")
    p.add_argument("--kernel", default="newest", help="Debian kernel: 6.1, 6.12, 7.x, newest or a full release (default newest)")
    p.add_argument("--kvm-param", action="append", metavar="K=V",
                   help="KVM module parameter, e.g. kvm_amd.npt=0, nested=0 (kvm_amd by default); repeatable")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the profile here (default or -: JSON on standard output)")
    p.add_argument("--l2-cpu", action="append", metavar="CPU",
                   help="also boot the probe as an L2 guest with this -cpu line; repeatable")
    p.add_argument("--machine", default="microvm",
                   help="L2 machine type (default microvm); kvmrun: no QEMU, the probe in a bare KVM VM whose CPUID "
                        "is KVM_GET_SUPPORTED_CPUID as it is (--l2-cpu host only)")
    p.add_argument("--l2-timeout", type=float, default=60, help="seconds per L2 case (default 60)")
    p.add_argument("--boot-timeout", type=float, help="seconds for L1 to boot and report (default from images/l1.toml)")
    p.add_argument("--keep", action="store_true", help="keep the L1 work directory (console log, data channel)")
    p.set_defaults(func=cmd_emulate)
