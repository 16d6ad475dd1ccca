"""Expanding a :class:`Matrix` into :class:`Case` values.

Models ``all`` / ``all-versions`` and the variant generators need to know the
QEMU binary's models; that knowledge comes from a *model source* (a callable
``qemu spec -> QemuModels``), so tests can expand matrices without QEMU.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable

from ..results import Case
from .load import MatrixError
from .model import Group, Matrix, Variant, VariantSpec
from .qemu_source import QemuModels, resolve_qemu

ModelSource = Callable[[str], QemuModels]


def default_model_source(spec: str) -> QemuModels:
    return QemuModels.for_binary(resolve_qemu(spec))


def _catalogue_qemu_names() -> list[str]:
    from ..cpuid.catalogue import catalogue

    return sorted({f.qemu[0] for f in catalogue().features if f.qemu})


def _variants(spec: VariantSpec, model: str, models: QemuModels) -> list[Variant]:
    if spec.generate is None:
        return [Variant(spec.name or "default", spec.flags)]
    if spec.generate == "model-features-off":
        return [Variant(f"no-{f}", (f"{f}=off",)) for f in models.features(model) if f not in spec.skip]
    if spec.generate == "catalogue-features-on":
        have = set(models.features(model))
        return [Variant(f"with-{f}", (f"{f}=on",)) for f in _catalogue_qemu_names() if f not in have and f not in spec.skip]
    raise AssertionError(spec.generate)  # load.py validated it


def flag_property(flag: str) -> str:
    """The CPU property a ``-cpu`` option names: ``+avx2``/``-avx2`` -> avx2, ``sse4.2=off`` -> sse4.2."""
    flag = flag.strip()
    if flag[:1] in "+-":
        return flag[1:]
    return flag.split("=", 1)[0]


def _check_flags(group: Group, index: int, matrix: Matrix, models: QemuModels) -> None:
    """Explicit variant flags must name properties of the QEMU binary's CPUs: a typo is a matrix error
    before any QEMU starts, not a failed case per model (generated variants come from QEMU itself)."""
    if not models.cpu_properties:
        return
    for vi, spec in enumerate(group.variants):
        for fi, flag in enumerate(spec.flags):
            name = flag_property(flag)
            if name in models.cpu_properties or name.replace("_", "-") in models.cpu_properties:
                continue
            close = difflib.get_close_matches(name, sorted(models.cpu_properties), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise MatrixError(
                f"{matrix.path}: group[{index}].variants[{vi}].flags[{fi}]: {flag!r}: QEMU {models.version} "
                f"({models.binary.path}) has no CPU property {name!r}{hint}; see `rig features` for feature names"
            )


def _models(group: Group, index: int, matrix: Matrix, models: QemuModels) -> list[str]:
    out: list[str] = []
    for i, m in enumerate(group.models):
        if m in ("all", "all-versions"):
            out.extend(models.all_models(versions=(m == "all-versions")))
        elif not models.has(m):
            raise MatrixError(
                f"{matrix.path}: group[{index}].models[{i}]: {m!r} is not a CPU model of QEMU {models.version} "
                f"({models.binary.path}) (expected a name from `qemu-system-x86_64 -cpu help`, \"all\" or \"all-versions\")"
            )
        else:
            out.append(m)
    return list(dict.fromkeys(out))


def _excluded(case: Case, rules: Iterable[tuple[tuple[str, str], ...]]) -> bool:
    fields = {"model": case.model, "variant": case.variant, "machine": case.machine, "accel": case.accel,
              "guest": case.guest, "host": case.host, "qemu": case.qemu, "case": case.id}
    return any(all(fnmatch.fnmatchcase(fields.get(k, ""), g) for k, g in rule) for rule in rules)


def expand(matrix: Matrix, source: ModelSource = default_model_source) -> list[Case]:
    """All cases of ``matrix`` in a stable order (group, qemu, host, accel, machine, model, variant)."""
    cases: dict[str, Case] = {}
    cache: dict[str, QemuModels] = {}
    for gi, g in enumerate(matrix.groups):
        for q in g.qemu:
            if q not in cache:
                cache[q] = source(q)
            models = cache[q]
            _check_flags(g, gi, matrix, models)
            for host in g.hosts:
                for accel in g.accels:
                    for machine in g.machines:
                        for guest in g.guests:
                            for model in _models(g, gi, matrix, models):
                                for vs in g.variants:
                                    for v in _variants(vs, model, models):
                                        c = Case(host=host, qemu=q, accel=accel, machine=machine, model=model,
                                                 variant=v.name, flags=v.flags, guest=guest, timeout=g.timeout,
                                                 group=g.name)
                                        if not _excluded(c, g.exclude):
                                            cases.setdefault(c.id, c)
    return list(cases.values())
