"""Three-way comparison: views, classification, naming, volatile fields and runtime rules.

Bit positions are the architectural ones (Intel SDM vol. 2A CPUID): 1.ECX[21]
x2APIC, 1.ECX[26] XSAVE, 1.ECX[27] OSXSAVE, 7.0.ECX[3] PKU, 7.0.ECX[4] OSPKE,
1.EBX[31:24] initial APIC ID.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.compare.normalise import NormaliseError, load_rules, normalise
from rig.compare.runtime import RuntimeRuleError, check_snapshots, default_runtime_rules, load_runtime_rules
from rig.compare.threeway import Views
from rig.compare.threeway import compare as compare_views
from rig.cpuid.table import CpuidTable, Location, Regs
from rig.guest.protocol import Fault, RuntimeSnapshot
from rig.matrix.model import KnownIssue
from rig.results import Case, Finding

X2APIC, XSAVE, OSXSAVE = 1 << 21, 1 << 26, 1 << 27


def compare(case, *, quirk=None, known=(), qemu_version=None, **views):
    """The views as keywords (rig.compare.threeway.Views)."""
    return compare_views(case, Views(**views), quirk=quirk, known=known, qemu_version=qemu_version)


def case(accel: str = "tcg") -> Case:
    return Case(host="native", qemu="system", accel=accel, machine="microvm", model="Skylake-Server")


def table(ecx: int, ebx: int = 0, **extra: int) -> CpuidTable:
    t = CpuidTable()
    t.set(1, 0, Regs(None, ebx, ecx, 0))
    for key, v in extra.items():
        leaf, sub, reg = key.split("_")
        t.set_reg(int(leaf, 16), int(sub), reg, v)
    return t


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.to_json() for f in findings]
    return findings[0]


def test_agreement_has_no_findings_and_volatile_fields_are_ignored() -> None:
    c = table(XSAVE)
    observed = {"prot32": table(XSAVE, ebx=0x05000000), "long64": table(XSAVE, ebx=0x07010000)}  # APIC ID, count
    r = compare(case(), predicted=c, configured=c, observed=observed)
    assert r.findings == [] and (1, 0, "ecx") in r.scope


def test_model_gap_is_named_feature_and_location() -> None:
    r = compare(case(), predicted=table(0), configured=table(X2APIC), observed={"long64": table(X2APIC)})
    f = only(r.findings)
    assert (f.cls, f.view, f.name, str(f.location)) == ("model-gap", "guest", "x2apic", "0x1.ECX[21]")
    assert (f.predicted, f.configured, f.observed) == (0, 1, {"long64": 1})


@pytest.mark.parametrize(("accel", "quirk", "cls"), [("tcg", None, "qemu-behaviour"), ("kvm", None, "kvm-behaviour"),
                                                     ("kvm", "pvm-passthrough", "host-quirk")])
def test_guest_other_than_configured(accel: str, quirk: str | None, cls: str) -> None:
    c = table(X2APIC)
    r = compare(case(accel), predicted=c, configured=c, observed={"prot32": table(0), "long64": table(X2APIC)},
                quirk=quirk)
    f = only(r.findings)
    assert f.cls == cls and f.layer == cls and f.observed == {"prot32": 0, "long64": 1}


def test_prediction_only_registers_follow_the_host_quirk() -> None:
    """A guest that does not read QEMU's CPUID (PVM) says nothing about the model: a difference in a
    register QMP does not report (7.0.EAX, found on this machine's /dev/kvm) is the quirk's too."""
    pred = table(0, **{"7_0_eax": 0})
    conf = table(0)
    r = compare(case("kvm"), predicted=pred, configured=conf, observed={"long64": table(0, **{"7_0_eax": 1})},
                quirk="host quirk: CPUID not applied")
    f = only(r.findings)
    assert (f.cls, f.layer, f.note) == ("host-quirk", "host-quirk", "host quirk: CPUID not applied")
    # without a quirk the same difference is the model's
    r = compare(case("kvm"), predicted=pred, configured=conf, observed={"long64": table(0, **{"7_0_eax": 1})})
    assert only(r.findings).cls == "model-gap"


def test_known_issue_turns_a_finding_into_known_bug_keeping_its_layer() -> None:
    issue = KnownIssue(id="x", title="t", link="https://example.invalid/1", where="k.toml:0", layer="qemu-behaviour",
                       features=("x2apic",), match=(("model", ("Skylake-*",)),))
    c = table(X2APIC)
    r = compare(case(), predicted=c, configured=c, observed={"prot32": table(0)}, known=[issue])
    f = only(r.findings)
    assert (f.cls, f.layer, f.issue.link) == ("known-bug", "qemu-behaviour", "https://example.invalid/1")
    other = Case(host="native", qemu="system", accel="tcg", machine="microvm", model="EPYC-Rome")
    assert only(compare(other, predicted=c, configured=c, observed={"prot32": table(0)}, known=[issue]).findings).cls \
        == "qemu-behaviour"


def test_prediction_only_registers_are_compared_with_the_guest() -> None:
    """Levels/vendor are not in feature-words: configured is None there, a guest mismatch is a model gap."""
    pred = table(0, **{"0_0_eax": 0xD})
    conf = table(0)
    r = compare(case(), predicted=pred, configured=conf, observed={"long64": table(0, **{"0_0_eax": 0x14})})
    assert (0, 0, "eax") in r.scope
    assert {(f.cls, f.configured, str(f.location)) for f in r.findings} == {
        ("model-gap", None, "0x0.EAX[0]"), ("model-gap", None, "0x0.EAX[3]"), ("model-gap", None, "0x0.EAX[4]")}


def test_runtime_bits_follow_their_rules_per_mode() -> None:
    """The probe clears CR4 before each mode: OSXSAVE reads 0 in ring-0 modes; the user probe sees it set."""
    c = table(XSAVE)
    assert compare(case(), predicted=c, configured=c,
                   observed={"prot32": table(XSAVE), "user": table(XSAVE | OSXSAVE)}).findings == []
    f = only(compare(case(), predicted=c, configured=c, observed={"long64": table(XSAVE | OSXSAVE)}).findings)
    assert (f.name, f.cls, str(f.location)) == ("osxsave", "qemu-behaviour", "0x1.ECX[27]")
    assert "runtime" in f.note
    # without XSAVE the user-mode guest must not see OSXSAVE either
    f = only(compare(case(), predicted=table(0), configured=table(0), observed={"user": table(OSXSAVE)}).findings)
    assert f.location == Location(1, 0, "ecx", 27)


def _snap(mode: str, exp: str, phase: str, ecx: int, fault: Fault | None = None) -> RuntimeSnapshot:
    t = CpuidTable()
    t.set(1, 0, Regs(0, 0, ecx, 0))
    return RuntimeSnapshot(mode, exp, phase, fault=fault, cpuid=t)


def test_runtime_experiments_checked() -> None:
    conf = table(XSAVE)
    good = {"long64": [_snap("long64", "osxsave", "before", XSAVE), _snap("long64", "osxsave", "after", XSAVE | OSXSAVE)]}
    assert check_snapshots(good, conf) == []
    bad = {"long64": [_snap("long64", "osxsave", "before", XSAVE | OSXSAVE), _snap("long64", "osxsave", "after", XSAVE)]}
    mm = check_snapshots(bad, conf)
    assert [(m.phase, m.expected, m.observed) for m in mm] == [("before", 0, 1), ("after", 1, 0)]
    faulted = {"long64": [_snap("long64", "osxsave", "after", XSAVE, Fault("cr4", 13))]}
    assert check_snapshots(faulted, conf) == []  # a faulting CR4 write leaves the bit 0
    r = compare(case("kvm"), predicted=conf, configured=conf, observed={}, runtime=bad)
    assert {(f.view, f.cls, f.name) for f in r.findings} == {("runtime", "kvm-behaviour", "osxsave")}


def test_a_skip_that_hides_a_qemu_bug_is_a_finding() -> None:
    """rig/compare/data/runtime.toml skip_findings: the probe skipping OSXSAVE because QEMU's TCG takes
    CR4.OSXSAVE as reserved is a finding when XSAVE is advertised; other skips are not."""
    skip = {"long64": [RuntimeSnapshot("long64", "osxsave", "skip", reason="tcg-osxsave-reserved")]}
    mm = check_snapshots(skip, table(XSAVE))
    assert [(m.mode, m.phase, m.expected, m.observed) for m in mm] == [("long64", "skip", 1, 0)]
    assert "reserved" in mm[0].note
    assert check_snapshots(skip, table(0)) == []  # XSAVE not advertised: nothing to enable
    other = {"long64": [RuntimeSnapshot("long64", "osxsave", "skip", reason="no-xsave")]}
    assert check_snapshots(other, table(XSAVE)) == []
    f = only(compare(case("tcg"), predicted=table(XSAVE), configured=table(XSAVE), observed={}, runtime=skip).findings)
    assert (f.view, f.cls, f.name, f.observed) == ("runtime", "qemu-behaviour", "osxsave", {"long64/skip": 0})


def test_filtered_view() -> None:
    pf, cf = CpuidTable(), CpuidTable()
    pf.set(7, 0, Regs(None, 1 << 18, None, None))
    cf.set(7, 0, Regs(None, 0, None, None))
    c = table(0)
    f = only(compare(case(), predicted=c, configured=c, observed={}, predicted_filtered=pf,
                     configured_filtered=cf).findings)
    assert (f.view, f.cls, f.name, f.predicted, f.configured) == ("filtered", "model-gap", "rdseed", 1, 0)


def test_finding_json_round_trip() -> None:
    r = compare(case(), predicted=table(0), configured=table(X2APIC), observed={"long64": table(X2APIC)})
    f = r.findings[0]
    assert Finding.from_json(f.to_json()) == f


def test_rule_files_are_checked(tmp_path: Path) -> None:
    rules = load_rules()
    t = normalise(table(XSAVE, ebx=0xFF000000 | 0x800))
    assert t.value(1, 0, "ebx") == 0x800 and any(r.leaf == 0xB for r in rules)
    bad = tmp_path / "v.toml"
    bad.write_text('[[rule]]\nleaf = 1\nreg = "exx"\nreason = "r"\n')
    with pytest.raises(NormaliseError, match="not a register"):
        load_rules(bad)
    bad.write_text('[[rule]]\nreg = "eax"\nreason = "r"\n')
    with pytest.raises(NormaliseError, match="missing 'leaf'"):
        load_rules(bad)
    assert {r.name for r in default_runtime_rules()} == {"osxsave", "ospke"}
    bad.write_text('[[bit]]\nname = "x"\nleaf = 1\nreg = "ecx"\nbit = 1\nfollows = {leaf = 1, reg = "ecx", bit = 2}\n'
                   'modes = {user = "sometimes"}\n')
    with pytest.raises(RuntimeRuleError, match="'sometimes' is not one of"):
        load_runtime_rules(bad)


def test_qemu_guest_rules_explain_configured_bits_the_guest_cannot_see() -> None:
    """cpu_x86_cpuid: leaf 0xD reads zeros without XSAVE, so -xsave leaves xsaveopt configured but invisible."""
    c = table(0, **{"d_1_eax": 1})       # xsaveopt configured (no xsave -> xsaveopt dependency in QEMU 7.2)
    guest = table(0, **{"d_1_eax": 0})
    broadwell = Case(host="native", qemu="system", accel="tcg", machine="microvm", model="Broadwell", flags=("-xsave",))
    assert compare(broadwell, predicted=c, configured=c, observed={"long64": guest}, qemu_version="7.2.22").findings \
        == []
    f = only(compare(broadwell, predicted=c, configured=c, observed={"long64": guest}).findings)
    assert (f.name, f.cls) == ("xsaveopt", "qemu-behaviour")
    # with XSAVE configured the rule does not apply: a guest that misses xsaveopt is a finding
    c2 = table(XSAVE, **{"d_1_eax": 1})
    f = only(compare(broadwell, predicted=c2, configured=c2, observed={"long64": table(XSAVE, **{"d_1_eax": 0})},
                     qemu_version="7.2.22").findings)
    assert f.name == "xsaveopt" and "guest rules" in f.note
