"""rig.results and rig.caseaxes: the approximate verdict, typed case axes parsed once, enums in JSON."""

from __future__ import annotations

import json

import pytest

from rig.caseaxes import (
    BootForm,
    CaseSpecError,
    EmulatedHostSpec,
    GuestKind,
    GuestSpec,
    MachineSpec,
    NativeHost,
    SimulatedHost,
    parse_host,
)
from rig.cpuid.table import Location
from rig.report.html import html_report
from rig.report.summary import summarise
from rig.results import DEFAULT_FAIL_ON, Case, CaseResult, Finding, FindingClass, Outcome, Verdict, judge

APPROX = ("kernel 6.14 has no exact KVM policy: the 6.12 policy was used (import it: rig policy import 6.14)",)


def case(**kw) -> Case:
    return Case(**{"host": "native", "qemu": "system", "accel": "tcg", "machine": "microvm", "model": "EPYC-Rome",
                   **kw})


def test_approximate_only_where_the_verdict_would_be_pass():
    assert judge(CaseResult(case(), "ok", approximations=APPROX), DEFAULT_FAIL_ON).verdict == Verdict.APPROXIMATE
    assert judge(CaseResult(case(), "simulated", approximations=APPROX), DEFAULT_FAIL_ON).verdict == "approximate"
    bug = Finding(Location(7, 0, "ebx", 5), "avx2", "model-gap", "model-gap", "guest", 1, 0)
    assert judge(CaseResult(case(), "ok", findings=[bug], approximations=APPROX), DEFAULT_FAIL_ON).verdict == "fail"
    quirk = Finding(Location(7, 0, "ebx", 5), "avx2", "host-quirk", "host-quirk", "guest", 1, 0)
    assert judge(CaseResult(case(), "ok", findings=[quirk], approximations=APPROX),
                 DEFAULT_FAIL_ON).verdict == "expected"
    assert judge(CaseResult(case(), "rig-error", approximations=APPROX), DEFAULT_FAIL_ON).verdict == "error"
    assert not Verdict.APPROXIMATE.unexpected


def test_approximations_survive_json_and_show_in_reports():
    r = judge(CaseResult(case(), "ok", approximations=APPROX), DEFAULT_FAIL_ON)
    back = CaseResult.from_json(json.loads(json.dumps(r.to_json())))
    assert back.approximations == APPROX and back.verdict == Verdict.APPROXIMATE
    assert summarise([back]).line() == "1 cases; 1 approximate"
    page = html_report([back], matrix="m", run_dir="/tmp/r", info={})
    assert "approximate" in page and "no exact KVM policy" in page


def test_enums_are_their_strings_in_json():
    f = Finding(Location(1, 0, "ecx", 21), "x2apic", "known-bug", "qemu-behaviour", "guest", 1, 1)
    assert f.cls is FindingClass.KNOWN_BUG and f.layer is FindingClass.QEMU_BEHAVIOUR
    assert f.to_json()["class"] == "known-bug"
    r = CaseResult(case(), "timeout")
    assert r.outcome is Outcome.TIMEOUT and json.loads(json.dumps(r.to_json()))["outcome"] == "timeout"
    with pytest.raises(ValueError):
        CaseResult(case(), "finished")


@pytest.mark.parametrize(("text", "spec"), [
    ("native", NativeHost()),
    ("simulate", SimulatedHost()),
    ("simulate:hosts/epyc.json@6.12", SimulatedHost("hosts/epyc.json", "6.12")),
    ("emulated:EPYC-Rome@6.12,npt=0", EmulatedHostSpec("EPYC-Rome", "6.12", (("kvm_amd.npt", "0"),))),
])
def test_host_specs_round_trip(text, spec):
    assert parse_host(text) == spec and str(spec) == text


def test_case_axes_are_parsed_when_the_case_is_made():
    c = case(host="emulated:EPYC-Rome@6.12", machine="q35+qboot", guest="linux@6.1")
    assert c.host_spec == EmulatedHostSpec("EPYC-Rome", "6.12")
    assert c.machine_spec == MachineSpec("q35", BootForm.QBOOT, True) and str(c.machine_spec) == "q35+qboot"
    assert c.guest_spec == GuestSpec(GuestKind.LINUX, "6.1")
    assert case(machine="microvm").machine_spec.form == BootForm.PVH
    assert case(machine="pc").machine_spec.form == BootForm.BOOTSECTOR
    for bad in ({"host": "cloud"}, {"host": "emulated:EPYC"}, {"machine": "q35+uefi"}, {"guest": "probe@6.1"},
                {"guest": "windows"}, {"host": "simulate:"}):
        with pytest.raises(CaseSpecError):
            case(**bad)
