"""`rig run` on simulate hosts: a kernel with no exact KVM policy gives verdict `approximate`, and says why.

simulate:PROFILE@6.14 has no policy of its own (Debian never shipped 6.14): the policy used is linux-6.12, the
nearest not newer; @7.3 has its imported policy.  Both run the same model on the same profile (real QEMU facts).
"""

from __future__ import annotations

import json
from pathlib import Path

ROME = Path(__file__).resolve().parents[1] / "unit" / "data" / "policy" / "oracle-profiles" / "EPYC-Rome@7.3.json"


def test_simulated_cases_on_a_kernel_without_policy_are_approximate(rig_run, tmp_path):
    prof = tmp_path / "rome.json"  # simulate:PATH@KERNEL: the path must not hold an '@'
    prof.write_text(ROME.read_text())
    run = rig_run(f'''
[matrix]
name = "approx"

[[group]]
name = "g"
models = ["EPYC-Rome"]
machines = ["microvm"]
accels = ["kvm"]
hosts = ["simulate:{prof}@6.14", "simulate:{prof}@7.3"]
''')
    assert run.proc.returncode == 0, run.proc.stderr
    by_kernel = {r["case"]["host"].rsplit("@", 1)[1]: r for r in run.rows}
    assert set(by_kernel) == {"6.14", "7.3"}
    a, exact = by_kernel["6.14"], by_kernel["7.3"]
    assert exact["verdict"] == "pass" and "approximations" not in exact
    assert a["verdict"] == "approximate"
    (sentence,) = a["approximations"]
    assert "linux-6.12" in sentence and "6.14" in sentence and "rig policy get 6.14" in sentence
    assert "APPROXIMATE (1 case(s)" in run.proc.stdout and "linux-6.12" in run.proc.stdout
    report = json.loads((run.out / "report.json").read_text())
    assert report["summary"]["verdicts"] == {"pass": 1, "approximate": 1}
    html = (run.out / "report.html").read_text()
    assert "approximate" in html and "rig policy get 6.14" in html
    junit = (run.out / "junit.xml").read_text()
    assert "approximate" in junit and "APPROXIMATE: KVM policy: no policy for kernel 6.14" in junit
    assert "<failure" not in junit and "<error" not in junit


def test_the_sentence_is_in_the_message_too():
    """Reports that show only a case's message (TAP, JUnit <skipped> messages) still carry the approximation."""
    from rig.matrix.model import Case
    from rig.run.result import CaseResult, judge

    c = Case("simulate:p.json@6.14", "system", "kvm", "microvm", "EPYC-Rome", "default", ())
    r = judge(CaseResult(c, "simulated", message="prediction only", approximations=["KVM policy: S"]), ())
    assert r.verdict == "approximate" and r.message == "prediction only; APPROXIMATE: KVM policy: S"
    again = judge(r, ())
    assert again.message == r.message  # judging twice does not repeat it
