"""The QEMU layer model against real QEMU: prediction == QMP feature-words / filtered-features.

For every x86 CPU model of QEMU 7.2 (and 10.0 when it can be fetched) at its
default, on microvm (latest model version) and q35 (v1), plus flag variants
exercising QEMU's precedence, dependency, alias and filtering rules, the
predicted configured layer must equal what QEMU reports over QMP exactly.
One QEMU per case (``-S``, no guest), two at a time.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the qemu_configured helper beside this file
from qemu_configured import QemuRefused, configured  # noqa: E402

from rig.errors import RigError  # noqa: E402
from rig.qemu.binaries import QemuBinary, find_qemu, gather_facts  # noqa: E402
from rig.qemu.model import QemuModelError, UnknownCpuModel, model_names, predict_guest  # noqa: E402

pytestmark = pytest.mark.e2e

#: flag variants: precedence (+f/-f over f=on|off), aliases, dependencies, TCG filtering
VARIANTS = (
    "-avx2", "+avx2,-xsave", "-lm", "avx=off,+avx", "+x2apic", "-x2apic,x2apic=on", "x2apic=on,-x2apic",
    "+pku", "-sse2", "+svm", "+vmx", "+xsaves", "+rdseed", "+intel-pt", "+la57", "sse4_1=off", "+i64",
    "+kvmclock", "-hypervisor", "+topoext", "+lahf_lm", "pku=on,pku=off", "-avx,+avx", "+avx512f", "-xsave,+xsaveopt",
)
VARIANT_MODELS = ("Skylake-Server", "EPYC-Rome", "qemu64", "Opteron_G3", "max")


def _binary(request: str) -> QemuBinary:
    try:
        return find_qemu(request)
    except RigError as e:
        pytest.skip(f"QEMU {request} not available here: {e}")


@pytest.fixture(scope="module")
def qemu72() -> QemuBinary:
    b = _binary("system")
    if b.series != "7.2":
        pytest.skip(f"the system QEMU is {b.series}, not 7.2 (Debian bookworm's)")
    return b


@pytest.fixture(scope="module")
def qemu100() -> QemuBinary:
    return _binary("10.0")


def _mismatches(binary: QemuBinary, cases: list[tuple[str, str]]) -> tuple[list[str], int]:
    facts = gather_facts(binary)

    def one(case: tuple[str, str]) -> str | None:
        cpu, machine = case
        try:
            fw, ff, _ = configured(binary.path, cpu, machine, firmware_dir=binary.firmware_dir)
        except QemuRefused as e:
            return f"{cpu} on {machine}: QEMU refused: {str(e).strip()[-160:]}"
        p = predict_guest(facts, cpu, "tcg", machine)
        d, df = p.table.diff(fw), p.filtered.diff(ff)
        if d or df:
            return (f"{cpu} on {machine} ({p.resolved_model}): feature-words "
                    f"{[f'{x.location} predicted {x.a} QEMU {x.b}' for x in d]}, filtered "
                    f"{[f'{x.location} predicted {x.a} QEMU {x.b}' for x in df]}")
        return None

    with ThreadPoolExecutor(2) as ex:
        out = [m for m in ex.map(one, cases) if m]
    return out, len(cases)


def _cases(binary: QemuBinary) -> list[tuple[str, str]]:
    facts = gather_facts(binary)
    names = [n for n in model_names(facts) if n not in ("host", "base")]
    cases = [(n, "microvm") for n in names]
    cases += [(n, "q35") for n in names if "-v" not in n]
    cases += [(f"{m},{v}", "microvm") for m in VARIANT_MODELS for v in VARIANTS]
    return cases


def test_qemu72_every_model_and_variant_predicted_exactly(qemu72: QemuBinary) -> None:
    bad, n = _mismatches(qemu72, _cases(qemu72))
    assert n > 150
    assert not bad, f"{len(bad)} of {n} cases differ:\n" + "\n".join(bad[:20])


def test_qemu100_every_model_and_variant_predicted_exactly(qemu100: QemuBinary) -> None:
    bad, n = _mismatches(qemu100, _cases(qemu100))
    assert n > 150
    assert not bad, f"{len(bad)} of {n} cases differ:\n" + "\n".join(bad[:20])


def test_microvm_hides_clflushopt_that_q35_shows(qemu72: QemuBinary) -> None:
    """design.md §6: TCG, -cpu Skylake-Server: 7.0.EBX 011803A9 on microvm, 019803A9 on q35 (measured)."""
    facts = gather_facts(qemu72)
    micro = predict_guest(facts, "Skylake-Server", "tcg", "microvm")
    q35 = predict_guest(facts, "Skylake-Server", "tcg", "q35")
    assert (micro.resolved_model, q35.resolved_model) == ("Skylake-Server-v5", "Skylake-Server-v1")
    assert micro.table.value(7, 0, "ebx") == 0x011803A9
    assert q35.table.value(7, 0, "ebx") == 0x019803A9
    for machine, want in (("microvm", 0x011803A9), ("q35", 0x019803A9)):
        fw, _, _ = configured(qemu72.path, "Skylake-Server", machine)
        assert fw.value(7, 0, "ebx") == want


def test_level_prediction_matches_full_expansion(qemu72: QemuBinary) -> None:
    """min-level/xlevel from the model definition raised by the words (full expansion's level/xlevel)."""
    facts = gather_facts(qemu72, expansions=("static", "full"))
    checked = 0
    for name in model_names(facts):
        if name in ("host", "base") or "-v" in name or name not in facts.full:
            continue
        p = predict_guest(facts, name, "tcg", "none")
        full = facts.full[name].props
        assert (p.levels["level"], p.levels["xlevel"]) == (full["level"], full["xlevel"]), name
        checked += 1
    assert checked > 30


def test_unknown_model_and_feature_are_clear_errors(qemu72: QemuBinary) -> None:
    facts = gather_facts(qemu72)
    with pytest.raises(UnknownCpuModel, match="unknown CPU model 'Skylake-Servr'"):
        predict_guest(facts, "Skylake-Servr", "tcg", "microvm")
    with pytest.raises(QemuModelError, match="no CPU feature 'avx9'"):
        predict_guest(facts, "qemu64,+avx9", "tcg", "microvm")
    with pytest.raises(QemuRefused):
        configured(qemu72.path, "qemu64,+avx9", "microvm")


def test_kvm_predictions_from_measured_supported_table(qemu72: QemuBinary) -> None:
    """Native KVM: the model on this machine's measured KVM_GET_SUPPORTED_CPUID (+ QEMU's fix-ups,
    KVM default properties, host vendor, microvm's split irqchip) == QMP feature-words under -accel kvm."""
    from rig.host.kvm import KvmError, read_kvm_cpuid
    from rig.qemu.casepredict import predict_case_full
    from rig.results import Case

    try:
        read_kvm_cpuid()
    except KvmError as e:
        pytest.skip(f"no usable /dev/kvm here: {e}")
    lines = ("EPYC-Rome", "Skylake-Server", "kvm64", "qemu64", "Opteron_G5,+svm", "EPYC-Milan,-xsave",
             "EPYC-Rome,+x2apic,-kvmclock", "qemu64,kvm=off", "Skylake-Server,vendor=GenuineIntel", "Cascadelake-Server")
    compared, bad = 0, []
    for line in lines:
        model, *flags = line.split(",")
        for machine in ("microvm", "q35"):
            case = Case(host="native", qemu="system", accel="kvm", machine=machine, model=model, flags=tuple(flags))
            try:
                fw, ff, _ = configured(qemu72.path, line, machine, accel="kvm")
            except QemuRefused:
                continue  # e.g. this PVM host's MSR 0x10a abort: a case outcome, not a prediction
            p = predict_case_full(case)
            compared += 1
            d, df = p.table.diff(fw), p.filtered.diff(ff)
            if d or df:
                bad.append(f"{line} {machine}: {[str(x.location) for x in d]} filtered {[str(x.location) for x in df]}")
    assert compared >= 10
    assert not bad, "\n".join(bad)


def test_levels_with_properties_match_full_expansion(qemu72: QemuBinary) -> None:
    """Level raising after -cpu properties: full expansion with props == the model's levels."""
    import json
    import subprocess

    combos = [("max", {"svm": False}), ("max", {"xsave": False, "xsaveopt": False}), ("qemu64", {"svm": False}),
              ("Opteron_G1", {"smep": True}), ("Opteron_G1", {"arat": True}), ("Opteron_G1", {"invtsc": True}),
              ("EPYC-Rome", {"svm": False}), ("core2duo", {"xsave": True, "avx": True}), ("486", {"lm": True})]
    cmds = [{"execute": "qmp_capabilities"}] + [
        {"execute": "query-cpu-model-expansion", "arguments": {"type": "full", "model": {"name": m, "props": p}}}
        for m, p in combos] + [{"execute": "quit"}]
    out = subprocess.run([str(qemu72.path), "-M", "none", "-accel", "tcg", "-nodefaults", "-display", "none",
                          "-qmp", "stdio"], input="".join(json.dumps(c) + "\n" for c in cmds), capture_output=True,
                         text=True, timeout=60, check=False).stdout
    replies = [json.loads(line)["return"] for line in out.splitlines() if '"return"' in line][1 : len(combos) + 1]
    assert len(replies) == len(combos)
    facts = gather_facts(qemu72)
    for (model, props), r in zip(combos, replies, strict=True):
        line = ",".join([model] + [f"{k}={'on' if v else 'off'}" for k, v in props.items()])
        p = predict_guest(facts, line, "tcg", "none")
        full = r["model"]["props"]
        assert (p.levels["level"], p.levels["xlevel"]) == (full["level"], full["xlevel"]), line
