"""rig.qemu.srcfacts: the source-fact extractor on a small C snippet shaped like target/i386/cpu.c."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.qemu.srcfacts import MacroEval, SourceFactsError, collect_defines, extract, to_toml

CPU_H = """
#define CPUID_FP87 (1U << 0)
#define CPUID_VME  (1U << 1)
#define CPUID_EXT_SSE3 (1U << 0)
#define CPUID_EXT_PCID (1U << 17)
#define CPUID_EXT_X2APIC (1U << 21)
#define CPUID_EXT_XSAVE (1U << 26)
#define CPUID_EXT2_FPU (1U << 0)
#define CPUID_EXT2_AMD_ALIASES (CPUID_EXT2_FPU)
#define XSTATE_FP_MASK (1ULL << 0)
#define XSTATE_SSE_MASK (1ULL << 1)
#define CPUID_XSTATE_XCR0_MASK (XSTATE_FP_MASK | XSTATE_SSE_MASK)
#define CPUID_XSTATE_XSS_MASK 0
"""

CPU_C = """
#if defined CONFIG_USER_ONLY
#define CPUID_EXT_KERNEL_FEATURES (CPUID_EXT_PCID)
#else
#define CPUID_EXT_KERNEL_FEATURES 0
#endif
#ifdef TARGET_X86_64
#define TCG_EXT_FEATURES (CPUID_EXT_SSE3 | CPUID_EXT_X2APIC | \\
          CPUID_EXT_KERNEL_FEATURES) /* comment */
#else
#define TCG_EXT_FEATURES 0
#endif
FeatureWordInfo feature_word_info[FEATURE_WORDS] = {
    [FEAT_1_ECX] = {
        .type = CPUID_FEATURE_WORD,
        .feat_names = {
            "pni" /* Intel,AMD sse3 */, NULL, [17] = "pcid", NULL, NULL, NULL, "x2apic",
        },
        .cpuid = { .eax = 1, .reg = R_ECX, },
        .tcg_features = TCG_EXT_FEATURES,
        .no_autoenable_flags = CPUID_EXT_PCID,
    },
    [FEAT_VMX_BASIC] = {
        .type = MSR_FEATURE_WORD,
    },
};
static FeatureDep feature_dependencies[] = {
    { .from = { FEAT_1_ECX, CPUID_EXT_XSAVE }, .to = { FEAT_1_ECX, CPUID_EXT_X2APIC }, },
    { .from = { FEAT_1_ECX, CPUID_EXT_XSAVE }, .to = { FEAT_VMX_BASIC, ~0ull }, },
};
ExtSaveArea x86_ext_save_areas[XSAVE_STATE_AREA_COUNT] = {
    [0] = { .feature = FEAT_1_ECX, .bits = CPUID_EXT_XSAVE, .size = 512 },
};
static const X86CPUDefinition builtin_x86_defs[] = {
    {
        .name = "toy",
        .level = 0xd,
        .xlevel = 0x80000008,
        .features[FEAT_1_EDX] = CPUID_FP87 | CPUID_VME,
    },
};
static void x86_cpu_initfn(Object *obj)
{
    object_property_add_alias(obj, "sse3", obj, "pni");
}
"""


def test_extracts_words_masks_deps_models(tmp_path: Path) -> None:
    (tmp_path / "target/i386").mkdir(parents=True)
    (tmp_path / "target/i386/cpu.h").write_text(CPU_H)
    (tmp_path / "target/i386/cpu.c").write_text(CPU_C)
    f = extract(tmp_path, "9.9")
    assert [w.name for w in f.words] == ["FEAT_1_ECX"]  # MSR words are not CPUID feature words
    w = f.words[0]
    assert (w.leaf, w.subleaf, w.reg) == (1, None, "ecx")
    assert w.tcg == (1 << 0) | (1 << 21)  # the user-only PCID is not in a system emulator's mask
    assert w.no_autoenable == 1 << 17
    assert (w.names[0], w.names[17], w.names[21], w.names[18]) == ("pni", "pcid", "x2apic", None)
    assert f.deps == [("FEAT_1_ECX", 1 << 26, "FEAT_1_ECX", 1 << 21)]
    assert f.xsave == [(0, "FEAT_1_ECX", 1 << 26)]
    assert f.models == {"toy": (0xD, 0x80000008, True)}
    assert f.aliases == {"sse3": "pni"} and f.xcr0_mask == 3 and f.amd_aliases == 1
    text = to_toml(f)
    assert 'name = "FEAT_1_ECX"' in text and "tcg = 0x00200001" in text


def test_macro_eval_errors_name_the_macro() -> None:
    ev = MacroEval(collect_defines("#define A (1U << 3)\n#define B (A | C)\n"))
    assert ev.eval("A | 1") == 9
    assert ev.eval("~0U") & 0xFFFFFFFF == 0xFFFFFFFF
    with pytest.raises(SourceFactsError, match="unknown macro C"):
        ev.eval("B")
