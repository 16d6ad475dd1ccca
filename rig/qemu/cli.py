"""``rig qemu predict CPU``: what QEMU will configure for a ``-cpu`` line, without starting a guest.

Examples::

    rig qemu predict Skylake-Server -M microvm --explain clflushopt
    rig qemu predict EPYC-Rome,-avx2 --accel kvm --profile host.json --kernel 6.12
    rig qemu predict qemu64,+x2apic --qemu 10.0 --json

TCG needs nothing but the QEMU binary (its model facts are gathered once and
cached).  KVM needs the KVM supported table: this machine's ``/dev/kvm``
(default), or a host profile (``--profile``: its measured table, or with
``--kernel`` the KVM policy model's prediction for that kernel).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..cpuid.table import CpuidTable
from ..errors import RigError
from .binaries import find_qemu, gather_facts
from .facts import version_data
from .model import predict_guest

#: XSAVE state components (Intel SDM vol. 1, 13.1), for naming 0xD.0/0xD.1 bits
XSAVE_COMPONENTS = ("x87", "sse", "avx", "bndregs", "bndcsr", "opmask", "zmm_hi256", "hi16_zmm", "pt", "pkru",
                    "pasid", "cet_u", "cet_s", "hdc", "uintr", "lbr", "hwp", "xtilecfg", "xtiledata")


def _bit_names(data, word, value: int) -> str:  # type: ignore[no-untyped-def]
    """Names of the set bits: QEMU's, else the XSAVE component or the CPUID[1].EDX name an AMD alias copies."""
    out = []
    edx1 = data.words.get("FEAT_1_EDX")
    for b in range(32):
        if not value >> b & 1:
            continue
        n = word.names[b]
        if not n and word.name.startswith("FEAT_XSAVE_X"):
            comp = b + (32 if word.name.endswith("_HI") else 0)
            n = XSAVE_COMPONENTS[comp] if comp < len(XSAVE_COMPONENTS) else ""
        if not n and word.name == "FEAT_8000_0001_EDX" and edx1 is not None and data.amd_aliases >> b & 1:
            n = edx1.names[b]
        out.append(n or f"bit{b}")
    return " ".join(out)


def _kvm_tables(args: argparse.Namespace) -> tuple[CpuidTable, CpuidTable | None, str]:
    if args.profile:
        from ..host.profile import HostProfile

        profile = HostProfile.load(args.profile)
        if args.kernel:
            from ..policy import predict_supported, resolve_policy

            choice = resolve_policy(args.kernel)
            if choice.approximation:
                print(f"rig: APPROXIMATE: {choice.approximation}", file=sys.stderr)
            return predict_supported(profile, choice.policy).table, profile.raw, \
                f"KVM policy model ({choice.why}) on {args.profile}"
        if profile.kvm.supported is None:
            raise RigError(f"{args.profile}: the profile has no KVM_GET_SUPPORTED_CPUID",
                           hint="give --kernel VERSION to predict it with the policy model")
        return profile.kvm.supported, profile.raw, f"measured KVM_GET_SUPPORTED_CPUID of {args.profile}"
    from .casepredict import kvm_inputs

    sup, raw = kvm_inputs("native")
    return sup, raw, "this machine's /dev/kvm"


def _cmd_predict(args: argparse.Namespace) -> int:
    binary = find_qemu(args.qemu)
    facts = gather_facts(binary)
    supported = host_raw = None
    source = "TCG"
    if args.accel == "kvm":
        supported, host_raw, source = _kvm_tables(args)
    p = predict_guest(facts, args.cpu, args.accel, args.machine, supported, host_raw=host_raw)
    if args.json:
        print(json.dumps({"qemu": str(binary.path), "version": ".".join(map(str, binary.version)), "cpu": args.cpu,
                          "accel": args.accel, "machine": args.machine, "supported_from": source,
                          "filtered_names": p.filtered_names(), **p.to_json()}, indent=1))
        return 0
    data = version_data(p.series)
    print(f"QEMU {'.'.join(map(str, binary.version))} ({binary.path}), -M {args.machine} -accel {args.accel} "
          f"-cpu {args.cpu}")
    print(f"model: {p.resolved_model}  vendor: {p.vendor}  level: {p.levels['level']:#x}  "
          f"xlevel: {p.levels['xlevel']:#x}  (facts of QEMU {p.series}; supported: {source})")
    for w in data.words.values():
        v = p.table.value(w.leaf, w.subleaf or 0, w.reg)
        f = p.filtered.value(w.leaf, w.subleaf or 0, w.reg)
        if not v and not f:
            continue
        names = _bit_names(data, w, v)
        loc = f"{w.leaf:#x}.{w.subleaf or 0}.{w.reg.upper()}"
        print(f"  {loc:<18} {v:08X}  {names}")
        if f:
            print(f"  {'':<18} filtered: {_bit_names(data, w, f)}")
    for n in p.notes:
        print(f"note: {n}")
    for feat in args.explain or ():
        print(f"why {feat}:")
        for line in p.explain(feat):
            print(f"  {line}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("qemu", help="the QEMU CPU-model layer model: predict what QEMU configures for -cpu")
    qs = q.add_subparsers(dest="qemu_command", metavar="SUBCOMMAND")
    p = qs.add_parser("predict", help="predicted feature words and filtered features for a -cpu line")
    p.add_argument("cpu", help="the -cpu argument, e.g. Skylake-Server,-avx2,x2apic=on")
    p.add_argument("-M", "--machine", default="microvm", help="machine type (default microvm)")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    p.add_argument("--qemu", default="system", help="QEMU binary: system, a path, or a version such as 10.0")
    p.add_argument("--profile", help="host profile (rig host capture) for --accel kvm")
    p.add_argument("--kernel", help="with --profile: predict KVM's table for this kernel with the policy model")
    p.add_argument("--explain", action="append", metavar="FEATURE", help="explain one feature step by step (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_predict)
    q.set_defaults(func=lambda a: (q.print_help(), 2)[1])
