"""Per-leaf parameters of ``__do_cpuid_func()`` read from a kernel tree.

The rules themselves are written once in :mod:`.leaves`; what changes between
kernel versions is numbers and presence: the max basic/extended leaf, subleaf
limits, which ``case`` labels exist, which caps words override which register,
the 0x80000021 raise, GuestPhysAddrSize, KVM_SUPPORTED_XCR0/XSS, the KVM PV
feature bits.  Each is located by a regular expression on the function body;
a missing pattern is an import error (a new kernel needs a look), not a guess.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .importer_c import find_function, preprocess, strip_comments
from .model import PolicyError, Word

#: XSAVE feature numbers (Intel SDM vol. 1 ch. 13 / asm/fpu/types.h enum xfeature)
XFEATURE_BITS = {
    "FP": 0, "SSE": 1, "YMM": 2, "BNDREGS": 3, "BNDCSR": 4, "OPMASK": 5, "ZMM_Hi256": 6, "Hi16_ZMM": 7, "PT": 8,
    "PKRU": 9, "PASID": 10, "CET_USER": 11, "CET_KERNEL": 12, "LBR": 15, "XTILE_CFG": 17, "XTILE_DATA": 18, "APX": 19,
}
XFEATURE_GROUPS = {"AVX512": ("OPMASK", "ZMM_Hi256", "Hi16_ZMM"), "XTILE": ("XTILE_CFG", "XTILE_DATA"),
                   "CET_ALL": ("CET_USER", "CET_KERNEL")}


class LeafImportError(PolicyError):
    pass


def _int(t: str) -> int:
    return int(t.strip().rstrip("uUlL"), 0)


def _cases(body: str) -> dict[str, str]:
    """case label -> text up to the next case label (fall-through labels share text)."""
    labels = list(re.finditer(r"\bcase\s+([\w]+)\s*:", body))
    out: dict[str, str] = {}
    for i, m in enumerate(labels):
        end = labels[i + 1].start() if i + 1 < len(labels) else len(body)
        out[m.group(1).lower() if m.group(1).startswith("0") else m.group(1)] = body[m.end():end]
    # fall-through: an empty case shares the next non-empty one
    keys = list(out)
    for i, k in enumerate(keys):
        if not out[k].strip():
            for k2 in keys[i + 1:]:
                if out[k2].strip():
                    out[k] = out[k2]
                    break
    return out


def _need(pattern: str, text: str, what: str, flags: int = 0) -> re.Match[str]:
    m = re.search(pattern, text, flags)
    if not m:
        raise LeafImportError(f"cpuid.c: __do_cpuid_func: cannot find {what}", hint="new kernel layout: update "
                              "rig/policy/importer_leaves.py")
    return m


def _mask(expr: str) -> int:
    v = 0
    for name in re.findall(r"XFEATURE_MASK_(\w+)", expr):
        for part in XFEATURE_GROUPS.get(name, (name,)):
            if part not in XFEATURE_BITS:
                raise LeafImportError(f"x86.c: unknown XSAVE feature XFEATURE_MASK_{name}")
            v |= 1 << XFEATURE_BITS[part]
    return v


def _define(text: str, name: str) -> str | None:
    m = re.search(rf"#define\s+{name}\b\s*(\(.*?\))\s*\n(?!\s*\|)", text, re.S)
    if m:
        return m.group(1)
    m = re.search(rf"#define\s+{name}\b\s*(.*?)(?<!\\)\n", text, re.S)
    return m.group(1) if m else None


def leaf_parameters(root: Path, cpuid_c: str, words: dict[str, Word]) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
    clean = preprocess(strip_comments(cpuid_c))
    fn = find_function(cpuid_c, "__do_cpuid_func", clean)
    if fn is None:
        raise LeafImportError("cpuid.c: no __do_cpuid_func()")
    body = fn.body
    cases = _cases(body)
    L: dict[str, Any] = {"src": f"arch/x86/kvm/cpuid.c:{fn.line}"}
    L["cases"] = sorted((f"0x{int(k, 0):x}" for k in cases if k.startswith("0x") or k.isdigit()), key=lambda k: int(k, 16))
    L["max_basic"] = _int(_need(r"min\(entry->eax,\s*(0x[0-9a-fA-F]+)U?\)", cases["0"], "leaf 0 max").group(1))
    # 5.15+: max_idx = entry->eax = min(entry->eax, 2u); 5.10: entry->eax = min(entry->eax, 1u)
    L["leaf7_max_subleaf"] = _int(_need(r"(?:max_idx\s*=\s*)?entry->eax\s*=\s*min\(entry->eax,\s*(\d+)u?\)", cases["7"],
                                        "leaf 7 max subleaf").group(1))
    ext = cases["0x80000000"]
    L["max_extended"] = _int(_need(r"min\(entry->eax,\s*(0x[0-9a-fA-F]+)\)", ext, "0x80000000 max").group(1))
    m = re.search(r"entry->eax\s*>=\s*(0x[0-9a-fA-F]+).*?max\(entry->eax,\s*(0x[0-9a-fA-F]+)\)", ext, re.S)
    if m:
        L["ext_raise_min"] = _int(m.group(1))
        L["ext_raise_to"] = _int(m.group(2))
    if "0x1e" in cases:
        m = re.search(r"entry->eax\s*=\s*min\(entry->eax,\s*(\d+)u?\)", cases["0x1e"])
        if m:
            L["leaf1e_max_subleaf"] = _int(m.group(1))
    if "0x24" in cases:
        m = re.search(r"entry->eax\s*=\s*min\(entry->eax,\s*(\d+)u?\)", cases["0x24"])
        if m:
            L["leaf24_max_subleaf"] = _int(m.group(1))
        m = re.search(r"min_t\(u8,\s*entry->ebx\s*&\s*0xff,\s*(\d+)\)", cases["0x24"])
        if m:
            L["avx10_version_max"] = _int(m.group(1))
    e7 = cases.get("0x80000007", "")
    L["ext7_edx"] = "override_and_power" if "CPUID_8000_0007_EDX" in e7 else "bit8"
    e8 = cases.get("0x80000008", "")
    # before 5.18: EAX[7:0] = the host's GuestPhysAddrSize (EAX[23:16]) when set and TDP is on, else MAXPHYADDR
    legacy = re.search(r"if\s*\(\s*!g_phys_as\s*\|\|\s*!tdp_enabled\s*\)\s*g_phys_as\s*=\s*phys_as", e8) and \
        re.search(r"entry->eax\s*=\s*g_phys_as\s*\|\s*\(virt_as\s*<<\s*8\)", e8)
    L["g_phys_as"] = "legacy" if legacy else "g_phys_as" in e8
    L["ext21_ebx"] = "eraps" if "ERAPS" in cases.get("0x80000021", "") else "zero"
    # which caps words override registers, leaf by leaf
    L["override_words"] = sorted({w for w in re.findall(r"cpuid_entry_override\(entry,\s*(CPUID_\w+)\)", body)},
                                 key=lambda n: words[n].index if n in words else 999)
    for w in L["override_words"]:
        if w not in words:
            raise LeafImportError(f"cpuid.c: cpuid_entry_override of unknown word {w}")
    # XSAVE: KVM_SUPPORTED_XCR0 / XSS, and the XTILE permission filter
    x86_c = (root / "arch/x86/kvm/x86.c").read_text(errors="replace")
    x86_h = (root / "arch/x86/kvm/x86.h").read_text(errors="replace") if (root / "arch/x86/kvm/x86.h").exists() else ""
    xcr0 = _define(strip_comments(x86_c), "KVM_SUPPORTED_XCR0")
    if xcr0 is None:
        raise LeafImportError("x86.c: no KVM_SUPPORTED_XCR0")
    L["xcr0_mask"] = f"0x{_mask(xcr0):x}"
    xss = _define(strip_comments(x86_c), "KVM_SUPPORTED_XSS")
    L["xss_mask"] = f"0x{_mask(xss):x}" if xss else "0x0"
    filt = strip_comments(x86_h + x86_c)
    m = re.search(r"kvm_get_filtered_xcr0\(void\)\s*\{(.*?)\n\}", filt, re.S)
    L["xtile_filter"] = "cfg_and_data" if m and "XTILE_CFG" in m.group(1) else "data_only"
    # the host kernel's XCR0: CPUID 0xD.0 & XFEATURE_MASK_USER_SUPPORTED, minus features whose CPUID flag is absent
    xh = strip_comments((root / "arch/x86/include/asm/fpu/xstate.h").read_text(errors="replace"))
    us = _define(xh, "XFEATURE_MASK_USER_SUPPORTED")
    if us is None:
        raise LeafImportError("fpu/xstate.h: no XFEATURE_MASK_USER_SUPPORTED")
    L["kernel_xfeatures"] = f"0x{_mask(us):x}"
    xc = strip_comments((root / "arch/x86/kernel/fpu/xstate.c").read_text(errors="replace"))
    m = re.search(r"xsave_cpuid_features\[\]\s*(?:__\w+\s*)*=\s*\{(.*?)\};", xc, re.S)
    if not m:
        raise LeafImportError("fpu/xstate.c: no xsave_cpuid_features[]")
    needs = {}
    for xf, feat in re.findall(r"\[XFEATURE_(\w+)\]\s*=\s*X86_FEATURE_(\w+)", m.group(1)):
        key = {"PT_UNIMPLEMENTED_SO_FAR": "PT"}.get(xf, xf)
        if key not in XFEATURE_BITS:
            raise LeafImportError(f"fpu/xstate.c: unknown XFEATURE_{xf}")
        needs[str(XFEATURE_BITS[key])] = feat
    if not needs:  # before 5.16: a positional array, index = XSAVE feature number
        for i, feat in enumerate(re.findall(r"X86_FEATURE_(\w+)", m.group(1))):
            needs[str(i)] = feat
    L["xfeature_needs"] = needs
    # vendor hardware setup trimming supported XCR0 (MPX)
    from . import cond as _cond
    clears = {}
    for vendor, rel in (("svm", "arch/x86/kvm/svm/svm.c"), ("vmx", "arch/x86/kvm/vmx/vmx.c")):
        vt = preprocess(strip_comments((root / rel).read_text(errors="replace")))
        for m in re.finditer(r"(?:if\s*\(([^;{}]*?)\)\s*)?(?:kvm_caps\.)?supported_xcr0\s*&=\s*~\(([^;]*?)\);", vt, re.S):
            line = vt.count("\n", 0, m.start()) + 1
            clears[vendor] = {"mask": f"0x{_mask(m.group(2)):x}", "if": str(_cond.parse_c(m.group(1))) if m.group(1) else None,
                              "src": f"{rel}:{line}"}
    L["xcr0_vendor_clear"] = clears
    # PV features (0x40000001.EAX)
    kf = cases.get("KVM_CPUID_FEATURES", "")
    para = (root / "arch/x86/include/uapi/asm/kvm_para.h").read_text(errors="replace")
    bits = {n: int(b) for n, b in re.findall(r"#define\s+KVM_FEATURE_(\w+)\s+(\d+)", para)}
    kvm_features: dict[str, int] = {}
    kvm_cond: dict[str, str] = {}
    uncond, _, rest = kf.partition(";")
    for n in re.findall(r"1\s*<<\s*KVM_FEATURE_(\w+)", uncond):
        kvm_features[n] = bits[n]
    for c, n in re.findall(r"if\s*\((.*?)\)\s*entry->eax\s*\|=\s*\(1\s*<<\s*KVM_FEATURE_(\w+)\)", rest, re.S):
        kvm_features[n] = bits[n]
        kvm_cond[n] = " ".join(c.split())
    if not kvm_features:
        raise LeafImportError("cpuid.c: no KVM_CPUID_FEATURES bits found")
    return L, kvm_features, kvm_cond
