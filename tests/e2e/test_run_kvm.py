"""`rig run` under this machine's /dev/kvm: a host that does not apply QEMU's CPUID is a host quirk, not a
model gap, a QEMU bug or a KVM bug.

On the PVM /dev/kvm of the development machines (design.md section 6) the guest reads the outer host's CPUID
whatever ``-cpu`` says.  The run must then classify every difference as ``host-quirk`` (including registers QMP
does not report, such as 7.0.EAX, where only the prediction and the guest can be compared) and judge the case
``expected``.  On a KVM that applies QEMU's CPUID there is no quirk and no unexpected finding.  Which host this
is is decided independently of the rig's detector: the guest's 7.0.EBX is the same for qemu64 and EPYC-Rome
although QEMU configured different values.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.e2e

MATRIX = """
[matrix]
name = "kvm-run-test"
[defaults]
accels = ["kvm"]
machines = ["microvm"]
timeout = 30
[[group]]
name = "g"
models = ["qemu64", "EPYC-Rome"]
variants = [ { name = "default" }, { name = "no-sse4.2", flags = ["sse4.2=off"] } ]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, qemu_binary, rig_run_in):
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is absent or not accessible: KVM cases need a host with KVM")
    r = rig_run_in(tmp_path_factory.mktemp("kvmrun"), MATRIX)
    return r.proc, r.rows, {row["id"]: r.views(row) for row in r.rows}


def _ignores_config(results, views) -> bool:
    by_model = {r["case"]["model"]: r for r in results if r["case"]["variant"] == "default"}
    obs = {m: views[r["id"]]["observed"] for m, r in by_model.items()}
    conf = {m: r["words"]["0x7.0.ebx"][1] for m, r in by_model.items()}
    seen = {m: r["words"]["0x7.0.ebx"][2] for m, r in by_model.items()}
    assert all(obs.values()), "a default case has no observed table"
    return conf["qemu64"] != conf["EPYC-Rome"] and seen["qemu64"] == seen["EPYC-Rome"]


def test_every_case_runs_and_is_judged(run):
    p, results, _ = run
    assert len(results) == 4
    for r in results:
        assert r["outcome"] == "ok", (r["id"], r["message"])
        assert r["verdict"] in ("pass", "expected"), (r["id"], r.get("unexpected"))
    assert p.returncode == 0, p.stderr[-2000:]


def test_host_quirk_classifies_every_difference(run):
    _, results, views = run
    if _ignores_config(results, views):
        for r in results:
            assert r["quirk"] and r["quirk"].startswith("host quirk"), r["id"]
            layers = {f["layer"] for f in r["findings"]}
            assert layers == {"host-quirk"}, (r["id"], layers)
            # the PVM guest reads 7.0.EBX F1BF03AB (design.md section 6) whatever QEMU configured
            assert r["words"]["0x7.0.ebx"][2] != r["words"]["0x7.0.ebx"][1]
    else:
        for r in results:
            assert r["quirk"] is None, r["id"]
            assert not r.get("unexpected"), r["id"]
