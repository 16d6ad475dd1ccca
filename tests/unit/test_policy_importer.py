"""The importer's C reading and header parsing on small hand-written inputs."""

from __future__ import annotations

import pytest

from rig.policy import cond
from rig.policy.importer import (
    cpuinfo_rule,
    parse_cpufeatures,
    parse_kernel_words,
    parse_reverse_cpuid,
    parse_scattered,
)
from rig.policy.importer_c import CFunction, find_function, preprocess, statements, strip_comments
from rig.policy.importer_leaves import _cases, _mask

C_FN = """
/* a comment with kvm_cpu_cap_set(X86_FEATURE_FAKE); inside */
static __init void demo_set_cpu_caps(void)
{
#ifdef CONFIG_X86_64
    unsigned int f_lm = F(LM);
#else
    unsigned int f_lm = 0;
#endif
    kvm_cpu_cap_mask(CPUID_1_ECX,
        F(XMM3) | 0 /* DTES64 */ | F(SSSE3)
    );
    if (nested) {
        kvm_cpu_cap_set(X86_FEATURE_SVM);
        if (npt_enabled)
            kvm_cpu_cap_set(X86_FEATURE_NPT);
    } else
        kvm_cpu_cap_clear(X86_FEATURE_VMCBCLEAN);
    // line comment
    if (WARN_ON((kvm_cpu_cap_has(X86_FEATURE_RDTSCP) ||
             kvm_cpu_cap_has(X86_FEATURE_RDPID)) &&
             !kvm_is_supported_user_return_msr(MSR_TSC_AUX))) {
        kvm_cpu_cap_clear(X86_FEATURE_RDTSCP);
    }
}
"""


def test_strip_comments_keeps_lines():
    s = strip_comments(C_FN)
    assert s.count("\n") == C_FN.count("\n") and "FAKE" not in s and "line comment" not in s


def test_preprocess_follows_config():
    s = preprocess(strip_comments(C_FN))
    assert "F(LM)" in s and "f_lm = 0" not in s
    s = preprocess(strip_comments(C_FN), frozenset())
    assert "f_lm = 0" in s and "F(LM)" not in s


def test_statements_carry_nested_and_else_conditions():
    fn = find_function(C_FN, "demo_set_cpu_caps")
    assert isinstance(fn, CFunction)
    sts = statements(fn)
    by_text = {s.text: s for s in sts}
    assert by_text["kvm_cpu_cap_set(X86_FEATURE_SVM)"].conds == ("nested",)
    assert by_text["kvm_cpu_cap_set(X86_FEATURE_NPT)"].conds == ("nested", "npt_enabled")
    assert by_text["kvm_cpu_cap_clear(X86_FEATURE_VMCBCLEAN)"].conds == ("!(nested)",)
    mask = next(s for s in sts if s.text.startswith("kvm_cpu_cap_mask"))
    assert mask.line == C_FN[:C_FN.index("kvm_cpu_cap_mask")].count("\n") + 1
    warn = by_text["kvm_cpu_cap_clear(X86_FEATURE_RDTSCP)"]
    node = cond.parse_c(warn.conds[0])
    assert str(node) == '(cap(RDTSCP) || cap(RDPID)) && !c("kvm_is_supported_user_return_msr(MSR_TSC_AUX)")'


@pytest.mark.parametrize("c, dsl", [
    ("boot_cpu_has(X86_FEATURE_IBPB) && !boot_cpu_has_bug(X86_BUG_EIBRS_PBRSB)", "has(IBPB) && !bug(EIBRS_PBRSB)"),
    ("!tdp_enabled || !boot_cpu_has(X86_FEATURE_OSPKE)", "!var(tdp_enabled) || !has(OSPKE)"),
    ("cpuid_ecx(7) & F(LA57)", "raw(LA57)"),
    ("!tdp_enabled && IS_ENABLED(CONFIG_X86_64)", "!var(tdp_enabled) && config(X86_64)"),
    ("cpu_feature_enabled(X86_FEATURE_LFENCE_RDTSC)", "has(LFENCE_RDTSC)"),
    ("kvm_pmu_cap.version != 2", 'c("kvm_pmu_cap.version != 2")'),
])
def test_c_conditions_translate(c, dsl):
    node = cond.parse_c(c)
    assert str(node) == dsl
    assert cond.parse(str(node)) == node  # the policy-file spelling reads back to the same tree


CPUFEATURES_OLD = '''
#define NCAPINTS			2	   /* N 32-bit words worth of info */
 * in /proc/cpuinfo instead of the macro name.  If the string is "",
#define X86_FEATURE_FPU			( 0*32+ 0) /* Onboard FPU */
#define X86_FEATURE_K8			( 1*32+ 4) /* "" Opteron, Athlon64 */
#define X86_FEATURE_XMM3		( 0*32+ 9) /* "pni" SSE-3 */
#define X86_BUG(x)			(NCAPINTS*32 + (x))
#define X86_BUG_F00F			X86_BUG(0) /* Intel F00F */
#define X86_BUG_TSA			X86_BUG( 1*32+ 9) /* "tsa" TSA */
'''


def test_cpufeatures_names_by_era():
    words = ["CPUID_1_EDX", "CPUID_LNX_1"]
    ncap, feats, bugs, rule = parse_cpufeatures(CPUFEATURES_OLD, words)
    assert ncap == 2 and rule == "unless-empty-quotes"
    assert feats["FPU"].cpuinfo == "fpu" and feats["K8"].cpuinfo is None and feats["XMM3"].cpuinfo == "pni"
    assert feats["K8"].word == "CPUID_LNX_1" and feats["K8"].bit == 4
    assert bugs["F00F"].cpuinfo == "f00f" and bugs["TSA"].bit == 41
    new = CPUFEATURES_OLD.replace('If the string is "",', "")
    _, feats, bugs, rule = parse_cpufeatures(new, words)
    assert rule == "quoted-only" == cpuinfo_rule(new)
    assert feats["FPU"].cpuinfo is None and feats["XMM3"].cpuinfo == "pni" and bugs["F00F"].cpuinfo is None


def test_words_reverse_cpuid_scattered():
    assert parse_kernel_words("enum cpuid_leafs\n{\n\tCPUID_1_EDX\t\t= 0,\n\tCPUID_LNX_1,\n\tNR_CPUID_WORDS,\n};") == [
        "CPUID_1_EDX", "CPUID_LNX_1"]
    rev = parse_reverse_cpuid("[CPUID_7_ECX]         = {         7, 0, CPUID_ECX},\n"
                              "[CPUID_8000_0021_ECX] = {0x80000021, 0, CPUID_ECX},")
    assert rev == {"CPUID_7_ECX": (7, 0, "ecx"), "CPUID_8000_0021_ECX": (0x80000021, 0, "ecx")}
    sc = parse_scattered("static const struct cpuid_bit cpuid_bits[] = {\n"
                         "\t{ X86_FEATURE_TSA_SQ_NO,\t\tCPUID_ECX,  1, 0x80000021, 0 },\n};")
    assert (sc[0].feature, sc[0].leaf, sc[0].reg, sc[0].bit) == ("TSA_SQ_NO", 0x80000021, "ecx", 1)


def test_leaf_helpers():
    body = "switch (function) {\ncase 0:\n entry->eax = min(entry->eax, 0x24U);\n break;\ncase 4:\ncase 0x8000001d:\n x;\n}"
    cases = _cases(body)
    assert "min(entry->eax, 0x24U)" in cases["0"] and cases["4"] == cases["0x8000001d"]
    assert _mask("(XFEATURE_MASK_FP | XFEATURE_MASK_SSE | XFEATURE_MASK_AVX512 | XFEATURE_MASK_XTILE)") == 0x600E3
