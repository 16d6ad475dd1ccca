"""The QEMU layer model's rules, on synthetic model definitions (no QEMU).

Expected values come from QEMU's source (target/i386/cpu.c of 7.2 and 10.0):
the precedence comment above ``plus_features`` ("-x2apic,x2apic=on will result
in x2apic disabled"), ``feature_dependencies[]``, ``x86_cpu_adjust_feat_level``,
``kvm_default_props``/``tcg_default_props``, ``kvm_arch_get_supported_cpuid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rig.cpuid.table import CpuidTable, Regs
from rig.qemu.cpuline import CpuLine, CpuLineError, effective_settings
from rig.qemu.facts import QemuFactsError, version_data
from rig.qemu.model import QemuModelError, UnknownCpuModel, predict_guest, resolve_model
from rig.qemu.qmp import CpuDefinition, ModelExpansion


@dataclass
class FakeFacts:
    """What rig.qemu.binaries.BinaryFacts provides, for hand-made models."""

    version: tuple[int, int, int] = (7, 2, 22)
    accel: str = "tcg"
    definitions: list[CpuDefinition] = field(default_factory=list)
    static: dict[str, ModelExpansion] = field(default_factory=dict)


BASE = ["fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge", "mca", "cmov", "pat",
        "pse36", "mmx", "fxsr", "sse", "sse2", "syscall", "nx", "lm", "pni", "hypervisor"]


def facts(version: tuple[int, int, int] = (7, 2, 22), **models: dict) -> FakeFacts:
    f = FakeFacts(version)
    for name, spec in models.items():
        name = name.replace("_", "-")
        props = {n: True for n in BASE + spec.get("on", [])}
        props.update({"vendor": spec.get("vendor", "GenuineIntel"), "min-level": spec.get("level", 0xD),
                      "min-xlevel": spec.get("xlevel", 0x80000008)})
        vprops = dict(props)
        for v in range(1, spec.get("versions", 1) + 1):  # version props are cumulative
            vname = f"{name}-v{v}"
            f.definitions.append(CpuDefinition(vname))
            vprops.update({n: True for n in spec.get(f"v{v}_on", [])})
            vprops.update({n: False for n in spec.get(f"v{v}_off", [])})
            f.static[vname] = ModelExpansion("base", dict(vprops))
        f.definitions.append(CpuDefinition(name, alias_of=f"{name}-v1"))
        f.static[name] = f.static[f"{name}-v1"]
    return f


def bit(t: CpuidTable, leaf: int, sub: int, reg: str, b: int) -> int:
    return t.value(leaf, sub, reg) >> b & 1


X2APIC = (1, 0, "ecx", 21)
AVX = (1, 0, "ecx", 28)
XSAVE = (1, 0, "ecx", 26)


# -- -cpu parsing and precedence ---------------------------------------------

def test_cpu_line_parse_and_feat2prop() -> None:
    line = CpuLine.parse("Skylake-Server,+avx,-x2apic,sse4_1=off,pmu")
    assert line.model == "Skylake-Server"
    assert [str(f) for f in line.flags] == ["+avx", "-x2apic", "sse4-1=off", "pmu=on"]
    for bad in ("", ",+avx", "qemu64,,+avx", "qemu64,+", "qemu64,+a=b", "qemu64,=on"):
        with pytest.raises(CpuLineError):
            CpuLine.parse(bad)


def test_plus_minus_beat_properties_whatever_the_order() -> None:
    """cpu.c: "-x2apic,x2apic=on" will result in x2apic disabled (+/-feat applied after feat=on|off)."""
    f = facts(m={"on": ["x2apic"]})
    for line, want in (("m,-x2apic,x2apic=on", 0), ("m,x2apic=on,-x2apic", 0), ("m,x2apic=off,+x2apic", 1),
                       ("m,+x2apic,-x2apic", 0), ("m,-x2apic,+x2apic", 0), ("m,x2apic=off,x2apic=on", 1),
                       ("m,x2apic=on,x2apic=off", 0), ("m,x2apic", 1)):
        assert bit(predict_guest(f, line, "tcg", "q35").requested, *X2APIC) == want, line
    _, plus, minus, warnings = effective_settings(CpuLine.parse("m,-x2apic,x2apic=on").flags)
    assert minus == ["x2apic"] and warnings and "ambiguous" in warnings[0]
    # QEMU warns only when +/-f came first
    assert effective_settings(CpuLine.parse("m,x2apic=on,-x2apic").flags)[3] == []


def test_aliases_resolve_to_the_same_bit() -> None:
    f = facts(m={})
    for line in ("m,+sse4_1", "m,+sse4.1", "m,sse4_1=on", "m,sse4-1=on"):
        assert bit(predict_guest(f, line, "tcg", "q35").table, 1, 0, "ecx", 19) == 1, line
    assert bit(predict_guest(f, "m,-i64", "tcg", "q35").table, 0x80000001, 0, "edx", 29) == 0  # i64 = lm
    assert bit(predict_guest(f, "m,xd=off", "tcg", "q35").table, 0x80000001, 0, "edx", 20) == 0  # xd = nx


# -- machine types and model versions -----------------------------------------

def test_machine_resolves_unversioned_models() -> None:
    """microvm: x86_cpus_init(CPU_VERSION_LATEST); pc/q35: default_cpu_version 1; pc-*-4.0: LEGACY."""
    f = facts(m={"versions": 3, "on": ["clflushopt"], "v2_off": ["clflushopt"]})
    assert resolve_model(f, "m", "latest") == "m-v3"
    assert resolve_model(f, "m", "v1") == "m-v1"
    assert resolve_model(f, "m-v2", "v1") == "m-v2"
    d = version_data("7.2")
    assert [d.machine_version(m) for m in ("microvm", "q35", "pc", "none", "pc-q35-7.2", "pc-i440fx-4.1",
                                           "pc-q35-4.0", "pc-i440fx-2.12", "microvm,x-option-roms=off")] == \
        ["latest", "v1", "v1", "v1", "v1", "v1", "legacy", "legacy", "latest"]
    with pytest.raises(QemuFactsError, match="not known"):
        d.machine_version("virt")
    # the Skylake-Server case of design.md §6: clflushopt (7.0.EBX[23]) off in the latest version only
    assert bit(predict_guest(f, "m", "tcg", "microvm").table, 7, 0, "ebx", 23) == 0
    assert bit(predict_guest(f, "m", "tcg", "q35").table, 7, 0, "ebx", 23) == 1


# -- TCG masks (from the TCG_* macros of each version) ---------------------------

def test_tcg_masks_follow_the_source_macros() -> None:
    d72, d100 = version_data("7.2"), version_data("10.0")
    tcg_ext_72 = ["pni", "pclmulqdq", "monitor", "ssse3", "fma", "cx16", "sse4.1", "sse4.2", "movbe", "popcnt",
                  "aes", "xsave", "avx", "f16c", "rdrand", "hypervisor"]
    assert d72.words["FEAT_1_ECX"].tcg == d72.mask_of("FEAT_1_ECX", tcg_ext_72) == 0xF6D8320B
    # 10.0 adds x2apic; pcid and tsc-deadline are user-mode-only (CPUID_EXT_KERNEL_FEATURES)
    assert d100.words["FEAT_1_ECX"].tcg == d100.mask_of("FEAT_1_ECX", [*tcg_ext_72, "x2apic"])
    # TCG_FEATURES lacks vme (and tcg_default_props turns it off)
    assert not d72.words["FEAT_1_EDX"].tcg & d72.mask_of("FEAT_1_EDX", ["vme"])
    # 7.2 TCG: no rdseed, no sha-ni; 10.0 TCG: both
    for name, in72, in100 in (("rdseed", 0, 1), ("sha-ni", 0, 1), ("avx2", 1, 1), ("hle", 0, 0)):
        assert bool(d72.words["FEAT_7_0_EBX"].tcg & d72.mask_of("FEAT_7_0_EBX", [name])) == bool(in72), name
        assert bool(d100.words["FEAT_7_0_EBX"].tcg & d100.mask_of("FEAT_7_0_EBX", [name])) == bool(in100), name


def test_tcg_filtering_reports_filtered_features() -> None:
    f = facts(m={"on": ["x2apic", "rdseed", "avx2"]})
    p = predict_guest(f, "m", "tcg", "q35")
    assert bit(p.table, *X2APIC) == 0 and bit(p.filtered, *X2APIC) == 1  # 7.2 TCG has no x2apic
    assert bit(p.filtered, 7, 0, "ebx", 18) == 1  # rdseed
    assert bit(p.table, 7, 0, "ebx", 5) == 1      # avx2 is TCG-supported in 7.2
    assert {"x2apic", "rdseed"} <= set(p.filtered_names())
    p10 = predict_guest(facts((10, 0, 2), m={"on": ["x2apic", "rdseed"]}), "m", "tcg", "q35")
    assert bit(p10.table, *X2APIC) == 1 and bit(p10.table, 7, 0, "ebx", 18) == 1


# -- dependencies ------------------------------------------------------------------

def test_dependencies_remove_and_filter_only_user_requested() -> None:
    """feature_dependencies[]: svm -> FEAT_SVM; removed silently unless the user asked for the dependent."""
    d = version_data("7.2")
    assert any(x.src == "FEAT_8000_0001_ECX" and x.dst == "FEAT_SVM" for x in d.dependencies)
    f = facts(m={"on": ["svm", "npt"], "vendor": "AuthenticAMD"})
    assert bit(predict_guest(f, "m", "tcg", "q35").table, 0x8000000A, 0, "edx", 0) == 1
    p = predict_guest(f, "m,-svm", "tcg", "q35")
    assert bit(p.table, 0x8000000A, 0, "edx", 0) == 0 and bit(p.filtered, 0x8000000A, 0, "edx", 0) == 0
    p = predict_guest(f, "m,-svm,+npt", "tcg", "q35")
    assert bit(p.table, 0x8000000A, 0, "edx", 0) == 0 and bit(p.filtered, 0x8000000A, 0, "edx", 0) == 1


# -- XSAVE components, FEAT_KVM, AMD aliases ------------------------------------------

def test_xsave_component_words_follow_features() -> None:
    f = facts(m={"on": ["xsave", "avx", "pku"]})
    p = predict_guest(f, "m", "tcg", "q35")
    assert p.table.value(0xD, 0, "eax") == 0b10_0000_0111  # x87, SSE, YMM, PKRU (bit 9)
    assert predict_guest(f, "m,-avx", "tcg", "q35").table.value(0xD, 0, "eax") == 0b10_0000_0011
    assert predict_guest(f, "m,-xsave", "tcg", "q35").table.value(0xD, 0, "eax") == 0
    # 10.0 drops components the accelerator cannot save before requesting them (no filtered bits)
    f10 = facts((10, 0, 2), m={"on": ["xsave", "avx512f"]})
    p10 = predict_guest(f10, "m", "tcg", "q35")
    assert p10.table.value(0xD, 0, "eax") == 0b11 and p10.filtered.value(0xD, 0, "eax") == 0
    assert bit(p10.filtered, 7, 0, "ebx", 16) == 1  # avx512f itself is filtered


def test_kvm_word_cleared_unless_kvm_and_amd_aliases_copied() -> None:
    f = facts(m={"on": ["kvmclock"], "vendor": "AuthenticAMD"})
    p = predict_guest(f, "m", "tcg", "q35")
    assert p.table.value(0x40000001, 0, "eax") == 0
    edx1, ext = p.table.value(1, 0, "edx"), p.table.value(0x80000001, 0, "edx")
    aliases = version_data("7.2").amd_aliases
    assert ext & aliases == edx1 & aliases != 0
    intel = predict_guest(facts(m={}), "m", "tcg", "q35")
    assert intel.table.value(0x80000001, 0, "edx") & aliases == 0


# -- levels ---------------------------------------------------------------------------

def test_levels_raised_by_non_zero_words_and_overridden_by_properties() -> None:
    f = facts(m={"level": 4, "xlevel": 0x80000004})
    p = predict_guest(f, "m", "tcg", "q35")
    assert (p.levels["level"], p.levels["xlevel"]) == (4, 0x80000004)  # the base features raise nothing
    assert predict_guest(f, "m,+smep", "tcg", "q35").levels["level"] == 7          # 7.0.EBX always raises
    assert predict_guest(f, "m,+arat", "tcg", "q35").levels["level"] == 6          # full-cpuid-auto-level
    assert predict_guest(f, "m,+svm", "tcg", "q35").levels["xlevel"] == 0x8000000A
    assert predict_guest(f, "m,+invtsc", "tcg", "q35").levels["xlevel"] == 0x80000007  # before filtering
    assert predict_guest(f, "m,+smep,level=5", "tcg", "q35").levels["level"] == 5
    assert predict_guest(f, "m,min-level=0x10", "tcg", "q35").levels["level"] == 0x10


# -- KVM ------------------------------------------------------------------------------

def _supported(**regs: int) -> CpuidTable:
    t = CpuidTable()
    t.set(0, 0, Regs(0x10, 0x68747541, 0x444D4163, 0x69746E65))  # AuthenticAMD
    for key, v in regs.items():
        leaf, sub, reg = key.split("_")
        t.set_reg(int(leaf, 16), int(sub), reg, v)
    return t


def test_kvm_defaults_and_fixups() -> None:
    d = version_data("7.2")
    f = facts(m={"on": ["x2apic", "monitor"]})  # as TCG facts show it: vme=off (tcg_default_props)
    everything = _supported(**{"1_0_ecx": 0xFFFFFFFF & ~(1 << 24) & ~(1 << 31), "1_0_edx": 0xFFFFFFFF,
                               "40000001_0_eax": 0xFFFFFFFF, "80000001_0_edx": 0, "80000001_0_ecx": 0})
    p = predict_guest(f, "m", "kvm", "q35", everything)
    assert bit(p.table, 1, 0, "ecx", 31) == 1          # hypervisor: QEMU sets it over KVM's answer
    assert bit(p.table, 1, 0, "ecx", 3) == 0           # monitor=off: kvm_default_props
    assert bit(p.table, 1, 0, "edx", 1) == 0 and any("vme" in n for n in p.notes)  # unknown model: vme unknown
    # a builtin model's own vme comes from its definition (Skylake-Server has it, qemu64 not)
    sky = facts(Skylake_Server={}, qemu64={})
    assert bit(predict_guest(sky, "Skylake-Server", "kvm", "q35", everything).table, 1, 0, "edx", 1) == 1
    assert bit(predict_guest(sky, "qemu64", "kvm", "q35", everything).table, 1, 0, "edx", 1) == 0
    assert bit(predict_guest(sky, "Skylake-Server", "tcg", "q35").table, 1, 0, "edx", 1) == 0
    assert p.table.value(0x40000001, 0, "eax") & d.mask_of("FEAT_KVM", ["kvmclock", "kvm-nopiodelay", "kvm-asyncpf",
                                                                       "kvm-steal-time", "kvm-pv-eoi"])
    assert bit(p.table, 0x40000001, 0, "eax", 15) == 0   # kvm-msi-ext-dest-id off with in-kernel irqchip
    micro = predict_guest(f, "m", "kvm", "microvm", everything)
    assert bit(micro.table, 0x40000001, 0, "eax", 15) == 1  # microvm: split irqchip
    assert micro.vendor == "AuthenticAMD"                  # host vendor under KVM
    assert micro.table.value(0x80000001, 0, "edx") & d.amd_aliases  # ... so the AMD aliases are copied
    off = predict_guest(f, "m", "kvm", "q35", everything, irqchip="off")
    assert bit(off.table, *X2APIC) == 0 and bit(off.table, 1, 0, "ecx", 24) == 0
    assert bit(p.table, 1, 0, "ecx", 24) == 0  # tsc-deadline only when asked for (not in the model)
    assert bit(predict_guest(f, "m,+tsc-deadline", "kvm", "q35", everything).table, 1, 0, "ecx", 24) == 1
    # topoext is always allowed (a fix-up), even if KVM does not return it
    assert bit(predict_guest(f, "m,+topoext", "kvm", "q35", everything).table, 0x80000001, 0, "ecx", 22) == 1
    # a feature KVM does not support is filtered
    none = _supported(**{"1_0_ecx": 0})
    q = predict_guest(f, "m,+avx", "kvm", "q35", none)
    assert bit(q.table, *AVX) == 0 and bit(q.filtered, *AVX) == 1


def test_bad_input_is_a_clear_error() -> None:
    f = facts(m={})
    with pytest.raises(UnknownCpuModel, match="unknown CPU model 'nope'"):
        predict_guest(f, "nope", "tcg", "q35")
    with pytest.raises(QemuModelError, match="no CPU feature 'warp'"):
        predict_guest(f, "m,+warp", "tcg", "q35")
    with pytest.raises(QemuModelError, match="no CPU property 'warp'"):
        predict_guest(f, "m,warp=on", "tcg", "q35")
    with pytest.raises(QemuModelError, match="not on/off"):
        predict_guest(f, "m,avx=maybe", "tcg", "q35")
    with pytest.raises(QemuModelError, match="needs the KVM supported table"):
        predict_guest(f, "m", "kvm", "q35")
    with pytest.raises(QemuModelError, match="not modelled"):
        predict_guest(f, "m", "hvf", "q35")
    with pytest.raises(QemuFactsError, match="no QEMU model data for QEMU 6.2"):
        version_data("6.2")


def test_nearest_older_series_is_used_and_said() -> None:
    p = predict_guest(facts((8, 2, 0), m={}), "m", "tcg", "q35")
    assert p.series == "7.2"
    assert len(p.approximations) == 1
    said = p.approximations[0]
    assert "QEMU 8.2 has no CPU-model facts" in said and "those of QEMU 7.2" in said
    assert "rig qemu facts import QEMU_SOURCE_DIR" in said
    exact = predict_guest(facts((7, 2, 22), m={}), "m", "tcg", "q35")
    assert exact.approximations == []


def test_guest_rules_of_cpu_x86_cpuid() -> None:
    from rig.qemu.model import guest_visible

    t = CpuidTable()
    t.set(1, 0, Regs(None, None, 1 << 15, 0))            # pdcm
    t.set(0xD, 1, Regs(1, None, 0, 0))                   # xsaveopt, no xsave
    t.set(0x8000000A, 0, Regs(None, None, None, 1))      # npt without svm
    g = guest_visible(t, "7.2", "tcg", "Broadwell,-xsave")
    assert g.value(1, 0, "ecx") == 0 and g.value(0xD, 1, "eax") == 0 and g.value(0x8000000A, 0, "edx") == 0
    assert guest_visible(t, "7.2", "tcg", "Broadwell,pmu=on").value(1, 0, "ecx") == 1 << 15
    assert guest_visible(t, "7.2", "tcg", "max").value(1, 0, "ecx") == 1 << 15       # max has pmu=on
    assert guest_visible(t, "7.2", "tcg", "max,pmu=off").value(1, 0, "ecx") == 0
    t.set(1, 0, Regs(None, None, 1 << 26, 0))
    assert guest_visible(t, "7.2", "tcg", "Broadwell").value(0xD, 1, "eax") == 1       # xsave: leaf 0xD visible
    p = predict_guest(facts(m={"on": ["xsave", "xsaveopt"]}), "m,-xsave", "tcg", "q35")
    assert p.table.value(0xD, 1, "eax") == 1 and p.guest_table().value(0xD, 1, "eax") == 0
    assert p.guest_table().value(0, 0, "eax") == p.levels["level"] == p.with_levels().value(0, 0, "eax")


def test_explain_traces_each_step() -> None:
    f = facts(m={"versions": 2, "on": ["x2apic", "clflushopt"], "v2_off": ["clflushopt"]})
    p = predict_guest(f, "m,-x2apic,x2apic=on", "tcg", "q35")
    steps = [line.split()[0] for line in p.explain("x2apic")]
    assert steps == ["machine", "model", "property", "minus", "configured"]
    why = p.explain("clflushopt")
    assert any(line.startswith("versions") and "m-v2" in line for line in why)
    micro = predict_guest(f, "m", "tcg", "microvm").explain("clflushopt")
    assert any("resolves to m-v2" in line for line in micro) and any("does not have it" in line for line in micro)
    filt = predict_guest(f, "m,+rdseed", "tcg", "q35").explain("rdseed")
    assert filt[-2].startswith("filter") and "in filtered-features" in filt[-1]
    with pytest.raises(QemuModelError):
        p.explain("warp")


def test_qemu_10_tcg_hides_syscall_from_intel_guests_outside_long_mode() -> None:
    """QEMU 10.0 cpu_x86_cpuid (0x80000001): ``tcg_enabled() && vendor is Intel && !(hflags & HF_LMA_MASK)``
    clears SYSCALL (EDX[11]); QEMU 7.2 has no such rule (the 7.2 nightly sees SYSCALL in prot32)."""
    from rig.qemu.model import guest_visible

    t = CpuidTable()
    t.set(0x80000001, 0, Regs(None, None, 0, 1 << 11))
    intel, amd = "GenuineIntel", "AuthenticAMD"

    def seen(series, accel, mode, vendor):
        return guest_visible(t, series, accel, "Skylake-Server", mode=mode, vendor=vendor).value(0x80000001, 0, "edx")

    assert seen("10.0", "tcg", "prot32", intel) == 0 and seen("10.0", "tcg", "real", intel) == 0
    assert seen("10.0", "tcg", "long64", intel) == 1 << 11
    assert seen("10.0", "tcg", "user", intel) == 1 << 11   # a 64-bit Linux process runs with EFER.LMA set
    assert seen("10.0", "kvm", "prot32", intel) == 1 << 11
    assert seen("10.0", "tcg", "prot32", amd) == 1 << 11
    assert seen("10.0", "tcg", "prot32", None) == 1 << 11  # vendor unknown: the rule is not applied
    assert seen("7.2", "tcg", "prot32", intel) == 1 << 11
