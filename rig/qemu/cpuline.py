"""The ``-cpu`` argument: parsing and QEMU's precedence rules for feature flags.

QEMU (7.2 and 10.0, ``x86_cpu_parse_featurestr`` + ``x86_cpu_expand_features``)
treats the two flag syntaxes differently:

* ``f=on|off`` (and a bare ``f``, meaning ``f=on``) become *global properties*,
  applied in command-line order when the CPU object is created: the last one
  wins.  They override the model and the accelerator's default properties.
* ``+f`` and ``-f`` are collected in two lists and applied at realize time,
  after the properties: first every ``+f``, then every ``-f``.  So ``-f`` beats
  ``+f`` and both beat ``f=on|off`` whatever the order ("-x2apic,x2apic=on"
  leaves x2apic off; QEMU warns that the string is ambiguous).

Names are QEMU property names; ``_`` becomes ``-`` for ``f=on|off`` (feat2prop)
and aliases (``sse4_1``, ``i64``, ``xd`` …) resolve through the version data.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RigError

ON_VALUES = frozenset({"on", "true", "yes", "y"})
OFF_VALUES = frozenset({"off", "false", "no", "n"})


class CpuLineError(RigError):
    pass


@dataclass(frozen=True)
class CpuFlag:
    name: str           # as written (without +/-)
    syntax: str         # "+", "-" or "="
    value: str          # "on"/"off" for features; the raw value for other properties

    def __str__(self) -> str:
        return f"{self.syntax}{self.name}" if self.syntax in "+-" else f"{self.name}={self.value}"


@dataclass(frozen=True)
class CpuLine:
    model: str
    flags: tuple[CpuFlag, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CpuLine:
        """``"Skylake-Server,+avx,-x2apic,pmu=off"`` -> CpuLine."""
        if not isinstance(text, str) or not text.strip():
            raise CpuLineError("empty -cpu argument", hint="give a model name such as qemu64")
        parts = text.strip().split(",")
        model = parts[0].strip()
        if not model or model[0] in "+-=":
            raise CpuLineError(f"-cpu {text!r}: the first item must be a CPU model name")
        flags = []
        for raw in parts[1:]:
            item = raw.strip()
            if not item:
                raise CpuLineError(f"-cpu {text!r}: empty item between commas")
            if item[0] in "+-":
                if "=" in item or len(item) == 1:
                    raise CpuLineError(f"-cpu {text!r}: {item!r} is neither +feature nor -feature")
                flags.append(CpuFlag(item[1:], item[0], "on" if item[0] == "+" else "off"))
                continue
            name, eq, val = item.partition("=")
            if not name:
                raise CpuLineError(f"-cpu {text!r}: {item!r} has no property name")
            if name[0] == "_":  # "_x" would read back as "-x" (QEMU's spelling of "_" is "-")
                raise CpuLineError(f"-cpu {text!r}: property name {name!r} starts with '_'",
                                   hint="QEMU property names start with a letter or digit")
            flags.append(CpuFlag(name.replace("_", "-"), "=", val if eq else "on"))
        return cls(model, tuple(flags))

    @classmethod
    def of(cls, model: str, flags: tuple[str, ...] | list[str] = ()) -> CpuLine:
        return cls.parse(",".join((model, *flags)))

    def __str__(self) -> str:
        return ",".join((self.model, *(str(f) for f in self.flags)))


def bool_value(flag: CpuFlag) -> bool | None:
    """True/False for an on/off value, None when the value is not boolean."""
    v = flag.value.lower()
    if v in ON_VALUES:
        return True
    if v in OFF_VALUES:
        return False
    return None


def effective_settings(flags: tuple[CpuFlag, ...]) -> tuple[list[tuple[str, str]], list[str], list[str], list[str]]:
    """Apply QEMU's precedence: (properties in application order, plus, minus, ambiguity warnings).

    Properties keep command-line order (each later one overrides an earlier one
    when applied); ``+f`` then ``-f`` are applied afterwards.
    """
    props: list[tuple[str, str]] = []
    plus: list[str] = []
    minus: list[str] = []
    warnings: list[str] = []
    for f in flags:
        if f.syntax == "+":
            plus.append(f.name)
        elif f.syntax == "-":
            minus.append(f.name)
        else:
            # QEMU warns when a name given as f=... was given as +f/-f *before* it
            if f.name in plus:
                warnings.append(f'ambiguous: both "+{f.name}" and "{f.name}={f.value}" (the +{f.name} wins)')
            if f.name in minus:
                warnings.append(f'ambiguous: both "-{f.name}" and "{f.name}={f.value}" (the -{f.name} wins)')
            props.append((f.name, f.value))
    return props, plus, minus, warnings
