"""``rig host capture|show|import`` (and ``emulate`` when rig.emulate provides it)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ..cpuid.catalogue import CatalogueError, catalogue
from ..cpuid.table import CpuidTable
from ..outfile import STDOUT, describe, is_stdout
from .capture import capture_profile
from .importer import import_dump
from .profile import HostProfile


def _feature_count(table: CpuidTable | None) -> int | None:
    if table is None:
        return None
    try:
        cat = catalogue()
    except (CatalogueError, FileNotFoundError):
        return None
    return sum(1 for f in cat.features if table.bit(f.leaf, f.subleaf, f.reg, f.bit))


def summary(p: HostProfile) -> str:
    raw = p.raw
    lines = [f"host profile {p.name or '?'} ({p.source})"]
    if p.captured_at:
        lines.append(f"  captured      {p.captured_at} on {p.hostname}")
    eax1 = raw.value(1, 0, "eax")
    fam = ((eax1 >> 8) & 0xF) + (((eax1 >> 20) & 0xFF) if ((eax1 >> 8) & 0xF) == 0xF else 0)
    model = ((eax1 >> 4) & 0xF) | (((eax1 >> 16) & 0xF) << 4 if ((eax1 >> 8) & 0xF) in (6, 0xF) else 0)
    lines.append(f"  cpu           {p.vendor or '?'}  family {fam:#x} model {model:#x} stepping {eax1 & 0xF}"
                 + (f"  \"{p.model_name}\"" if p.model_name else ""))
    if p.microcode:
        lines.append(f"  microcode     {p.microcode}")
    n = _feature_count(raw)
    lines.append(f"  raw CPUID     {len(raw)} leaf/subleaf entries, max basic {raw.max_basic:#x}, "
                 f"max extended {raw.max_extended:#x}" + (f", {n} catalogued features set" if n is not None else ""))
    k = p.kernel
    caps = f"{len(k.flags)} flags, {len(k.bugs)} bugs" + (" (assumed)" if k.assumed else "")
    lines.append(f"  kernel        {k.release or 'unknown release'}: {caps}")
    if k.bugs:
        lines.append(f"  kernel bugs   {' '.join(k.bugs)}")
    v = p.kvm
    if v.supported is not None:
        n = _feature_count(v.supported)
        emu = f", emulated {len(v.emulated)} entries" if v.emulated is not None else ", emulated: not answered"
        lines.append(f"  KVM           API {v.api_version}, supported {len(v.supported)} entries"
                     + (f" ({n} catalogued features)" if n is not None else "") + emu)
    else:
        lines.append(f"  KVM           unavailable: {v.error or 'not recorded'}")
    lines.append(f"  KVM modules   {', '.join(m.name for m in v.modules) or 'none'}"
                 + (f" (vendor module {v.vendor_module})" if v.vendor_module else " (no kvm_amd/kvm_intel)"))
    for m in v.modules:
        if m.params:
            shown = " ".join(f"{a}={b}" for a, b in sorted(m.params.items()))
            lines.append(f"    {m.name}: {shown}")
    for q in p.qemu:
        lines.append(f"  QEMU          {q.path}: {q.version or q.error}")
    if not p.qemu:
        lines.append("  QEMU          none found")
    for m in p.missing:
        lines.append(f"  missing       {m}")
    return "\n".join(lines)


def cmd_capture(args: argparse.Namespace) -> int:
    prof = capture_profile(kvm_device=args.kvm_device, name=args.name)
    if args.output and not is_stdout(args.output):
        prof.save(args.output)
        print(summary(prof))
        print(f"profile written to {args.output}")
    else:
        prof.save(STDOUT)
    if prof.missing:
        print(f"rig: partial capture: {len(prof.missing)} part(s) missing (see 'missing' above)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(summary(HostProfile.load(args.profile)))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    prof = import_dump(args.dump, fmt=args.format, cpu=args.cpu)
    out = args.output or Path(Path(args.dump).stem + ".profile.json")
    prof.save(out)
    # with -o - the profile is standard output: the summary goes to standard error
    note = sys.stderr if is_stdout(out) else sys.stdout
    print(summary(prof), file=note)
    print(f"profile written to {describe(out)}", file=note)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    host = sub.add_parser("host", help="capture, show and import host profiles")
    hs = host.add_subparsers(dest="host_command", metavar="SUBCOMMAND")
    host.set_defaults(func=lambda a: (host.print_help(), 2)[1])

    p = hs.add_parser("capture", help="capture this machine's host profile (raw CPUID, kernel caps, KVM, QEMU)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the profile here (default or -: JSON on standard output)")
    p.add_argument("--kvm-device", default="/dev/kvm")
    p.add_argument("--name", help="profile name (default: hostname)")
    p.set_defaults(func=cmd_capture)

    p = hs.add_parser("show", help="print a readable summary of a host profile")
    p.add_argument("profile", type=Path)
    p.set_defaults(func=cmd_show)

    p = hs.add_parser("import", help="make a profile from a `cpuid -r` dump or libvirt cputestdata XML")
    p.add_argument("dump", type=Path)
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the profile here (- for standard output; default: DUMP_STEM.profile.json)")
    p.add_argument("--format", choices=["cpuid-r", "libvirt"], help="default: detected from the content")
    p.add_argument("--cpu", type=int, default=0, help="which CPU of a multi-CPU `cpuid -r` dump (default 0)")
    p.set_defaults(func=cmd_import)

    try:
        emulate = importlib.import_module("rig.emulate.cli")
    except ModuleNotFoundError as e:
        if e.name not in ("rig.emulate", "rig.emulate.cli"):
            raise
        return
    add = getattr(emulate, "add_host_subcommands", None)
    if add is not None:
        add(hs)
