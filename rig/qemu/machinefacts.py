"""Extract every versioned PC machine type's CPU compat properties from a QEMU source tree.

A versioned machine type (``pc-i440fx-2.7``, ``pc-q35-9.1``) keeps the guest ABI
of that release by *compat properties*: global properties applied to every CPU
object the machine creates (after the accelerator's defaults, before the
user's ``-cpu`` flags).  Facts read from the source, never code:

* ``GlobalProperty hw_compat_X_Y[]`` (``hw/core/machine.c``) and
  ``pc_compat_X_Y[]`` (``hw/i386/pc.c``): ``{ driver, property, value }``
  entries; only drivers that are x86 CPU types are kept (``x86_64-cpu`` for
  every CPU, ``MODEL-x86_64-cpu`` for one model's class);
* ``pc_i440fx_*_machine_options`` / ``pc_q35_*_machine_options``
  (``hw/i386/pc_piix.c``, ``pc_q35.c``): each calls the next newer machine's
  options, then adds its arrays (in that order, so an older array overrides a
  newer one), and may set ``default_cpu_version`` (``CPU_VERSION_LEGACY`` for
  4.0 and older);
* the machine registrations (``DEFINE_I440FX_MACHINE``/``DEFINE_Q35_MACHINE``,
  both the 7.2 and the 9.x+ forms) and, for QEMU 7.2's oldest machines, their
  init-time compat functions' ``x86_cpu_change_kvm_default(prop, value)``.

Run::

    python3 -m rig.qemu.machinefacts QEMU_SOURCE_DIR 10.0 > rig/qemu/data/machines-10.0.toml
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .srcfacts import SourceFactsError, _block, _preprocess, _strip_comments

CPU_TYPE = "x86_64-cpu"  # TYPE_X86_CPU of a 64-bit build (target/i386/cpu-qom.h)
FAMILIES = {"I440FX": ("pc-i440fx", "pc_i440fx", "pc_piix.c", "pc"), "Q35": ("pc-q35", "pc_q35", "pc_q35.c", "q35")}


@dataclass
class MachineFacts:
    name: str                 # pc-i440fx-2.7
    cpu_version: str          # v1 | legacy
    #: CPU compat properties in application order: (driver, property, value)
    compat: list[tuple[str, str, str]] = field(default_factory=list)
    #: x86_cpu_change_kvm_default(prop, value) of the machine's init-time compat function ("" = removed)
    kvm_defaults: list[tuple[str, str]] = field(default_factory=list)
    latest: bool = False


def _c_strings(expr: str, defines: dict[str, str]) -> str | None:
    """A C string expression (literals and macros naming literals, juxtaposed) -> its value, or None
    when a name is not a string macro we know (a device type of no interest)."""
    out = []
    for tok in re.findall(r'"(?:[^"\\]|\\.)*"|\w+', expr):
        if tok.startswith('"'):
            out.append(tok[1:-1])
            continue
        val = defines.get(tok)
        if val is None or not val.startswith('"'):
            if "X86_CPU" in tok:
                raise SourceFactsError(f"CPU type macro {tok} is not a string we know")
            return None
        out.append(val.strip('"'))
    return "".join(out)


def _function_macros(text: str) -> dict[str, tuple[list[str], str]]:
    out = {}
    for m in re.finditer(r"^\s*#\s*define\s+(\w+)\(([^)]*)\)\s*(.*)$", text, re.M):
        out[m.group(1)] = ([a.strip() for a in m.group(2).split(",")], m.group(3))
    return out


def _expand_calls(body: str, macros: dict[str, tuple[list[str], str]]) -> str:
    def sub(m: re.Match[str]) -> str:
        params, repl = macros[m.group(1)]
        args = [a.strip() for a in m.group(2).split(",")]
        for p, a in zip(params, args, strict=False):
            repl = re.sub(r"\b" + re.escape(p) + r"\b", lambda _m, a=a: a, repl)
        return repl

    if not macros:
        return body
    return re.sub(r"\b(" + "|".join(map(re.escape, macros)) + r")\(([^()]*)\)", sub, body)


def global_property_arrays(text: str, defines: dict[str, str]) -> dict[str, list[tuple[str, str, str]]]:
    """``GlobalProperty NAME[] = { {driver, prop, value}, ... }`` -> NAME -> CPU entries in order."""
    raw = _strip_comments(text).replace("\\\n", " ")
    macros = _function_macros(raw)
    code = _preprocess(raw)
    out: dict[str, list[tuple[str, str, str]]] = {}
    for m in re.finditer(r"GlobalProperty\s+(\w+)\[\]\s*=\s*", code):
        body, _ = _block(code, m.end() - 1 if code[m.end() - 1] == "{" else m.end())
        body = _expand_calls(body, macros)
        entries = []
        for em in re.finditer(r"\{([^{}]*)\}", body):
            parts = [p.strip() for p in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", em.group(1)) if p.strip()]
            if len(parts) < 3:
                raise SourceFactsError(f"{m.group(1)}: cannot read entry {{{em.group(1).strip()}}}")
            driver = _c_strings(parts[0], defines)
            if driver is None or not (driver == CPU_TYPE or driver.endswith("-" + CPU_TYPE)):
                continue
            prop, value = _c_strings(parts[1], defines), _c_strings(parts[2], defines)
            if prop is None or value is None:
                raise SourceFactsError(f"{m.group(1)}: CPU entry {{{em.group(1).strip()}}} has a non-literal value")
            entries.append((driver, prop, value))
        out[m.group(1)] = entries
    return out


def _functions(code: str, signature: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"static\s+void\s+(\w+)\s*\(\s*" + signature + r"\s*\*\s*\w+\s*\)\s*\{", code):
        body, _ = _block(code, m.end() - 1)
        out[m.group(1)] = body
    return out


def _options_chain(fn: str, options: dict[str, str], arrays: dict[str, list[tuple[str, str, str]]],
                   seen: tuple[str, ...] = ()) -> tuple[list[tuple[str, str, str]], str | None]:
    """(compat entries in order, default_cpu_version set last or None) of one options function."""
    if fn in seen:
        raise SourceFactsError(f"options functions call each other in a loop: {' -> '.join((*seen, fn))}")
    body = options[fn]
    compat: list[tuple[str, str, str]] = []
    version = None
    for m in re.finditer(r"\b(\w+_options)\s*\(\s*\w+\s*\)|compat_props_add\([^,]+,\s*(\w+)\s*,|"
                         r"default_cpu_version\s*=\s*(\w+)", body):
        if m.group(1):
            if m.group(1) not in options:
                continue  # e.g. a helper that sets nothing we model (not a machine options function)
            c, v = _options_chain(m.group(1), options, arrays, (*seen, fn))
            compat += c
            version = v if v is not None else version
        elif m.group(2):
            if m.group(2) not in arrays:
                raise SourceFactsError(f"{fn}: compat array {m.group(2)} not found")
            compat += arrays[m.group(2)]
        else:
            version = "legacy" if m.group(3) == "CPU_VERSION_LEGACY" else "v" + m.group(3)
    return compat, version


def _kvm_defaults(fn: str | None, compat_fns: dict[str, str]) -> list[tuple[str, str]]:
    if not fn or fn == "NULL":
        return []
    body = compat_fns.get(fn)
    if body is None:
        raise SourceFactsError(f"compat function {fn} not found")
    out: list[tuple[str, str]] = []
    for m in re.finditer(r"\b(pc_compat_\w+_fn)\s*\(|x86_cpu_change_kvm_default\(\s*\"([^\"]+)\"\s*,\s*(NULL|\"[^\"]*\")",
                         body):
        if m.group(1):
            out += _kvm_defaults(m.group(1), compat_fns)
        else:
            out.append((m.group(2), "" if m.group(3) == "NULL" else m.group(3).strip('"')))
    return out


def extract(src: Path) -> list[MachineFacts]:
    from .srcfacts import collect_defines

    defines = collect_defines((src / "target/i386/cpu-qom.h").read_text())
    arrays: dict[str, list[tuple[str, str, str]]] = {}
    for f in ("hw/core/machine.c", "hw/i386/pc.c", "hw/i386/pc_piix.c", "hw/i386/pc_q35.c"):
        arrays.update(global_property_arrays((src / f).read_text(), defines))
    machines: list[MachineFacts] = []
    for family, (prefix, sym, fname, _alias) in FAMILIES.items():
        code = _preprocess(_strip_comments((src / "hw/i386" / fname).read_text()).replace("\\\n", " "))
        options = _functions(code, "MachineClass")
        compat_fns = _functions(code, "MachineState")
        regs: list[tuple[str, str, str | None, bool]] = []
        # QEMU 7.2: DEFINE_I440FX_MACHINE(v7_1, "pc-i440fx-7.1", compatfn, optionsfn)
        for m in re.finditer(r"\bDEFINE_" + family + r"_MACHINE\(\s*\w+\s*,\s*\"([^\"]+)\"\s*,\s*(\w+)\s*,\s*(\w+)\s*\)",
                             code):
            regs.append((m.group(1), m.group(3), m.group(2), False))
        # QEMU 9.x+: DEFINE_I440FX_MACHINE[_AS_LATEST|_BUGFIX](9, 2[, 1])
        for m in re.finditer(r"^\s*DEFINE_" + family + r"_MACHINE(_AS_LATEST|_BUGFIX)?\(\s*(\d+)\s*,\s*(\d+)\s*"
                             r"(?:,\s*(\d+)\s*)?\)", code, re.M):
            ver = [m.group(2), m.group(3)] + ([m.group(4)] if m.group(4) else [])
            regs.append((f"{prefix}-{'.'.join(ver)}", f"{sym}_machine_{'_'.join(ver)}_options", None,
                         m.group(1) == "_AS_LATEST"))
        if not regs:
            raise SourceFactsError(f"{fname}: no DEFINE_{family}_MACHINE registrations found")
        for name, opt, compat_fn, latest in regs:
            if opt not in options:
                raise SourceFactsError(f"{fname}: options function {opt} of {name} not found")
            compat, version = _options_chain(opt, options, arrays)
            if version is None:
                raise SourceFactsError(f"{name}: no default_cpu_version in its options chain")
            machines.append(MachineFacts(name, version, compat, _kvm_defaults(compat_fn, compat_fns), latest))
    # QEMU 7.2 marks the newest with "alias" in the options function (m->alias = "pc"), 9.x+ with _AS_LATEST
    for prefix, _sym, _f, _alias in FAMILIES.values():
        fam = [m for m in machines if m.name.startswith(prefix + "-")]
        if not any(m.latest for m in fam) and fam:
            max(fam, key=lambda m: tuple(int(x) for x in m.name[len(prefix) + 1:].split("."))).latest = True
    return machines


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(machines: list[MachineFacts], version: str, src: str = "") -> str:
    out = [
        f"# QEMU {version} PC machine types: CPU compat properties, extracted by rig.qemu.machinefacts from",
        "# hw/core/machine.c, hw/i386/pc.c, pc_piix.c and pc_q35.c of the Debian source package"
        + (f" ({src})" if src else "") + ". Do not edit by hand.",
        "# compat: [driver, property, value] in application order (after the accelerator's default",
        "# properties, before -cpu); kvm_defaults: x86_cpu_change_kvm_default(property, value), \"\" = removed.",
        f'version = "{version}"',
        "",
    ]
    for prefix, _s, _f, alias in FAMILIES.values():
        latest = [m.name for m in machines if m.latest and m.name.startswith(prefix + "-")]
        if latest:
            out.append(f'alias.{alias} = "{latest[0]}"')
    out.append("")
    for m in machines:
        out.append(f'[machine."{m.name}"]')
        out.append(f'cpu_version = "{m.cpu_version}"')
        out.append("compat = [" + "".join(f"\n  [{_q(d)}, {_q(p)}, {_q(v)}]," for d, p, v in m.compat)
                   + ("\n]" if m.compat else "]"))
        if m.kvm_defaults:
            out.append("kvm_defaults = [" + ", ".join(f"[{_q(p)}, {_q(v)}]" for p, v in m.kvm_defaults) + "]")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m rig.qemu.machinefacts QEMU_SOURCE_DIR VERSION", file=sys.stderr)
        return 2
    sys.stdout.write(to_toml(extract(Path(args[0])), args[1], Path(args[0]).name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
