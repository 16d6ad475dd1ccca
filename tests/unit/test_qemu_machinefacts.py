"""rig.qemu.machinefacts: machine types' CPU compat properties from source shaped like QEMU's."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.qemu.machinefacts import extract, to_toml
from rig.qemu.srcfacts import SourceFactsError

CPU_QOM = '#ifdef TARGET_X86_64\n#define TYPE_X86_CPU "x86_64-cpu"\n#else\n#define TYPE_X86_CPU "i386-cpu"\n#endif\n'
MACHINE_C = """
GlobalProperty hw_compat_2_8[] = {
    { "virtio-pci", "x-disable", "on" },  /* not a CPU */
};
const size_t hw_compat_2_8_len = G_N_ELEMENTS(hw_compat_2_8);
GlobalProperty hw_compat_2_7[] = {};
const size_t hw_compat_2_7_len = G_N_ELEMENTS(hw_compat_2_7);
"""
PC_C = """
#define PC_CPU_MODEL_IDS(v) \\
    { "qemu64-" TYPE_X86_CPU, "model-id", "QEMU Virtual CPU version " v, },
GlobalProperty pc_compat_2_8[] = {
    { TYPE_X86_CPU, "tcg-cpuid", "off" },
    { "Haswell" "-" TYPE_X86_CPU, "abm", "off" },
};
const size_t pc_compat_2_8_len = G_N_ELEMENTS(pc_compat_2_8);
GlobalProperty pc_compat_2_7[] = {
    PC_CPU_MODEL_IDS("2.7.0")
    { TYPE_X86_CPU, "full-cpuid-auto-level", "off" },
    { "Haswell-" TYPE_X86_CPU, "abm", "on" },
};
const size_t pc_compat_2_7_len = G_N_ELEMENTS(pc_compat_2_7);
"""
# the 9.x+ form of pc_piix.c: DEFINE_I440FX_MACHINE(major, minor); each options function calls the newer one
PIIX_NEW = """
GlobalProperty pc_piix_compat_defaults[] = {};
static void pc_i440fx_machine_options(MachineClass *m)
{
    PCMachineClass *pcmc = PC_MACHINE_CLASS(m);
    pcmc->default_cpu_version = 1;
}
static void pc_i440fx_machine_2_9_options(MachineClass *m)
{
    pc_i440fx_machine_options(m);
}
DEFINE_I440FX_MACHINE_AS_LATEST(2, 9);
static void pc_i440fx_machine_2_8_options(MachineClass *m)
{
    pc_i440fx_machine_2_9_options(m);
    compat_props_add(m->compat_props, hw_compat_2_8, hw_compat_2_8_len);
    compat_props_add(m->compat_props, pc_compat_2_8, pc_compat_2_8_len);
}
DEFINE_I440FX_MACHINE(2, 8);
static void pc_i440fx_machine_2_7_options(MachineClass *m)
{
    PCMachineClass *pcmc = PC_MACHINE_CLASS(m);
    pc_i440fx_machine_2_8_options(m);
    pcmc->default_cpu_version = CPU_VERSION_LEGACY;
    compat_props_add(m->compat_props, hw_compat_2_7, hw_compat_2_7_len);
    compat_props_add(m->compat_props, pc_compat_2_7, pc_compat_2_7_len);
}
DEFINE_I440FX_MACHINE(2, 7);
"""
# the 7.2 form of pc_q35.c: DEFINE_Q35_MACHINE(suffix, name, compatfn, optionsfn) and init-time compat functions
Q35_OLD = """
static void pc_compat_2_8_fn(MachineState *machine)
{
    x86_cpu_change_kvm_default("x2apic", NULL);
}
static void pc_compat_2_7_fn(MachineState *machine)
{
    pc_compat_2_8_fn(machine);
    x86_cpu_change_kvm_default("svm", "on");
}
static void pc_q35_machine_options(MachineClass *m)
{
    PCMachineClass *pcmc = PC_MACHINE_CLASS(m);
    pcmc->default_cpu_version = 1;
}
static void pc_q35_2_8_machine_options(MachineClass *m)
{
    pc_q35_machine_options(m);
    compat_props_add(m->compat_props, pc_compat_2_8, pc_compat_2_8_len);
}
DEFINE_Q35_MACHINE(v2_8, "pc-q35-2.8", NULL, pc_q35_2_8_machine_options);
static void pc_q35_2_7_machine_options(MachineClass *m)
{
    pc_q35_2_8_machine_options(m);
    compat_props_add(m->compat_props, pc_compat_2_7, pc_compat_2_7_len);
}
DEFINE_Q35_MACHINE(v2_7, "pc-q35-2.7", pc_compat_2_7_fn, pc_q35_2_7_machine_options);
"""


def _tree(tmp: Path, piix: str = PIIX_NEW) -> Path:
    for rel, text in (("target/i386/cpu-qom.h", CPU_QOM), ("hw/core/machine.c", MACHINE_C), ("hw/i386/pc.c", PC_C),
                      ("hw/i386/pc_piix.c", piix), ("hw/i386/pc_q35.c", Q35_OLD)):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return tmp


def test_chains_arrays_versions_and_kvm_defaults(tmp_path: Path) -> None:
    ms = {m.name: m for m in extract(_tree(tmp_path))}
    assert sorted(ms) == ["pc-i440fx-2.7", "pc-i440fx-2.8", "pc-i440fx-2.9", "pc-q35-2.7", "pc-q35-2.8"]
    assert ms["pc-i440fx-2.9"].compat == [] and ms["pc-i440fx-2.9"].latest
    assert ms["pc-i440fx-2.8"].compat == [("x86_64-cpu", "tcg-cpuid", "off"), ("Haswell-x86_64-cpu", "abm", "off")]
    # newer arrays first, then its own (the later one wins); macros expanded; non-CPU drivers dropped
    assert ms["pc-i440fx-2.7"].compat == [
        ("x86_64-cpu", "tcg-cpuid", "off"), ("Haswell-x86_64-cpu", "abm", "off"),
        ("qemu64-x86_64-cpu", "model-id", "QEMU Virtual CPU version 2.7.0"),
        ("x86_64-cpu", "full-cpuid-auto-level", "off"), ("Haswell-x86_64-cpu", "abm", "on")]
    assert (ms["pc-i440fx-2.8"].cpu_version, ms["pc-i440fx-2.7"].cpu_version) == ("v1", "legacy")
    assert ms["pc-q35-2.7"].kvm_defaults == [("x2apic", ""), ("svm", "on")] and ms["pc-q35-2.8"].kvm_defaults == []
    assert ms["pc-q35-2.8"].latest  # 7.2 form: the newest of the family
    text = to_toml(list(ms.values()), "2.9")
    assert 'alias.pc = "pc-i440fx-2.9"' in text and 'kvm_defaults = [["x2apic", ""], ["svm", "on"]]' in text


def test_missing_options_function_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceFactsError, match="options function pc_i440fx_machine_3_0_options"):
        extract(_tree(tmp_path, PIIX_NEW + "DEFINE_I440FX_MACHINE(3, 0);\n"))
