"""One ``rig run`` case with the ``linux`` guest: a Debian kernel boots, its user-mode probe reads CPUID.

The image (:func:`rig.images.linux.build_linux_image`, the recipe's default
kernel) is built once per run before any case starts
(:func:`prepare_linux_image`) and kept on the run context.  A case boots it
through :func:`rig.guest.linux_run.boot_linux_async` (the same launcher as the
probe: QMP ``feature-words``/expansion, timeout, process-group cleanup,
artifacts ``cmdline.txt``, ``serial.log``, ``qmp.jsonl``, ``stderr.log``).

Views: predicted (QEMU model), configured (QMP) and observed = the probe's
``user`` table inside Linux, compared by :func:`rig.compare.threeway.compare`.
The runtime bits the guest kernel sets (OSXSAVE, OSPKE) follow their rules in
``rig/compare/data/runtime.toml`` (mode ``user`` = "follows"); the
XCR0-dependent 0xD sizes are volatile (``rig/compare/data/volatile.toml``).

A fourth view, ``kernel`` (in ``views.json``, informational, never a finding):
the guest kernel's ``/proc/cpuinfo`` flags against the CPUID bits it read, by
:func:`kernel_view`, with the kernel's own flag rules from
``rig/run/data/kernel_flags.toml``.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compare.known import case_fields, match_outcome
from ..compare.threeway import IssueRef, compare
from ..cpuid.catalogue import catalogue
from ..cpuid.table import CpuidTable
from ..errors import RigError
from ..guest.linux_run import LinuxBootError, boot_linux_async, linux_command, machine_boot
from ..images.linux import LinuxImage, build_linux_image, load_recipe
from ..matrix.model import Case
from .result import CaseResult
from .rundir import write_json

if TYPE_CHECKING:
    from .execute import RunContext

GUEST = "linux"


class LinuxGuestUnavailable(RigError):
    pass


def check_linux_machine(machine: str) -> None:
    """Fail early for a machine the linux guest cannot boot on (``rig.images`` recipe ``[boot.machines]``)."""
    if "+" in machine:
        raise LinuxBootError(f"machine {machine!r}: the linux guest has no probe boot forms",
                             hint="use microvm, q35 or pc without a +form suffix")
    machine_boot(machine, load_recipe())


def prepare_linux_image(ctx: RunContext, say: Callable[[str], None] | None = None) -> LinuxImage:
    """The run's linux guest image, built (or found in the cache) once; a clear error when it cannot be built."""
    img = ctx.guest_images.get(GUEST)
    if img is not None:
        return img
    if say is not None:
        say("rig run: preparing the linux guest image (Debian kernel + busybox + probe; "
            "the first time it downloads the kernel packages)")
    try:
        img = build_linux_image()
    except RigError as e:
        raise LinuxGuestUnavailable(f"the linux guest image cannot be built: {e}",
                                    hint="build it once with network access: rig images build linux") from None
    if say is not None:
        say(f"rig run: linux guest {img.release} ({img.directory})")
    ctx.guest_images[GUEST] = img
    return img


def say_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the kernel's view


@dataclass(frozen=True)
class KernelFlagRule:
    flag: str
    kind: str            # "implied" (the kernel sets it without its CPUID bit) | "optional" (may be cleared)
    when: str            # "" or "vendor=AuthenticAMD" / "vendor=GenuineIntel" / a cpuinfo flag that must be present
    reason: str


@cache
def kernel_flag_rules() -> tuple[KernelFlagRule, ...]:
    text = resources.files("rig.run").joinpath("data/kernel_flags.toml").read_text()
    try:
        d = tomllib.loads(text)
        return tuple(KernelFlagRule(str(r["flag"]), str(r["kind"]), str(r.get("when", "")), str(r["reason"]))
                     for r in d.get("rule", []))
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise RigError(f"rig/run/data/kernel_flags.toml: bad rule file: {e}") from None


def _applies(rule: KernelFlagRule, vendor: str | None, flags: set[str], table: CpuidTable) -> bool:
    if not rule.when:
        return True
    key, _, value = rule.when.partition("=")
    if key == "vendor":
        return vendor == value
    if key == "cpuid":  # a catalogue feature name that must be set in the CPUID the guest read
        f = catalogue().lookup(value)
        return f is not None and bool(table.bit(f.leaf, f.subleaf, f.reg, f.bit))
    return rule.when in flags


def kernel_view(table: CpuidTable, cpuinfo_flags: Iterable[str], *,
                rules: Iterable[KernelFlagRule] | None = None) -> dict[str, Any]:
    """The guest kernel's /proc/cpuinfo flags against the CPUID bits its user mode read.

    Only flags with a CPUID location in the table count.  ``cpuid_only``: bit set, flag absent;
    ``cpuinfo_only``: flag shown, bit clear; both after the kernel flag rules (``explained``).
    """
    flags = set(cpuinfo_flags)
    rules = tuple(kernel_flag_rules() if rules is None else rules)
    vendor = table.vendor
    bits: dict[str, bool] = {}
    for f in catalogue().features:
        if f.cpuinfo and table.reg(f.leaf, f.subleaf, f.reg) is not None:
            bits[f.cpuinfo] = bits.get(f.cpuinfo, False) or bool(table.bit(f.leaf, f.subleaf, f.reg, f.bit))
    cpuid_only = sorted(n for n, on in bits.items() if on and n not in flags)
    cpuinfo_only = sorted(n for n, on in bits.items() if not on and n in flags)
    explained: dict[str, str] = {}
    for r in rules:
        if not _applies(r, vendor, flags, table):
            continue
        if r.kind == "implied" and r.flag in cpuinfo_only:
            cpuinfo_only.remove(r.flag)
            explained[r.flag] = r.reason
        elif r.kind == "optional" and r.flag in cpuid_only:
            cpuid_only.remove(r.flag)
            explained[r.flag] = r.reason
    return {"compared": len(bits), "cpuid_only": cpuid_only, "cpuinfo_only": cpuinfo_only, "explained": explained}


# ------------------------------------------------------------------ one case


async def run_linux_case(ctx: RunContext, case: Case, workdir: Path) -> CaseResult:
    from .execute import _table_json, detect_quirk, words_of

    img = ctx.guest_images.get(GUEST)
    if img is None:  # a caller that did not prepare the run (e.g. one case under pytest)
        img = await asyncio.to_thread(prepare_linux_image, ctx)
    binary = ctx.binary(case.qemu)
    cmd = linux_command(img, cpu=case.cpu_arg, accel=case.accel, machine=case.machine, binary=str(binary.path),
                        firmware_dir=binary.firmware_dir)
    run = await boot_linux_async(img, cpu=case.cpu_arg, workdir=workdir, timeout=case.timeout, case=case.id,
                                 command=cmd)
    obs = run.observation
    version = ".".join(map(str, binary.version))
    result = CaseResult(case, obs.outcome, message=obs.message, qemu_version=version)
    if obs.outcome != "ok":
        issue = match_outcome(ctx.matrix.known_issues, case_fields(case, version), obs.outcome)
        result.outcome_issue = IssueRef.of(issue) if issue else None
        if run.error is not None:
            result.message = f"{result.message}; {run.error.problem}" if result.message else run.error.problem
    report = run.report
    observed = {"user": report.table} if report is not None else {}
    configured = obs.feature_words
    pred = ctx.predictor(case, binary.series, obs.expansion)
    quirk = detect_quirk(case, obs, observed, ctx.host_raw() if case.accel == "kvm" else None)
    comparison = compare(case, predicted=pred.table, configured=configured, observed=observed, quirk=quirk,
                         known=ctx.matrix.known_issues, qemu_version=version,
                         runtime=report.probe.runtime if report is not None else None)
    result.findings = comparison.findings
    result.quirk = quirk
    result.words = words_of(comparison.scope, pred.table, configured, observed.get("user"))
    if pred.note and obs.outcome == "ok":
        result.message = f"{result.message}; {pred.note}" if result.message else pred.note
    kview = kernel_view(report.table, report.flags) if report is not None else None
    if kview and (kview["cpuid_only"] or kview["cpuinfo_only"]):
        note = "kernel view: " + "; ".join(
            part for part in (
                "CPUID without /proc/cpuinfo flag: " + " ".join(kview["cpuid_only"]) if kview["cpuid_only"] else "",
                "/proc/cpuinfo flag without CPUID bit: " + " ".join(kview["cpuinfo_only"])
                if kview["cpuinfo_only"] else "",
            ) if part)
        result.message = f"{result.message}; {note}" if result.message else note
    write_json(workdir / "views.json", {
        "predicted": _table_json(pred.table), "configured": _table_json(configured),
        "filtered": _table_json(obs.filtered_features), "observed": {m: t.to_json() for m, t in observed.items()},
        "observed_mode": "user" if observed else None, "expansion": obs.expansion, "timings_ms": obs.timings_ms,
        "exit_code": obs.exit_code, "guest": GUEST, "form": "linux", "image": str(img.directory),
        "kernel": {
            "release": report.release if report is not None else img.release,
            "cpuinfo_flags": report.flags if report is not None else None,
            "cpuinfo_bugs": report.bugs if report is not None else None,
            "vulnerabilities": report.vulnerabilities if report is not None else None,
            "view": kview,
        },
    })
    return result
