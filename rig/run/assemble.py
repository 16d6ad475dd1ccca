"""One case's result from its prediction and its observation, the same for every guest and host.

:func:`assemble`: the outcome's known issue, the host quirk (native KVM hosts), the
comparison of the views (rig.compare.threeway), the kernel's view of an OS guest, the
compared words, ``views.json`` in the case directory, and the verdict (:func:`rig.results.judge`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..compare.known import case_fields, match_outcome
from ..compare.threeway import Views, compare
from ..cpuid.table import REGISTERS, CpuidTable
from ..guest.quirks import detect_host_quirk
from ..matrix.model import KnownIssue
from ..results import Case, CaseResult, IssueRef, Outcome, judge
from .kernelview import kernel_view, kernel_view_note
from .observation import CaseObservation
from .predict import Prediction
from .rundir import write_json

#: the guest mode whose table is "observed" in the words/grid (the others are compared too)
MODE_ORDER = ("long64", "prot32", "real", "user")
#: share of the differing bits that must equal the host's raw CPUID before a KVM guest counts as
#: reading the host's CPUID (PVM passes it through; the rest are per-CPU fields such as APIC IDs)
QUIRK_HOST_SHARE = 0.9


def observed_mode(tables: dict[str, CpuidTable]) -> str | None:
    for m in MODE_ORDER:
        if m in tables:
            return m
    return next(iter(tables), None)


def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:08x}"


def words_of(scope: Sequence[tuple[int, int, str]], predicted: CpuidTable | None, configured: CpuidTable | None,
             observed: CpuidTable | None) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for leaf, sub, reg in scope:
        views = [t.reg(leaf, sub, reg) if t is not None else None for t in (predicted, configured)]
        o = observed.value(leaf, sub, reg) if observed is not None else None
        out[f"{leaf:#x}.{sub}.{reg}"] = [_hex(views[0]), _hex(views[1]), _hex(o)]
    return out


def detect_quirk(case: Case, obs: CaseObservation, observed: dict[str, CpuidTable],
                 host_raw: CpuidTable | None) -> str | None:
    """A KVM guest that does not read what QEMU configured while QMP is self-consistent
    (:func:`rig.guest.quirks.detect_host_quirk`), and whose differing bits are the host's own
    (at least :data:`QUIRK_HOST_SHARE` of them, when this machine's raw CPUID is readable).
    Under TCG a guest/QMP difference is QEMU's own behaviour, never a host quirk."""
    if not obs.quirks_possible or case.accel != "kvm" or obs.configured is None or not observed:
        return None
    q = detect_host_quirk(observed, obs.configured, filtered_features=obs.filtered,
                          expansion=obs.expansion, cpu=case.cpu_arg, host_raw=host_raw)
    if q is None:
        return None
    if host_raw is not None and q.host_bits_compared and q.host_bits_matching < QUIRK_HOST_SHARE * q.host_bits_compared:
        return None
    return q.message


def _table_json(t: CpuidTable | None) -> Any:
    return None if t is None else t.to_json()


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def assemble(case: Case, pred: Prediction, obs: CaseObservation, workdir: Path, *, known: Iterable[KnownIssue],
             fail_on: Iterable[str], host_raw: CpuidTable | None = None) -> CaseResult:
    """The case's judged result; ``views.json`` in ``workdir``.  ``host_raw``: this machine's raw CPUID (for
    telling a host quirk from a KVM difference; only read by cases whose observation allows quirks)."""
    known = tuple(known)
    version = obs.qemu_version
    if obs.outcome == Outcome.SIMULATED:
        return judge(_simulated(case, pred, obs), fail_on)
    result = CaseResult(case, obs.outcome, message=obs.message, qemu_version=version,
                        approximations=pred.approximations)
    if obs.outcome != Outcome.OK:
        issue = match_outcome(known, case_fields(case, version), obs.outcome)
        result.outcome_issue = IssueRef.of(issue) if issue else None
    observed, runtime = obs.observed, obs.runtime
    if obs.os is not None:
        observed = {"user": obs.os.user} if obs.os.user is not None and obs.outcome == Outcome.OK else {}
        runtime = obs.os.runtime if observed else None
    quirk = detect_quirk(case, obs, observed, host_raw)
    comparison = compare(case, Views(predicted=pred.table, configured=obs.configured, observed=observed,
                                     runtime=runtime, predicted_filtered=pred.filtered, configured_filtered=obs.filtered,
                                     kvm_predicted=pred.kvm_supported, kvm_measured=obs.kvm_measured),
                         quirk=quirk, known=known, qemu_version=version)
    result.findings = [*comparison.findings, *obs.extra_findings]
    result.quirk = quirk
    mode = observed_mode(observed)
    result.words = words_of(comparison.scope, pred.table, obs.configured, observed.get(mode) if mode else None)
    if pred.note and obs.outcome == Outcome.OK:
        result.message = _join(result.message, pred.note)
    views: dict[str, Any] = {
        "predicted": _table_json(pred.table), "configured": _table_json(obs.configured),
        "filtered": _table_json(obs.filtered), "predicted_filtered": _table_json(pred.filtered),
        "observed": {m: t.to_json() for m, t in observed.items()},
        "observed_mode": mode, "expansion": obs.expansion, "timings_ms": obs.timings_ms,
        "exit_code": obs.exit_code,
    }
    if pred.kvm_supported is not None or obs.kvm_measured is not None:
        views.update(kvm_predicted=_table_json(pred.kvm_supported), kvm_measured=_table_json(obs.kvm_measured))
    if pred.approximations:
        views["approximations"] = list(pred.approximations)
    if obs.os is not None:
        g = obs.os
        kview = kernel_view(g.user, g.cpuinfo_flags) if observed and g.cpuinfo_flags is not None else None
        views["guest"] = case.guest
        views["kernel"] = {"release": g.release, "cpuinfo_flags": g.cpuinfo_flags, "cpuinfo_bugs": g.cpuinfo_bugs,
                           "vulnerabilities": g.vulnerabilities, "view": kview}
        result.message = _join(result.message, kernel_view_note(kview))
    views.update(obs.views)
    write_json(workdir / "views.json", views)
    return judge(result, fail_on)


def _simulated(case: Case, pred: Prediction, obs: CaseObservation) -> CaseResult:
    """No QEMU ran: the prediction is the result (its words: every register it predicts)."""
    if pred.table is None:
        return CaseResult(case, Outcome.RIG_ERROR, message=f"simulate needs a prediction: {pred.note}")
    scope = [(lf, s, r) for (lf, s), regs in pred.table.items() for r in REGISTERS if regs.get(r) is not None]
    return CaseResult(case, Outcome.SIMULATED, message=obs.message, qemu_version=obs.qemu_version,
                      words=words_of(scope, pred.table, None, None), approximations=pred.approximations)
