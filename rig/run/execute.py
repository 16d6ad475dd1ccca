"""Running cases: one case = launch -> observe (QMP + probe) -> predict -> compare -> judge -> record.

:func:`run_case` is the data flow of one case (design.md §3); :func:`run_cases`
runs many with ``jobs`` workers in one event loop (each worker waits on its
QEMU, so the loop is idle most of the time) and hands every finished result to
the run directory at once, so an interrupted run keeps what finished.

Cancellation (Ctrl-C, SIGTERM) reaches every running :func:`rig.qemu.launcher.launch`,
which kills its QEMU's process group before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compare.known import case_fields, match_outcome
from ..compare.threeway import Finding, IssueRef, compare
from ..cpuid.table import REGISTERS, CpuidTable
from ..errors import RigError
from ..guest.probe_build import ProbeArtifacts
from ..guest.quirks import detect_host_quirk
from ..matrix.model import Case, Matrix
from ..qemu.binaries import QemuBinary, find_qemu
from ..qemu.cmdline import QemuCommand
from ..qemu.launcher import LaunchSpec, Observation, launch
from .guests import ProbeReader, check_guest, guest_kind, probe_boot
from .predict import Prediction, Predictor
from .result import CaseResult, judge
from .rundir import RunDir, write_json

#: the guest mode whose table is "observed" in the words/grid (the others are compared too)
MODE_ORDER = ("long64", "prot32", "real", "user")


class HostNotAvailable(RigError):
    pass


def check_hosts(cases: Sequence[Case]) -> None:
    """Fail early (before any QEMU starts) for hosts or guests this rig cannot run."""
    for c in cases:
        check_guest(c.guest, c.machine, c.host)
        if c.host.startswith("emulated:"):
            try:
                from ..emulate.host import parse_host_spec
            except ImportError as e:
                raise HostNotAvailable(f"case {c.id}: emulated hosts ({c.host}) are not available ({e})",
                                       hint="use hosts = [\"native\"] or [\"simulate\"]") from None
            parse_host_spec(c.host)


@dataclass
class RunContext:
    """What every case of a run shares."""

    matrix: Matrix
    rundir: RunDir
    probe: ProbeArtifacts
    predictor: Predictor = field(default_factory=Predictor)
    binaries: dict[str, QemuBinary] = field(default_factory=dict)
    memory: str = "64M"
    #: guest images other than the probe, built once per run (rig.run.linux_case.prepare_linux_image)
    guest_images: dict[str, Any] = field(default_factory=dict)
    #: this machine's raw CPUID (for detecting hosts that do not intercept CPUID), read on first use
    _host_raw: list[CpuidTable | None] = field(default_factory=list)

    def host_raw(self) -> CpuidTable | None:
        if not self._host_raw:
            from ..cpuid.enumeration import enumerate_cpuid
            from ..host.cpuid_exec import CpuidExecutor, CpuidUnavailable

            try:
                self._host_raw.append(enumerate_cpuid(CpuidExecutor.open()))
            except CpuidUnavailable:
                self._host_raw.append(None)
        return self._host_raw[0]

    def binary(self, spec: str) -> QemuBinary:
        if spec not in self.binaries:
            self.binaries[spec] = find_qemu(spec)
        return self.binaries[spec]


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


#: share of the differing bits that must equal the host's raw CPUID before a KVM guest counts as
#: reading the host's CPUID (PVM passes it through; the rest are per-CPU fields such as APIC IDs)
QUIRK_HOST_SHARE = 0.9


def detect_quirk(case: Case, obs: Observation, observed: dict[str, CpuidTable],
                 host_raw: CpuidTable | None) -> str | None:
    """A KVM guest that does not read what QEMU configured while QMP is self-consistent
    (:func:`rig.guest.quirks.detect_host_quirk`), and whose differing bits are the host's own
    (at least :data:`QUIRK_HOST_SHARE` of them, when this machine's raw CPUID is readable).
    Under TCG a guest/QMP difference is QEMU's own behaviour, never a host quirk."""
    if case.accel != "kvm" or obs.feature_words is None or not observed:
        return None
    q = detect_host_quirk(observed, obs.feature_words, filtered_features=obs.filtered_features,
                          expansion=obs.expansion, cpu=case.cpu_arg, host_raw=host_raw)
    if q is None:
        return None
    if host_raw is not None and q.host_bits_compared and q.host_bits_matching < QUIRK_HOST_SHARE * q.host_bits_compared:
        return None
    return q.message


def _table_json(t: CpuidTable | None) -> Any:
    return None if t is None else t.to_json()


async def run_case(ctx: RunContext, case: Case) -> CaseResult:
    t0 = time.perf_counter()
    workdir = ctx.rundir.case_dir(case.id)
    rel = str(workdir.relative_to(ctx.rundir.path))
    try:
        if case.host.startswith("simulate"):
            result = _simulate(ctx, case)
        else:
            result = await _native(ctx, case, workdir)
    except RigError as e:
        result = CaseResult(case, "rig-error", message=str(e))
    result.artifacts = rel
    result.duration_s = time.perf_counter() - t0
    result.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return judge(result, ctx.matrix.fail_on)


def _simulate(ctx: RunContext, case: Case) -> CaseResult:
    binary = ctx.binary(case.qemu)
    pred = ctx.predictor(case, binary.series, None)
    if pred.table is None:
        return CaseResult(case, "rig-error", message=f"simulate needs a prediction: {pred.note}")
    scope = [(lf, s, r) for (lf, s), regs in pred.table.items() for r in REGISTERS if regs.get(r) is not None]
    return CaseResult(case, "simulated", message="prediction only (no QEMU started)",
                      qemu_version=".".join(map(str, binary.version)), words=words_of(scope, pred.table, None, None),
                      approximations=list(pred.approximations))


async def _native(ctx: RunContext, case: Case, workdir: Path) -> CaseResult:
    kind, _ = guest_kind(case.guest)
    if kind == "linux":
        from .linux_case import run_linux_case

        return await run_linux_case(ctx, case, workdir)
    if kind == "ssh":
        from .ssh_case import run_ssh_case

        return await run_ssh_case(ctx, case, workdir)
    binary = ctx.binary(case.qemu)
    boot = probe_boot(case.machine, ctx.probe)
    cmd = QemuCommand(binary=str(binary.path), machine=boot.machine, accel=case.accel, cpu=case.cpu_arg,
                      kernel=boot.kernel, drive=boot.drive, memory=ctx.memory, firmware_dir=binary.firmware_dir,
                      bios=boot.bios)
    reader = ProbeReader(case.id, workdir / "serial.log")
    preds: list[Prediction] = []  # predicted while QEMU starts up (the model does not use QEMU's answers)
    obs: Observation = await launch(LaunchSpec(cmd, case.id, workdir, timeout=case.timeout, probe_check=reader,
                                               on_started=lambda: preds.append(ctx.predictor(case, binary.series, None))))
    observed = reader.report.tables if reader.report is not None and obs.outcome == "ok" else {}
    return case_result(ctx, case, workdir, binary, obs, outcome=obs.outcome, message=obs.message, observed=observed,
                       runtime=reader.report.runtime if observed else None, pred=preds[0] if preds else None,
                       views={"form": boot.form, "image": str(boot.image), "bios": boot.bios})


def case_result(ctx: RunContext, case: Case, workdir: Path, binary: QemuBinary, qmp: Observation, *, outcome: str,
                message: str, observed: dict[str, CpuidTable], runtime: Mapping[str, Iterable[Any]] | None = None,
                pred: Prediction | None = None, extra_findings: Iterable[Finding] = (),
                views: Mapping[str, Any] | None = None) -> CaseResult:
    """A case's result from its views, for every guest: predicted (``pred``, else asked now), configured
    (``qmp``: feature-words, filtered-features, expansion), observed (mode -> the guest's table); the
    comparison, host quirk and known issues; ``views.json`` in ``workdir`` (plus the guest's ``views``)."""
    version = ".".join(map(str, binary.version))
    result = CaseResult(case, outcome, message=message, qemu_version=version)
    if outcome != "ok":
        issue = match_outcome(ctx.matrix.known_issues, case_fields(case, version), outcome)
        result.outcome_issue = IssueRef.of(issue) if issue else None
    configured = qmp.feature_words
    if pred is None:
        pred = ctx.predictor(case, binary.series, qmp.expansion)
    quirk = detect_quirk(case, qmp, observed, ctx.host_raw() if case.accel == "kvm" else None)
    comparison = compare(case, predicted=pred.table, configured=configured, observed=observed, quirk=quirk,
                         known=ctx.matrix.known_issues, qemu_version=version, runtime=runtime,
                         predicted_filtered=pred.filtered, configured_filtered=qmp.filtered_features)
    result.findings = [*comparison.findings, *extra_findings]
    result.quirk = quirk
    mode = observed_mode(observed)
    result.words = words_of(comparison.scope, pred.table, configured, observed.get(mode) if mode else None)
    if pred.note and outcome == "ok":
        result.message = f"{result.message}; {pred.note}" if result.message else pred.note
    result.approximations = list(pred.approximations)
    write_json(workdir / "views.json", {
        "predicted": _table_json(pred.table), "configured": _table_json(configured),
        "filtered": _table_json(qmp.filtered_features), "predicted_filtered": _table_json(pred.filtered),
        "observed": {m: t.to_json() for m, t in observed.items()},
        "observed_mode": mode, "expansion": qmp.expansion, "timings_ms": qmp.timings_ms,
        "exit_code": qmp.exit_code, **(views or {}),
    })
    return result


ProgressFn = Callable[[CaseResult], None]


async def run_cases(ctx: RunContext, cases: Sequence[Case], *, jobs: int,
                    on_result: ProgressFn | None = None) -> list[CaseResult]:
    """Run ``cases`` with ``jobs`` workers; every result is appended to the run directory as it finishes.

    Cases of one emulated host form one work item (one L1 boot, its L2 cases in turn, in a thread)."""
    from .emulated import EmulatedGroup

    queue: asyncio.Queue[Case | EmulatedGroup] = asyncio.Queue()
    groups: dict[str, EmulatedGroup] = {}
    for c in cases:
        if c.host.startswith("emulated:"):
            if c.host not in groups:
                groups[c.host] = EmulatedGroup(c.host, [])
                queue.put_nowait(groups[c.host])
            groups[c.host].cases.append(c)
        else:
            queue.put_nowait(c)
    results: list[CaseResult] = []
    loop = asyncio.get_running_loop()

    def record(r: CaseResult) -> None:
        ctx.rundir.append(r)
        results.append(r)
        if on_result is not None:
            on_result(r)

    def record_from_thread(r: CaseResult) -> None:
        done = threading.Event()

        def call() -> None:
            try:
                record(r)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop is gone (cancelled run): the case is simply not recorded
            return
        done.wait(30)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if isinstance(item, EmulatedGroup):
                await asyncio.to_thread(item.run, ctx, record_from_thread)
            else:
                record(await run_case(ctx, item))

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(jobs, queue.qsize() or 1)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for g in groups.values():
            g.cancel()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return results


def load_views(run_path: Path, result: CaseResult) -> dict[str, Any]:
    p = run_path / result.artifacts / "views.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RigError(f"{p}: cannot read the case's views: {e}") from None
