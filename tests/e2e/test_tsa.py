"""The TSA bug for real: `rig run matrices/tsa.toml` on emulated hosts with real Debian KVM (issue 12 item 5).

Expected values are the real ones recorded in design.md section 4 (measured with real KVM on emulated hosts,
independently of the rig's model): KVM_GET_SUPPORTED_CPUID 0x80000021.ECX on EPYC-Milan (Zen3, its kernel
lists the `tsa` bug) = 0x6 (TSA_SQ_NO | TSA_L1_NO, bits 1 and 2: "not vulnerable") on 6.16 and 6.18, 0 on
7.3 (SYNTHESIZED_F fixed by 4b3b8a8b0df1); on EPYC-Rome (Zen2, not affected) 0x6 on 6.16 and 6.18.  One
correction to design.md: EPYC-Rome on 7.3.4 gives 0, not 0x6 (measured 2026-12-04 in the oracle matrix and in
this matrix, also 0 on 7.2.13): with the fix KVM advertises the bits only when the kernel has them, and an
emulated host's kernel never sets them: tsa_init() (arch/x86/kernel/cpu/amd.c, 7.3: "if (cpu_has(c,
X86_FEATURE_HYPERVISOR)) return;") skips the synthesis under a hypervisor, and QEMU's EPYC-Rome model has no
0x80000021.ECX for the scattered flags to read.  On bare-metal Zen2 the kernel synthesises them and 7.3
advertises 0x6.

* ``kvmrun`` cases (the probe in a bare KVM VM with CPUID = KVM_GET_SUPPORTED_CPUID): the L2 guest reads
  exactly those bits: the bug reaches the guest on the buggy kernels only.
* ``microvm -cpu host`` cases (QEMU 7.2 inside L1): QEMU 7.2 has no 0x80000021.ECX feature word
  (tsa-sq-no/tsa-l1-no arrived in QEMU 10.1), so its guests read 0 whatever KVM says.
* Every case agrees with the rig's own prediction: verdict ``pass`` where the kernel's policy was imported,
  ``approximate`` where a stand-in policy was used (it then says which), never ``fail``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TSA_BITS = 0x6  # 0x80000021.ECX: TSA_SQ_NO (bit 1) | TSA_L1_NO (bit 2)
#: design.md section 4: real KVM_GET_SUPPORTED_CPUID 0x80000021.ECX per (L1 model, kernel series)
REAL_ECX = {
    ("EPYC-Milan", "6.16"): 0x6, ("EPYC-Milan", "6.18"): 0x6, ("EPYC-Milan", "7.3"): 0x0,
    ("EPYC-Rome", "6.16"): 0x6, ("EPYC-Rome", "6.18"): 0x6, ("EPYC-Rome", "7.3"): 0x0,  # 7.3: see the docstring
}


@pytest.fixture(scope="module")
def tsa_run(tmp_path_factory):
    if not os.path.exists("/usr/bin/qemu-system-x86_64"):
        pytest.skip("qemu-system-x86_64 not installed (run scripts/setup.sh)")
    out = tmp_path_factory.mktemp("tsa") / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(REPO / "matrices" / "tsa.toml"), "--out",
                           str(out), "--jobs", "2", "--no-history"], env=env, capture_output=True, text=True,
                          timeout=3600)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] \
        if (out / "results.jsonl").exists() else []
    assert rows, f"rig run produced no results: {proc.stderr[-2000:]}"
    return proc, out, rows


def _host(row) -> tuple[str, str]:
    model, _, kernel = row["case"]["host"].removeprefix("emulated:").partition("@")
    return model, kernel


def _ecx(table_json: dict | None) -> int | None:
    from rig.cpuid.table import CpuidTable

    if table_json is None:
        return None
    t = CpuidTable.from_json(table_json)
    return t.reg(0x80000021, 0, "ecx")


def _case(rows, model: str, kernel: str, machine: str):
    hits = [r for r in rows if _host(r) == (model, kernel) and r["case"]["machine"] == machine]
    assert len(hits) == 1, f"{model}@{kernel} {machine}: {len(hits)} results"
    return hits[0]


@pytest.mark.parametrize("host", sorted(REAL_ECX), ids=lambda h: f"{h[0]}@{h[1]}")
def test_kvm_supported_tsa_bits_are_the_real_ones(tsa_run, host):
    _proc, out, rows = tsa_run
    row = _case(rows, *host, "kvmrun")
    assert row["outcome"] == "ok", row["message"]
    views = json.loads((out / row["artifacts"] / "views.json").read_text())
    assert _ecx(views["kvm_measured"]) & TSA_BITS == REAL_ECX[host]
    # the rig's own prediction of KVM agrees (the kvm view has no finding)
    assert _ecx(views["kvm_predicted"]) & TSA_BITS == REAL_ECX[host]


@pytest.mark.parametrize("host", sorted(REAL_ECX), ids=lambda h: f"{h[0]}@{h[1]}")
def test_guest_reads_the_bits_kvm_passes_through(tsa_run, host):
    """kvmrun: the L2 guest's own CPUID reads TSA_SQ_NO/TSA_L1_NO exactly where real KVM advertises them."""
    _proc, out, rows = tsa_run
    row = _case(rows, *host, "kvmrun")
    views = json.loads((out / row["artifacts"] / "views.json").read_text())
    observed = views["observed"]
    assert observed, "the probe reported no CPUID"
    for mode, table in observed.items():
        assert _ecx(table) & TSA_BITS == REAL_ECX[host], mode
    word = row["words"]["0x80000021.0.ecx"]
    assert [int(x, 16) & TSA_BITS for x in word] == [REAL_ECX[host]] * 3  # predicted, configured, observed


@pytest.mark.parametrize("host", sorted(REAL_ECX), ids=lambda h: f"{h[0]}@{h[1]}")
def test_qemu_72_hides_the_bits_from_its_guest(tsa_run, host):
    """microvm -cpu host under QEMU 7.2: no 0x80000021.ECX word in QEMU, the guest reads 0 on every kernel."""
    _proc, out, rows = tsa_run
    row = _case(rows, *host, "microvm")
    assert row["outcome"] == "ok", row["message"]
    views = json.loads((out / row["artifacts"] / "views.json").read_text())
    for mode, table in views["observed"].items():
        assert (_ecx(table) or 0) & TSA_BITS == 0, mode
    assert _ecx(views["kvm_measured"]) & TSA_BITS == REAL_ECX[host]


def test_every_case_agrees_with_the_rigs_prediction(tsa_run):
    from rig.policy.store import resolve_policy

    proc, _out, rows = tsa_run
    assert len(rows) == 2 * len(REAL_ECX)
    for row in rows:
        model, kernel = _host(row)
        exact = resolve_policy(kernel).exact
        assert row["verdict"] == ("pass" if exact else "approximate"), (row["case"]["id"], row["verdict"],
                                                                       row.get("findings"), row["message"])
        if not exact:
            assert row["approximations"] and f"kernel {kernel}" in row["approximations"][0]
    # the buggy and the fixed kernel of the affected model both have imported policies: plain pass
    assert {(_host(r), r["verdict"]) for r in rows if _host(r)[1] in ("6.18", "7.3")} == \
        {(h, "pass") for h in REAL_ECX if h[1] in ("6.18", "7.3")}
    assert proc.returncode == 0, proc.stderr[-2000:]
