"""Versioned machine types: the model's CPU compat properties against real QEMU, every machine type.

For each supported QEMU with machine data (7.2, 10.0) and every versioned
``pc-i440fx-X.Y`` / ``pc-q35-X.Y`` it knows, one QEMU process (``-S``, TCG):

* the real CPU 0 (``-cpu`` the first line): QMP ``feature-words`` and
  ``filtered-features`` == the prediction;
* every line of :data:`LINES`: ``query-cpu-model-expansion`` type ``full``
  under that machine (the CPU object gets the machine's compat properties,
  then x86_cpu_expand_features runs; no filtering) == the prediction before
  filtering (each feature property) and its ``level``/``xlevel``.

Plus QEMU's own tests/qtest/test-x86-cpuid-compat.c expectations on the real binary.
The sweep's figures (machine types, lines, mismatches, seconds) are printed.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rig.cpuid.parse import parse_feature_words
from rig.cpuid.table import CpuidTable
from rig.errors import RigError
from rig.qemu.binaries import BinaryFacts, QemuBinary, find_qemu, gather_facts
from rig.qemu.facts import version_data
from rig.qemu.model import QemuPrediction, predict_guest

pytestmark = pytest.mark.e2e

#: the compat arrays' CPU classes (Opteron_G*, EPYC*, Skylake*, Haswell/Broadwell, qemu64/32, core2duo ...),
#: the properties they set (npt, nrip-save, mpx, rdtscp, abm, pku, clflushopt, topoext, xlevel, min-level ...)
#: and QEMU's own compat test lines
LINES = (
    "qemu64", "qemu32", "core2duo", "phenom", "486,arat=on,avx512vbmi=on,xsaveopt=on", "SandyBridge,svm=on,npt=on",
    "Haswell", "Haswell-noTSX", "Broadwell", "Broadwell-noTSX", "Skylake-Client", "Skylake-Client-IBRS",
    "Skylake-Server", "Skylake-Server-IBRS", "Cascadelake-Server", "Icelake-Client", "Icelake-Server", "EPYC",
    "EPYC-IBPB", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5", "Penryn,intel-pt=on", "Conroe,+svm",
    "max", "Skylake-Server,mpx=off,+pku", "EPYC-v1", "Westmere,vme=on",
)


class Session:
    """One ``qemu -S -qmp stdio`` for a machine type: many queries, killed on close."""

    def __init__(self, binary: QemuBinary, machine: str, cpu: str) -> None:
        argv = [*binary.base_argv(), "-M", machine, "-accel", "tcg", "-cpu", cpu, "-S", "-nodefaults",
                "-no-user-config", "-display", "none", "-serial", "none", "-monitor", "none", "-qmp", "stdio"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.ask({"execute": "qmp_capabilities"})

    def ask(self, cmd: dict) -> object:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"QEMU exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            msg = json.loads(line)
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                return {"error": msg["error"]}

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=20)


def _binary(request: str) -> QemuBinary:
    try:
        return find_qemu(request)
    except RigError as e:
        pytest.skip(f"QEMU {request} not available here: {e}")


def _feature_mismatches(p: QemuPrediction, props: dict, what: str) -> list[str]:
    """Every feature property of the full expansion against the prediction before filtering."""
    data = version_data(p.series)
    out = []
    for w in data.words.values():
        v = p.requested.value(w.leaf, w.subleaf or 0, w.reg)
        for bit, name in enumerate(w.names):
            if name and isinstance(props.get(name), bool) and props[name] != bool(v >> bit & 1):
                out.append(f"{what}: {name} predicted {int(bool(v >> bit & 1))} QEMU {int(props[name])}")
    for key in ("level", "xlevel"):
        if props.get(key) != p.levels[key]:
            out.append(f"{what}: {key} predicted {p.levels[key]:#x} QEMU {props.get(key)!r}")
    return out


def _sweep_machine(binary: QemuBinary, facts: BinaryFacts, machine: str, lines: list[str],
                   approximate: bool = False) -> tuple[list[str], int]:
    s = Session(binary, machine, lines[0])
    bad: list[str] = []
    checked = 0
    try:
        cpus = s.ask({"execute": "query-cpus-fast"})
        assert isinstance(cpus, list) and cpus, cpus
        path = min(cpus, key=lambda c: c.get("cpu-index", 0))["qom-path"]
        fw = parse_feature_words(s.ask({"execute": "qom-get", "arguments": {"path": path, "property": "feature-words"}}))
        ff = parse_feature_words(s.ask({"execute": "qom-get",
                                        "arguments": {"path": path, "property": "filtered-features"}}))
        p = predict_guest(facts, lines[0], "tcg", machine)
        for x in [*p.table.diff(fw), *p.filtered.diff(ff)]:
            bad.append(f"{machine} -cpu {lines[0]} (real CPU): {x.location} predicted {x.a} QEMU {x.b}")
        checked += 1
        for line in lines:
            model, _, flags = line.partition(",")
            props = {}
            for f in filter(None, flags.split(",")):
                name, _, val = f.lstrip("+-").partition("=")
                props[name] = (val or "on") == "on" if not f.startswith("-") else False
            r = s.ask({"execute": "query-cpu-model-expansion",
                       "arguments": {"type": "full", "model": {"name": model, "props": props}}})
            assert isinstance(r, dict) and "model" in r, f"{machine} {line}: {r}"
            pl = predict_guest(facts, line, "tcg", machine)
            assert bool(pl.approximations) == approximate, pl.approximations
            bad += _feature_mismatches(pl, r["model"]["props"], f"{machine} -cpu {line}")
            checked += 1
    finally:
        s.close()
    return bad, checked


def _sweep(binary: QemuBinary) -> None:
    facts = gather_facts(binary)
    data = version_data(binary.series)
    assert data.series == binary.series and data.machines, f"QEMU {binary.series}: no machine data"
    known = set(facts.model_names())
    lines = [ln for ln in LINES if ln.split(",")[0] in known]
    machines = sorted(data.machines)
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda m: _sweep_machine(binary, facts, m, lines), machines))
    bad = [b for r in results for b in r[0]]
    checked = sum(r[1] for r in results)
    print(f"\nmachine-type sweep QEMU {binary.version_text}: {len(machines)} machine types x {len(lines)} lines "
          f"(+1 real CPU each) = {checked} checks, {len(bad)} mismatches, {time.monotonic() - t0:.1f} s")
    assert len(machines) > 40 and len(lines) > 20
    assert not bad, f"{len(bad)} of {checked} checks differ:\n" + "\n".join(bad[:30])


def test_qemu111_machine_types_rest_on_older_facts_and_say_so() -> None:
    """QEMU 11.1 has no facts of its own: its machine types (those 10.2's data knows, plus 11.0/11.1) are
    predicted with 10.2's, every prediction says so, and the figure of what that costs is printed."""
    b = _binary("11.1")
    facts = gather_facts(b)
    data = version_data(b.series)
    assert data.series != b.series
    s = Session(b, "microvm", "qemu64")
    try:
        have = {m["name"] for m in s.ask({"execute": "query-machines"})}  # type: ignore[union-attr]
    finally:
        s.close()
    machines = sorted(m for m in have if m.startswith(("pc-i440fx-", "pc-q35-")))
    known = set(facts.model_names())
    lines = [ln for ln in LINES if ln.split(",")[0] in known]
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda m: _sweep_machine(b, facts, m, lines, approximate=True), machines))
    bad = [x for r in results for x in r[0]]
    print(f"\nmachine-type sweep QEMU {b.version_text} on QEMU {data.series}'s facts (approximate): "
          f"{len(machines)} machine types x {len(lines)} lines = {sum(r[1] for r in results)} checks, "
          f"{len(bad)} mismatches, {time.monotonic() - t0:.1f} s")
    assert len(machines) > 20


def test_qemu72_every_machine_type_predicted_exactly() -> None:
    b = _binary("system")
    if b.series != "7.2":
        pytest.skip(f"the system QEMU is {b.series}, not 7.2 (Debian bookworm's)")
    _sweep(b)


def test_qemu100_every_machine_type_predicted_exactly() -> None:
    _sweep(_binary("10.0"))


#: QEMU's tests/qtest/test-x86-cpuid-compat.c (7.2 and 10.0): old machine types that did not auto-raise levels
QEMU_COMPAT_TESTS = (
    ("pc-i440fx-2.7", "486,arat=on,avx512vbmi=on,xsaveopt=on", "level", 1),
    ("pc-i440fx-2.7", "486,3dnow=on,sse4a=on,invtsc=on,npt=on,svm=on", "xlevel", 0),
    ("pc-i440fx-2.7", "486,xstore=on", "xlevel2", 0),
    ("pc-i440fx-1.4", "Nehalem", "level", 2),
    ("pc-i440fx-1.4", "Nehalem,smap=on", "level", 7),
    ("pc-i440fx-2.3", "Penryn", "level", 4),
    ("pc-i440fx-2.3", "Penryn,erms=on", "level", 7),
    ("pc-i440fx-2.9", "Conroe", "level", 10),
    ("pc-i440fx-2.9", "Conroe,erms=on", "level", 10),
    ("pc-i440fx-2.3", "SandyBridge", "xlevel", 0x8000000A),
    ("pc-i440fx-2.4", "SandyBridge", "xlevel", 0x80000008),
    ("pc-i440fx-2.4", "SandyBridge,svm=on,npt=on", "xlevel", 0x80000008),
)


@pytest.mark.parametrize("request_", ["system", "10.0"])
def test_qemu_own_cpuid_compat_expectations(request_: str) -> None:
    """QEMU's own expectations for old machine types (quoted above, e.g. -M pc-i440fx-2.7 -cpu
    486,arat=on,avx512vbmi=on,xsaveopt=on: level 1): the model says the same and so does the real binary.
    A machine type the QEMU version no longer has is skipped, as QEMU's test does (qtest_has_machine)."""
    b = _binary(request_)
    facts = gather_facts(b)
    data = version_data(b.series)
    checked = 0
    for machine, line, key, want in QEMU_COMPAT_TESTS:
        if machine not in data.machines:
            continue
        p = predict_guest(facts, line, "tcg", machine)
        assert not p.approximations
        assert p.levels[key] == want, (machine, line, p.levels)
        s = Session(b, machine, line)
        try:
            cpus = s.ask({"execute": "query-cpus-fast"})
            path = cpus[0]["qom-path"]  # type: ignore[index]
            got = s.ask({"execute": "qom-get", "arguments": {"path": path, "property": key}})
        finally:
            s.close()
        assert got == want, (machine, line, key, got)
        checked += 1
    assert checked >= 5


def test_unversioned_compat_note_is_gone_and_latest_has_none() -> None:
    """pc/q35 are the newest versioned machine type: no compat properties, nothing approximate."""
    b = _binary("system")
    facts = gather_facts(b)
    p = predict_guest(facts, "SandyBridge,svm=on,npt=on", "tcg", "pc")
    assert p.levels["xlevel"] == 0x8000000A and not p.approximations
    assert not any("not modelled" in n for n in p.notes)


def test_table_diff_sanity() -> None:
    """The comparison can fail: a one-bit difference is reported."""
    a, b = CpuidTable(), CpuidTable()
    a.set_reg(1, 0, "ecx", 1)
    b.set_reg(1, 0, "ecx", 0)
    assert a.diff(b)
