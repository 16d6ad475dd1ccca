"""``rig policy list|show|fetch|import|predict|explain|diff|check``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..host.profile import HostProfile
from . import check as check_mod
from . import diff as diff_mod
from . import explain as explain_mod
from .importer import import_tree
from .model import PolicyError
from .predict import predict_supported
from .store import PolicyChoice, entries, resolve_policy


def _params(items: list[str] | None) -> dict[str, str]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise PolicyError(f"--param {it!r}: expected MODULE.PARAM=VALUE, e.g. kvm_amd.nested=0")
        k, v = it.split("=", 1)
        if "." not in k:
            raise PolicyError(f"--param {it!r}: name the module, e.g. kvm_amd.{k}={v} or kvm.{k}={v}")
        out[k.strip()] = v.strip()
    return out


def _kernel(args: argparse.Namespace, profile: HostProfile | None) -> str:
    if getattr(args, "kernel", None):
        return args.kernel
    if profile is not None and profile.kernel.release:
        return profile.kernel.release
    raise PolicyError("no kernel version: the profile does not record one", hint="pass --kernel VER, e.g. --kernel 6.12")


def _load(version: str) -> tuple:
    ch = resolve_policy(version)
    return ch.policy, ch.why


def _choice(version: str) -> PolicyChoice:
    ch = resolve_policy(version)
    if ch.approximation:
        print(f"rig: APPROXIMATE: {ch.approximation}", file=sys.stderr)
    return ch


def cmd_list(args: argparse.Namespace) -> int:
    for e in entries():
        rng = ""
        if e.range:
            lo, hi = e.range
            rng = f" [stands in for kernels {lo[0]}.{lo[1]}..{hi[0]}.{hi[1]}]"
        elif e.kind == "variant":
            rng = " [by name only]"
        store = " (user store)" if e.store == "user" else ""
        print(f"linux-{e.name:<18} {e.kind:<9}{store} {e.description}{rng}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    p, why = _load(args.version)
    print(f"{p.label}: {why}")
    print(f"  source      {p.source.get('package', '?')} {p.source.get('package_version', '')} "
          f"(kernel {p.source.get('kernel_version', '?')})")
    for key, label in (("kind", "from"), ("orig", "orig"), ("orig_sha256", "orig sha256"),
                       ("debian_patches", "patches"), ("git_rev", "git rev"), ("git_commit", "git commit")):
        if p.source.get(key):
            print(f"  {label:<11} {p.source[key]}")
    print(f"  era         {p.era}; SYNTHESIZED_F: {p.synthesized or 'n/a'}; /proc/cpuinfo names: {p.cpuinfo_rule}")
    print(f"  words       {sum(w.kernel for w in p.words.values())} kernel, "
          f"{sum(not w.kernel for w in p.words.values())} KVM-only; {len(p.features)} features, {len(p.bugs)} bugs")
    print(f"  steps       {p.common_function}: {len(p.common)}; "
          + ", ".join(f"{v}: {len(s)}" for v, s in sorted(p.vendors.items())))
    print(f"  leaves      max basic 0x{p.leaves.get('max_basic', 0):x}, max extended 0x{p.leaves.get('max_extended', 0):x}")
    if p.hand_written:
        print(f"  variant of  linux-{p.variant_of}: {p.description}")
        for k, v in p.commits.items():
            print(f"    commit {k}: {v}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    import re

    from .source import fetch_source, fetch_source_package

    if re.fullmatch(r"\d+\.\d+\.\d+", args.series):
        if args.package_version:
            raise PolicyError("--package-version goes with a series (linux-source-SERIES), not a full version")
        s = fetch_source_package(args.series)
    else:
        s = fetch_source(args.series, version=args.package_version)
    print(f"{s.package} {s.package_version} ({s.suite}): {s.tree}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import tempfile

    tree = Path(args.tree)
    if args.output and args.store:
        raise PolicyError("-o and --store exclude each other", hint="--store writes into the user policy store")
    if args.rev:
        from .gitsource import export_files

        with tempfile.TemporaryDirectory(prefix="rig-policy-git-") as td:
            prov = export_files(tree, args.rev, Path(td))
            p = import_tree(Path(td), source=prov)
    else:
        if not tree.is_dir():
            raise PolicyError(f"{tree}: no such directory", hint="pass a kernel source tree, or a git clone with --rev")
        p = import_tree(tree)
    text = p.dumps()
    dest = Path(args.output) if args.output else None
    if args.store:
        from .store import data_dir, user_dir

        if (data_dir() / f"linux-{p.version}.json").exists():
            raise PolicyError(f"linux-{p.version} is shipped with the rig; the user store does not replace it",
                              hint="use -o FILE to keep your import elsewhere")
        user_dir().mkdir(parents=True, exist_ok=True)
        dest = user_dir() / f"linux-{p.version}.json"
    if dest is not None:
        write_text(dest, text)
        print(f"policy linux-{p.version} (kernel {p.source.get('kernel_version')}, {p.era}) written to {dest}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def write_text(dest: Path, text: str) -> None:
    """Write ``text``; a file that is not a regular file (``-o /dev/null``) is written through, never replaced."""
    if dest.exists() and not dest.is_file():
        with dest.open("w") as f:
            f.write(text)
        return
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(text)
    tmp.replace(dest)


def cmd_get(args: argparse.Namespace) -> int:
    from .getpolicy import get_policy

    path, how = get_policy(args.version)
    print(f"{how}: {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    prof = HostProfile.load(args.profile)
    ch = _choice(_kernel(args, prof))
    p, why = ch.policy, ch.why
    pred = predict_supported(prof, p, _params(args.param))
    if args.output:
        Path(args.output).write_text(pred.table.dumps())
        print(f"predicted KVM_GET_SUPPORTED_CPUID ({why}) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(pred.table.format_text() + "\n")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    prof = HostProfile.load(args.profile)
    p, why = _load(_kernel(args, prof))
    target = explain_mod.resolve(p, args.feature)
    pred = predict_supported(prof, p, _params(args.param))
    print(explain_mod.render(pred, target, why))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    ca, cb = resolve_policy(args.version_a), resolve_policy(args.version_b)
    prof = HostProfile.load(args.profile) if args.profile else None
    for ch in (ca, cb):
        if ch.approximation:
            print(f"APPROXIMATE ({ch.requested}): {ch.approximation}")
    print(diff_mod.render(ca.policy, cb.policy, prof, _params(args.param)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    prof = HostProfile.load(args.profile)
    p, why = _load(_kernel(args, prof))
    known = None
    if args.known:
        try:
            data = json.loads(Path(args.known).read_text())
        except (OSError, ValueError) as e:
            raise PolicyError(f"{args.known}: cannot read known differences: {e}") from None
        known = check_mod.known_differences() + check_mod.known_differences(data)
    res = check_mod.check(prof, p, _params(args.param), known=known)
    strict = not args.allow_known
    print(check_mod.render(res, f"{args.profile} under {why}", strict=strict))
    return 0 if res.ok(strict=strict) else 1


def cmd_table(args: argparse.Namespace) -> int:
    from . import table

    fmt = "csv" if args.csv else "html" if args.html else "text"
    sys.stdout.write(table.render(table.policies(args.versions or None), fmt))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from . import table

    prof = HostProfile.load(args.profile) if args.profile else None
    print(table.history(args.feature, prof, _params(args.param)))
    return 0


def cmd_libvirt(args: argparse.Namespace) -> int:
    from ..host.importer import import_dump
    from .libvirt import agreement

    d = Path(args.dir)
    dumps = sorted(x for x in d.glob("x86_64-cpuid-*.xml") if not x.stem.endswith(("-enabled", "-disabled")))
    if not dumps:
        raise PolicyError(f"{d}: no libvirt x86_64-cpuid-*.xml dumps", hint="point at libvirt's tests/cputestdata")
    pol, why = _load(args.kernel)
    total = agree = 0
    print(f"model ({why}) vs libvirt -enabled/-disabled bits (QEMU+KVM -cpu host; comparable bits only)")
    for x in dumps:
        a = agreement(import_dump(x), pol)
        if a is None:
            continue
        total += a.comparable
        agree += a.agree
        print(f"  {a.name:38} {a.agree:4}/{a.comparable:<4} {100 * a.ratio:5.1f}%"
              + (f"  enabled, not predicted: {' '.join(a.enabled_not_predicted)}" if a.enabled_not_predicted else "")
              + (f"  disabled, predicted: {' '.join(a.disabled_but_predicted)}" if a.disabled_but_predicted else ""))
    if total:
        print(f"  total {agree}/{total} = {100 * agree / total:.1f}%")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("policy", help="KVM feature-policy model: per-kernel policies, explain, diff, check",
                         description="The KVM policy layer: what KVM_GET_SUPPORTED_CPUID returns for a host "
                                     "profile under a kernel version, and why.")
    ps = top.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    top.set_defaults(func=lambda a: (top.print_help(), 2)[1])

    x = ps.add_parser("list", help="policies available (imported and hand-written variants)")
    x.set_defaults(func=cmd_list)
    x = ps.add_parser("show", help="summary of one policy")
    x.add_argument("version")
    x.set_defaults(func=cmd_show)
    x = ps.add_parser("fetch", help="fetch Debian's linux-source-SERIES (or, for X.Y.Z, the Debian source package "
                      "linux of that upstream version) and cache the files the importer reads")
    x.add_argument("series", help="e.g. 5.10, 6.1, 6.12, 7.3; or 6.17.8, 6.18.15 (source package)")
    x.add_argument("--package-version", metavar="VER", help="exact Debian version (default: the newest), e.g. 6.1.176-1")
    x.set_defaults(func=cmd_fetch)
    x = ps.add_parser("import", help="generate a policy file from a kernel source tree or a git revision")
    x.add_argument("tree", metavar="KERNEL_SRC_DIR", help="kernel source tree, or a git repository with --rev")
    x.add_argument("--rev", metavar="REV", help="read the files of this git revision (tag, branch, commit) from the "
                   "repository's objects, without a checkout, e.g. v6.13")
    x.add_argument("-o", "--output", metavar="FILE")
    x.add_argument("--store", action="store_true", help="write into the user policy store (<cache>/policies), "
                   "beside the shipped policies")
    x.set_defaults(func=cmd_import)
    x = ps.add_parser("get", help="fetch Debian's source of a kernel series and import it into the user policy store")
    x.add_argument("version", metavar="VER", help="kernel series or version, e.g. 6.14 or 6.18.15")
    x.set_defaults(func=cmd_get)

    def common(x: argparse.ArgumentParser, profile_required: bool = True) -> None:
        x.add_argument("--profile", metavar="FILE", required=profile_required, help="host profile (rig host capture/import)")
        x.add_argument("--param", action="append", metavar="MODULE.PARAM=VALUE",
                       help="override a KVM module parameter, e.g. kvm_amd.nested=0 (repeatable)")

    x = ps.add_parser("predict", help="predicted KVM_GET_SUPPORTED_CPUID for a profile")
    common(x)
    x.add_argument("--kernel", metavar="VER", help="kernel version (default: the profile's)")
    x.add_argument("-o", "--output", metavar="FILE", help="write the table as JSON")
    x.set_defaults(func=cmd_predict)
    x = ps.add_parser("explain", help="one bit's journey layer by layer, with kernel source locations")
    x.add_argument("feature", metavar="FEATURE", help="X86_FEATURE name, /proc/cpuinfo name, or LEAF.SUB.REG[BIT]")
    common(x)
    x.add_argument("--kernel", metavar="VER", help="kernel version (default: the profile's)")
    x.set_defaults(func=cmd_explain)
    x = ps.add_parser("diff", help="rules and (with --profile) supported bits that changed between two versions")
    x.add_argument("version_a", metavar="VER_A")
    x.add_argument("version_b", metavar="VER_B")
    common(x, profile_required=False)
    x.set_defaults(func=cmd_diff)
    x = ps.add_parser("table", help="per CPUID feature bit: names and KVM's handling in each imported kernel")
    x.add_argument("versions", nargs="*", metavar="VER", help="policies (default: every imported one)")
    g = x.add_mutually_exclusive_group()
    g.add_argument("--csv", action="store_true")
    g.add_argument("--html", action="store_true")
    x.set_defaults(func=cmd_table)
    x = ps.add_parser("history", help="one feature across the imported kernels: the deciding rule, where it changed")
    x.add_argument("feature", metavar="FEATURE")
    common(x, profile_required=False)
    x.set_defaults(func=cmd_history)
    x = ps.add_parser("libvirt", help="agreement of the model with libvirt cputestdata (-enabled/-disabled bits)")
    x.add_argument("dir", metavar="DIR", help="folder with libvirt x86_64-cpuid-*.xml files")
    x.add_argument("--kernel", metavar="VER", default="6.12", help="policy to use (default 6.12)")
    x.set_defaults(func=cmd_libvirt)
    x = ps.add_parser("check", help="compare the prediction with the profile's measured KVM_GET_SUPPORTED_CPUID")
    common(x)
    x.add_argument("--kernel", metavar="VER", help="kernel version (default: the profile's)")
    x.add_argument("--known", metavar="FILE", help="extra known-differences file (same format as "
                   "rig/policy/data/known-differences.json)")
    x.add_argument("--allow-known", action="store_true",
                   help="pass when every difference is documented in known-differences.json "
                        "(default: exit 0 only on full agreement)")
    x.set_defaults(func=cmd_check)
