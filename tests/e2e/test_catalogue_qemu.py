"""Cross-check the feature catalogue against the installed QEMU and the running kernel.

QEMU: every boolean CPU property that ``query-cpu-model-expansion`` (full, model
``max``) reports is toggled on a ``qemu64`` vCPU in its own paused QEMU process
(TCG, ``-M microvm``); the bits that change in QOM ``feature-words`` |
``filtered-features`` are the property's CPUID bits, derived from the real
binary.  Every property that changes a bit of the catalogue's listed leaves must
be named in the catalogue at exactly those bits.

Kernel: every flag of this machine's /proc/cpuinfo ``flags`` line must be a
catalogue feature (by its /proc/cpuinfo name) unless it is listed below as a
Linux-synthesised flag or one from a leaf outside the catalogue's scope.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from rig.cpuid.catalogue import catalogue

pytestmark = pytest.mark.e2e

QEMU = Path(os.environ.get("RIG_QEMU_7_2", "/usr/bin/qemu-system-x86_64"))

Loc = tuple[int, int, str, int]

#: The leaves (words) issue 2 requires the catalogue to cover completely.
LISTED: frozenset[tuple[int, int, str]] = frozenset(
    {
        (0x1, 0, "ecx"), (0x1, 0, "edx"), (0x6, 0, "eax"), (0x6, 0, "ecx"),
        (0x7, 0, "ebx"), (0x7, 0, "ecx"), (0x7, 0, "edx"),
        (0x7, 1, "eax"), (0x7, 1, "ebx"), (0x7, 1, "ecx"), (0x7, 1, "edx"), (0x7, 2, "edx"),
        (0xD, 1, "eax"), (0x12, 0, "eax"), (0x14, 0, "ebx"), (0x14, 0, "ecx"), (0x19, 0, "ebx"),
        (0x24, 0, "ebx"), (0x24, 1, "ecx"),
        (0x80000001, 0, "ecx"), (0x80000001, 0, "edx"), (0x80000007, 0, "ebx"), (0x80000007, 0, "edx"),
        (0x80000008, 0, "ebx"), (0x8000000A, 0, "edx"), (0x8000001F, 0, "eax"),
        (0x80000021, 0, "eax"), (0x80000021, 0, "ecx"), (0x80000022, 0, "eax"),
        (0xC0000001, 0, "edx"), (0x40000001, 0, "eax"), (0x40000001, 0, "edx"),
    }
)

#: /proc/cpuinfo flags that are not a CPUID bit of the listed leaves.  Each was
#: checked in Linux 7.2's arch/x86/include/asm/cpufeatures.h: synthetic flags live
#: in the Linux-defined words 3, 7, 8, 11, 17, 21 (CPUID_LNX_*) and are set by code,
#: not read from one CPUID bit.
CPUINFO_NOT_CPUID: dict[str, str] = {
    # word 3 (CPUID_LNX_1): Linux-defined, synthesised
    "cxmmx": "Cyrix MMX, synthesised (3*32+0)",
    "k6_mtrr": "AMD K6 MTRRs, synthesised",
    "cyrix_arr": "synthesised", "centaur_mcr": "synthesised",
    "constant_tsc": "(3*32+8) set by vendor code from 0x80000007.EDX[8]; catalogued at that bit, cpuinfo name kept",
    "up": "SMP kernel on UP", "art": "Always running timer, synthesised",
    "arch_perfmon": "(3*32+11) set from leaf 0xA, not one bit",
    "pebs": "synthesised", "bts": "synthesised", "rep_good": "synthesised",
    "acc_power": "(3*32+19) from 0x80000007.EDX[12] in amd.c, not scattered",
    "nopl": "synthesised", "xtopology": "(3*32+22) set when leaf 0xB is usable",
    "tsc_reliable": "synthesised", "nonstop_tsc": "(3*32+24) synthesised from invariant TSC",
    "cpuid": "(3*32+25) CPU has a CPUID instruction", "extd_apicid": "synthesised (AMD)",
    "amd_dcm": "synthesised", "aperfmperf": "catalogued at 6.ECX[0]",
    "nonstop_tsc_s3": "synthesised", "tsc_known_freq": "(3*32+31) synthesised",
    # word 7 (CPUID_LNX_2) / 8 (CPUID_LNX_3) / 11 (CPUID_LNX_4): synthetic and mitigation flags
    "ring3mwait": "synthesised", "cpuid_fault": "synthesised", "cpb": "catalogued at 0x80000007.EDX[9]",
    "epb": "catalogued at 6.ECX[3]", "cat_l3": "leaf 0x10", "cat_l2": "leaf 0x10", "cdp_l3": "leaf 0x10.1",
    "cdp_l2": "leaf 0x10.2", "ssbd": "(7*32+17) synthetic Speculative Store Bypass Disable",
    "mba": "catalogued at 0x80000008.EBX[6]", "perfmon_v2": "catalogued at 0x80000022.EAX[0]",
    "ibrs": "(7*32+25) synthetic", "ibpb": "(7*32+26) synthetic", "stibp": "(7*32+27) synthetic",
    "zen": "synthesised", "l1tf_pteinv": "synthesised", "ibrs_enhanced": "synthesised",
    "tpr_shadow": "VMX, synthesised", "flexpriority": "VMX", "ept": "VMX", "vpid": "VMX",
    "vmmcall": "(8*32+15) synthesised on AMD", "ept_ad": "VMX",
    "cqm_llc": "leaf 0xF", "cqm_occup_llc": "leaf 0xF.1", "cqm_mbm_total": "leaf 0xF.1",
    "cqm_mbm_local": "leaf 0xF.1", "split_lock_detect": "synthesised", "user_shstk": "synthesised",
    "bus_lock_detect": "catalogued at 7.0.ECX[24]", "overflow_recov": "catalogued",
    "succor": "catalogued", "smca": "catalogued", "amd_lbr_v2": "catalogued",
    "flush_l1d": "catalogued", "arch_capabilities": "catalogued",
}


@cache
def _qemu_ok() -> str | None:
    if not QEMU.exists():
        return f"{QEMU} not installed (apt-get install qemu-system-x86)"
    return None


def _qmp(cpu: str, *commands: dict) -> list[dict]:
    """Run a paused QEMU with ``-cpu CPU`` and the QMP commands; the replies in order."""
    script = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    proc = subprocess.run(
        [str(QEMU), "-M", "microvm", "-accel", "tcg", "-cpu", cpu, "-S", "-display", "none",
         "-nodefaults", "-qmp", "stdio"],
        input="".join(json.dumps(c) + "\n" for c in script), capture_output=True, text=True, timeout=60,
    )
    replies = [m for m in map(json.loads, filter(str.strip, proc.stdout.splitlines())) if "return" in m or "error" in m]
    if len(replies) < len(script) - 1:
        raise RuntimeError(f"qemu -cpu {cpu}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return replies[1:1 + len(commands)]


def _bits(words: list[dict]) -> set[Loc]:
    out: set[Loc] = set()
    for w in words:
        key = (int(w["cpuid-input-eax"]), int(w.get("cpuid-input-ecx", 0)), w["cpuid-register"].lower())
        v = int(w["features"])
        out |= {(*key, b) for b in range(32) if v >> b & 1}
    return out


def _configured(cpu: str) -> set[Loc]:
    """Bits QEMU configured for ``-cpu CPU`` including those TCG filtered out."""
    (cpus,) = _qmp(cpu, {"execute": "query-cpus-fast"})
    path = cpus["return"][0]["qom-path"]
    fw, ff = _qmp(
        cpu,
        {"execute": "qom-get", "arguments": {"path": path, "property": "feature-words"}},
        {"execute": "qom-get", "arguments": {"path": path, "property": "filtered-features"}},
    )
    return _bits(fw["return"]) | _bits(ff["return"])


BASE = "qemu64,vendor=GenuineIntel"  # Intel vendor: no AMD copies of 1.EDX into 0x80000001.EDX


@cache
def qemu_property_bits() -> dict[str, frozenset[Loc]]:
    """Every bool property of ``max`` -> the CPUID bits toggling it changes (from the real binary)."""
    (exp,) = _qmp("qemu64", {"execute": "query-cpu-model-expansion",
                             "arguments": {"type": "full", "model": {"name": "max"}}})
    props = sorted(k for k, v in exp["return"]["model"]["props"].items() if isinstance(v, bool))
    (base_exp,) = _qmp(BASE, {"execute": "query-cpu-model-expansion",
                              "arguments": {"type": "full", "model": {"name": BASE.split(",")[0],
                                                                      "props": {"vendor": "GenuineIntel"}}}})
    base_props = base_exp["return"]["model"]["props"]
    base = _configured(BASE)

    def one(p: str) -> tuple[str, frozenset[Loc]]:
        value = "off" if base_props.get(p) is True else "on"
        try:
            return p, frozenset(_configured(f"{BASE},{p}={value}") ^ base)
        except RuntimeError:
            return p, frozenset()  # property QEMU refuses to toggle this way: no CPUID evidence

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, props))


def test_qemu_binary_is_7_2():
    if reason := _qemu_ok():
        pytest.skip(reason)
    out = subprocess.run([str(QEMU), "--version"], capture_output=True, text=True).stdout
    assert "version 7.2" in out, out


def test_every_qemu_cpuid_property_is_catalogued_at_its_bits():
    if reason := _qemu_ok():
        pytest.skip(reason)
    cat = catalogue()
    bits = qemu_property_bits()
    in_scope = {p: {b for b in locs if b[:3] in LISTED} for p, locs in bits.items()}
    in_scope = {p: s for p, s in in_scope.items() if s}
    # sanity: the derivation found the features everyone knows
    assert in_scope["avx2"] == {(7, 0, "ebx", 5)}
    assert in_scope["lm"] == {(0x80000001, 0, "edx", 29)}
    assert len(in_scope) > 150, f"only {len(in_scope)} properties changed a listed leaf"
    problems = []
    for prop, changed in sorted(in_scope.items()):
        named = {(f.leaf, f.subleaf, f.reg, f.bit) for f in cat.features if prop in f.qemu}
        if named != changed:
            problems.append(f"{prop}: QEMU toggles {sorted(changed)}, catalogue names it at {sorted(named)}")
    assert not problems, "\n".join(problems)


def test_catalogue_qemu_names_known_to_7_2_map_to_the_same_bits():
    """The other direction: a catalogue QEMU name that 7.2 has must toggle that bit in 7.2."""
    if reason := _qemu_ok():
        pytest.skip(reason)
    bits = qemu_property_bits()
    wrong = []
    for f in catalogue().features:
        for name in f.qemu:
            if name in bits and bits[name] and (f.leaf, f.subleaf, f.reg, f.bit) not in bits[name]:
                wrong.append(f"{f.name} {f.where()}: QEMU 7.2 property {name} toggles {sorted(bits[name])}")
    assert not wrong, "\n".join(wrong)


def _cpuinfo_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return line.split(":", 1)[1].split()
    return []


def test_every_cpuinfo_flag_of_this_kernel_is_catalogued_or_explained():
    flags = _cpuinfo_flags()
    if not flags:
        pytest.skip("/proc/cpuinfo has no flags line on this machine")
    cat = catalogue()
    missing = [f for f in flags if cat.by_cpuinfo(f) is None and f not in CPUINFO_NOT_CPUID]
    assert not missing, f"/proc/cpuinfo flags neither catalogued nor explained: {missing}"
    # an explained flag must not secretly be a catalogued cpuinfo name of a listed leaf
    wrongly_excluded = [
        f for f in flags if f in CPUINFO_NOT_CPUID and (x := cat.by_cpuinfo(f)) is not None
        and (x.leaf, x.subleaf, x.reg) in LISTED and "catalogued" not in CPUINFO_NOT_CPUID[f]
    ]
    assert not wrongly_excluded, wrongly_excluded
