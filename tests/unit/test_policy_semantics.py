"""Macro semantics of both eras, on tiny hand-made policies.

Expected values follow the macro definitions in arch/x86/kvm/cpuid.c (6.14+
kvm_cpu_cap_init(): caps = features; kernel words &= kernel caps; |= passthrough;
&= raw | synthesized; |= emulated -- and the pre-6.14 kvm_cpu_cap_mask()/
kvm_cpu_cap_init_kvm_defined()), not the evaluator's output.
"""

from __future__ import annotations

import pytest

from rig.cpuid.table import CpuidTable, Regs
from rig.policy.evaluate import evaluate_caps
from rig.policy.kernelcaps import KernelCaps
from rig.policy.model import PolicyError, policy_from_json

# word A: kernel word at 0x1.ECX; word K: KVM-only word at 0x80000021.ECX (like CPUID_8000_0021_ECX)
FEATURES = {
    "KF": {"word": "A", "bit": 0}, "KE": {"word": "A", "bit": 1}, "KP": {"word": "A", "bit": 2},
    "KS": {"word": "A", "bit": 3}, "KV": {"word": "A", "bit": 4}, "KSY": {"word": "A", "bit": 5},
    "K64": {"word": "A", "bit": 6},
    "OF": {"word": "K", "bit": 0, "kernel": False},
    "TSA": {"word": "LNX", "bit": 11, "kvm_word": "K", "kvm_bit": 1},
    "E": {"word": "K", "bit": 2, "kernel": False},
}


def policy(era: str, steps: list[dict], synthesized: str | None = None, vendors: dict | None = None):
    return policy_from_json({
        "format": "rig-kvm-policy/1", "version": "9.9", "era": era, "synthesized": synthesized,
        "words": {"A": {"index": 0, "kernel": True, "leaf": "0x1", "subleaf": 0, "reg": "ecx"},
                  "LNX": {"index": 1, "kernel": True, "leaf": None, "subleaf": 0, "reg": None},
                  "K": {"index": 2, "kernel": False, "leaf": "0x80000021", "subleaf": 0, "reg": "ecx"}},
        "features": FEATURES, "common": steps, "common_function": "kvm_set_cpu_caps",
        "vendors": vendors or {}, "leaves": {},
    }, "test policy")


def raw(a_ecx: int = 0, k_ecx: int = 0, max_ext: int = 0x80000021) -> CpuidTable:
    t = CpuidTable()
    t.set(0, 0, Regs(1, 0x68747541, 0x444D4163, 0x69746E65))  # AuthenticAMD
    t.set(1, 0, Regs(0, 0, a_ecx, 0))
    t.set(0x80000000, 0, Regs(max_ext, 0, 0, 0))
    if max_ext >= 0x80000021:
        t.set(0x80000021, 0, Regs(0, 0, k_ecx, 0))
    return t


def caps(p, r, kernel: set[str], params=None, vendor=None, out_of_range="zero") -> dict[str, int]:
    return evaluate_caps(p, r, KernelCaps(features=set(kernel)), params or {}, vendor, out_of_range).caps


INIT_A = {"op": "init", "word": "A", "src": "t:1", "features": [
    ["F", "KF"], ["EMULATED_F", "KE"], ["PASSTHROUGH_F", "KP"], ["SCATTERED_F", "KS"], ["VENDOR_F", "KV"],
    ["SYNTHESIZED_F", "KSY"], ["X86_64_F", "K64"]]}
INIT_K = {"op": "init", "word": "K", "src": "t:2", "features": [["F", "OF"], ["SYNTHESIZED_F", "TSA"], ["EMULATED_F", "E"]]}


def test_cap_init_kernel_word_and_with_kernel_caps_then_raw():
    p = policy("cap_init", [INIT_A], "fixed")
    all_raw = raw(a_ecx=0x7F)
    # kernel has nothing: only passthrough (needs raw) and emulated survive
    assert caps(p, all_raw, set())["A"] == 0b0000110
    # kernel has F, scattered, synthesized, 64-bit: all set (raw has them)
    assert caps(p, all_raw, {"KF", "KS", "KSY", "K64", "KV"})["A"] == 0b1101111
    # raw lacks everything: emulated only (synthesized survives the raw AND only with the kernel flag)
    assert caps(p, raw(a_ecx=0), {"KF", "KS", "KSY", "K64"})["A"] == 0b0100010


def test_cap_init_kvm_only_word_ignores_kernel_caps_for_f():
    p = policy("cap_init", [INIT_K], "fixed")
    assert caps(p, raw(k_ecx=0b001), set())["K"] == 0b101  # F needs raw only; emulated always
    assert caps(p, raw(k_ecx=0), set())["K"] == 0b100


def test_synthesized_fixed_versus_prefix_in_kvm_only_word():
    fixed = policy("cap_init", [INIT_K], "fixed")
    prefix = policy("cap_init", [INIT_K], "prefix")
    r = raw(k_ecx=0)  # hardware does not enumerate TSA_*_NO
    # kernel lacks the flag (Zen3): fixed -> 0, pre-fix -> 1 (the TSA bug)
    assert caps(fixed, r, set())["K"] >> 1 & 1 == 0
    assert caps(prefix, r, set())["K"] >> 1 & 1 == 1
    # kernel synthesized it (Zen2): both advertise
    assert caps(fixed, r, {"TSA"})["K"] >> 1 & 1 == 1
    assert caps(prefix, r, {"TSA"})["K"] >> 1 & 1 == 1


def test_synthesized_prefix_in_kernel_word_is_still_anded_with_kernel_caps():
    p = policy("cap_init", [INIT_A], "prefix")
    assert caps(p, raw(a_ecx=0), set())["A"] >> 5 & 1 == 0
    assert caps(p, raw(a_ecx=0), {"KSY"})["A"] >> 5 & 1 == 1


def test_raw_beyond_max_leaf_is_zero_since_6_14_and_unchecked_before():
    init = policy("cap_init", [{"op": "init", "word": "K", "src": "t", "features": [["F", "OF"]]}])
    mask = policy("cap_mask", [{"op": "init_kvm_defined", "word": "K", "src": "t", "features": [["F", "OF"]]}])
    r = raw(a_ecx=0x1, max_ext=0x80000008)  # 0x80000021 out of range; max basic leaf 1 has ECX bit 0 set
    assert caps(init, r, set(), out_of_range="intel")["K"] == 0
    assert caps(mask, r, set(), out_of_range="zero")["K"] == 0
    # Intel/QEMU-TCG semantics: the highest basic leaf answers (here leaf 1, ECX = 1)
    assert caps(mask, r, set(), out_of_range="intel")["K"] == 1


def test_cap_mask_era_masks_kernel_caps_and_raw():
    steps = [{"op": "mask", "word": "A", "src": "t", "features": [["F", "KF"], ["SF", "KS"], ["F", "KE"]]},
             {"op": "init_kvm_defined", "word": "K", "src": "t", "features": [["F", "OF"]]}]
    p = policy("cap_mask", steps)
    r = raw(a_ecx=0x7F, k_ecx=0x1)
    c = caps(p, r, {"KF", "KS", "KP"})
    assert c["A"] == 0b1001  # KF, KS; KE not in kernel caps; KP not in the mask
    assert caps(p, r, {"KF"})["A"] == 0b0001  # SF() needs the kernel flag
    assert c["K"] == 0b1  # KVM-defined: mask & raw, kernel caps irrelevant


def test_fixups_conditions_and_check_and_set():
    steps = [INIT_K,
             {"op": "clear", "feature": "OF", "if": "!var(nested)", "src": "t:3"},
             {"op": "check_and_set", "feature": "TSA", "src": "t:4"},
             {"op": "set", "feature": "OF", "if": "has(KF) && !bug(X)", "src": "t:5"}]
    p = policy("cap_init", steps, "fixed", vendors={"svm": [{"op": "call", "function": "kvm_set_cpu_caps", "src": "s"}]})
    r = raw(k_ecx=0b001)
    assert caps(p, r, set(), vendor="svm")["K"] == 0b100  # nested unknown variable -> false -> OF cleared
    assert caps(p, r, {"TSA"}, vendor="svm")["K"] == 0b110
    assert caps(p, r, {"KF"}, vendor="svm")["K"] == 0b101


def test_trace_records_each_rule_with_its_source():
    p = policy("cap_init", [INIT_K], "prefix")
    res = evaluate_caps(p, raw(), KernelCaps(), {}, None)
    steps = res.trace[("K", 1)]
    assert steps[0].layer == "macro" and "pre-fix SYNTHESIZED_F" in steps[0].text
    assert steps[0].src.startswith("t:2") and steps[0].value == 1


def test_malformed_policy_errors_are_clear():
    with pytest.raises(PolicyError, match="not a KVM policy"):
        policy_from_json({"format": "x"}, "f.json")
    with pytest.raises(PolicyError, match="unknown step op"):
        policy("cap_init", [{"op": "frobnicate", "src": "t"}])
    with pytest.raises(PolicyError, match="unknown macro"):
        policy("cap_init", [{"op": "init", "word": "A", "src": "t", "features": [["G", "KF"]]}])
