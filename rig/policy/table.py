"""``rig policy table`` / ``rig policy history``: KVM's handling of each CPUID feature bit, per imported kernel.

Derived from the imported policies (the macros and statements of
``kvm_set_cpu_caps()``/``kvm_initialize_cpu_caps()`` and the vendor functions),
not maintained by hand.  A cell lists every statement naming the feature:
``SYNTHESIZED_F`` (6.14+ initialiser macro), ``mask:F`` (``kvm_cpu_cap_mask``
term), ``set``/``clear``/``check_and_set`` (fix-ups, with their condition), each
prefixed by its vendor module when it is one (``svm:set if nested``).
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

from .model import Policy, PolicyError
from .store import entries, load_policy, version_key

VENDOR_NAMES = {"svm": "svm", "vmx": "vmx", "sev_set_cpu_caps": "sev", "kvm_setup_xss_caps": "xss"}


def handling(policy: Policy, feature: str) -> str:
    """KVM's statements for ``feature`` in ``policy``, in order; ``-`` when none names it."""
    out = []
    for where, steps in [("", policy.common), *((VENDOR_NAMES.get(v, v) + ":", s) for v, s in policy.vendors.items())]:
        for st in steps:
            if st.op in ("init", "mask", "init_kvm_defined"):
                for macro, name in st.features:
                    if name == feature:
                        out.append(f"{where}{macro}" if st.op == "init" else f"{where}{st.op}:{macro}")
            elif st.feature == feature:
                out.append(f"{where}{st.op}" + (f" if {st.cond}" if st.cond else ""))
    return "; ".join(out) or "-"


@dataclass(frozen=True)
class Row:
    feature: str
    word: str
    bit: int
    location: str
    cpuinfo: str
    cells: tuple[str, ...]


def policies(versions: list[str] | None) -> list[Policy]:
    names = versions or [e.name for e in entries() if e.kind == "imported"]
    return [load_policy(v) for v in names]


def rows(pols: list[Policy]) -> list[Row]:
    names: dict[str, tuple] = {}
    for p in pols:
        for f in p.features.values():
            loc = p.location(f.name)
            if loc is None:
                continue
            leaf, sub, reg, bit = loc
            names.setdefault(f.name, (f"0x{leaf:x}.{sub}.{reg}[{bit}]", f.word, f.bit, f.cpuinfo or "", (leaf, sub, reg, bit)))
    out = []
    for name, (loc, word, bit, cpuinfo, _key) in sorted(names.items(), key=lambda kv: kv[1][4]):
        cells = tuple(handling(p, name) if name in p.features else "(no such flag)" for p in pols)
        out.append(Row(name, word, bit, loc, cpuinfo, cells))
    return out


def render(pols: list[Policy], fmt: str = "text") -> str:
    heads = ["feature", "cpuid", "word", "bit", "/proc"] + [f"linux-{p.version}" for p in pols]
    data = [[r.feature, r.location, r.word, str(r.bit), r.cpuinfo, *r.cells] for r in rows(pols)]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(heads)
        w.writerows(data)
        return buf.getvalue()
    if fmt == "html":
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in data)
        return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>KVM CPUID feature table</title>"
                f"</head><body><table><tr>{cells}</tr>\n{body}</table></body></html>\n")
    widths = [max(len(x) for x in col) for col in zip(heads, *data, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [heads, *data]) + "\n"


def history(feature: str, profile=None, params: dict[str, str] | None = None) -> str:
    from .predict import predict_supported

    pols = sorted(policies(None), key=lambda p: version_key(p.version))
    known = [p for p in pols if p.find_feature(feature)]
    if not known:
        raise PolicyError(f"no imported policy knows feature {feature!r}", hint="use an X86_FEATURE name, e.g. TSA_SQ_NO")
    name = known[-1].find_feature(feature).name  # type: ignore[union-attr]
    lines = [f"X86_FEATURE_{name}: KVM's handling per imported kernel" + (" and the predicted bit" if profile else "")]
    prev = None
    for p in pols:
        rule = handling(p, name) if name in p.features else "(no such flag)"
        if p.synthesized and "SYNTHESIZED_F" in rule:
            rule += f" [{'pre-fix' if p.synthesized == 'prefix' else 'fixed'} SYNTHESIZED_F]"
        val = ""
        if profile is not None:
            loc = p.location(name) if name in p.features else None
            val = "-" if loc is None else str(predict_supported(profile, p, params or {}).table.bit(*loc))
        cur = (rule, val)
        mark = "  <- changed" if prev is not None and cur != prev else ""
        lines.append(f"  linux-{p.version:<6} {p.source.get('kernel_version', '?'):<9} "
                     + (f"bit {val}  " if profile is not None else "") + rule + mark)
        prev = cur
    return "\n".join(lines)
