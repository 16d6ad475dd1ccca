"""`rig policy table` / `history` / explain: facts of the kernel sources, per imported kernel.

From Debian's sources (arch/x86/kvm/cpuid.c): TSA_SQ_NO is absent from 5.10.223, a kvm_cpu_cap_check_and_set
stable backport in 6.1.176 and 6.12.117, SYNTHESIZED_F in 6.17.8/6.18.15 (pre-fix) and 7.2.13/7.3.4 (fixed,
mainline 4b3b8a8b0df1 in 7.0-rc3); GP_ON_USER_CPUID is EMULATED_F from 7.2 and absent from 6.18;
TSC_DEADLINE_TIMER is EMULATED_F from 6.14 (not handled in 6.12).  The EPYC-Milan profile (real KVM on 7.3.4)
reads 0x80000021.ECX = 0x6 on 6.17/6.18 and 0 on 7.3 with real KVM (design.md section 4).
"""

from __future__ import annotations

from pathlib import Path

from rig.cli import main

MILAN = str(Path(__file__).parent / "data" / "policy" / "oracle-profiles" / "EPYC-Milan@7.3.json")


def _row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(name + ","))


def test_table_csv_has_the_macros_per_kernel(capsys):
    assert main(["policy", "table", "--csv", "5.10", "6.12", "6.18", "7.2", "7.3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "feature,cpuid,word,bit,/proc,linux-5.10,linux-6.12,linux-6.18,linux-7.2,linux-7.3"
    tsa = _row(out, "TSA_SQ_NO").split(",")
    assert tsa[1] == "0x80000021.0.ecx[1]" and tsa[5] == "(no such flag)" and "check_and_set" in tsa[6]
    assert tsa[7:] == ["SYNTHESIZED_F"] * 3
    gp = _row(out, "GP_ON_USER_CPUID").split(",")
    assert gp[7] in ("-", "(no such flag)") and gp[8] == "EMULATED_F"
    tsc = _row(out, "TSC_DEADLINE_TIMER").split(",")
    assert tsc[4] == "tsc_deadline_timer" and tsc[6] == "-" and "EMULATED_F" in tsc[7]
    assert main(["policy", "table", "--html", "7.3"]) == 0
    assert "<td>TSA_SQ_NO</td>" in capsys.readouterr().out


def test_history_marks_where_the_tsa_answer_changed(capsys):
    assert main(["policy", "history", "TSA_SQ_NO", "--profile", MILAN]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert "bit 1" in lines["linux-6.17"] and "pre-fix SYNTHESIZED_F" in lines["linux-6.17"]
    assert "bit 1" in lines["linux-6.18"] and "changed" not in lines["linux-6.18"]
    assert "bit 0" in lines["linux-7.2"] and "fixed SYNTHESIZED_F" in lines["linux-7.2"] and "changed" in lines["linux-7.2"]
    assert "bit 0" in lines["linux-7.3"]


def test_explain_tsa_sq_no_names_synthesized_f_and_the_fix(capsys):
    for kernel, sem in (("6.18", "pre-fix SYNTHESIZED_F"), ("7.3", "fixed SYNTHESIZED_F")):
        assert main(["policy", "explain", "TSA_SQ_NO", "--profile", MILAN, "--kernel", kernel]) == 0
        out = capsys.readouterr().out
        assert sem in out and "4b3b8a8b0df1" in out and "7.0-rc3" in out
