"""Cases on an emulated host (``emulated:MODEL@KERNEL[,param=value...]``): real KVM of a Debian kernel in L1.

All cases of one host run in one L1 boot (rig.emulate.EmulatedHost), one L2 QEMU at a time, in a worker
thread (EmulatedHost is synchronous).  Per case the views are: configured = L2 QEMU's QMP feature-words,
observed = the probe in L2, and a fourth, the ``kvm`` view: the KVM policy model's prediction of L1's
``KVM_GET_SUPPORTED_CPUID`` (rig.policy) against the real one L1 measured.  An L1 that fails to boot
makes every case of the host a ``rig-error`` result naming why (the run goes on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..compare.known import case_fields, match_outcome
from ..compare.threeway import IssueRef, compare
from ..cpuid.table import CpuidTable
from ..emulate.host import KVMRUN_MACHINE
from ..emulate.l2 import feature_registers
from ..errors import RigError
from ..matrix.model import Case
from ..qemu.launcher import classify
from .guests import ProbeReader, split_machine
from .result import CaseResult, judge
from .rundir import write_json

EXIT_KILLED = 137  # busybox timeout -s KILL inside L1


def _exit_code(status: int) -> int:
    """A shell's 128+N for a signal-killed QEMU -> -N (as subprocess reports it)."""
    return -(status - 128) if 128 < status < 160 and status != EXIT_KILLED else status


def kvm_prediction(profile: Any) -> tuple[CpuidTable | None, str, tuple[str, ...]]:
    """The policy model's KVM_GET_SUPPORTED_CPUID for an L1 profile: (table or None, why not, approximations:
    a sentence when no policy was imported for L1's kernel series and another one stood in)."""
    try:
        from ..policy import predict_supported
        from ..policy.store import resolve_policy
    except ImportError as e:
        return None, f"KVM policy model not available ({e})", ()
    try:
        release = profile.kernel.release if profile.kernel else ""
        choice = resolve_policy(release)
        return predict_supported(profile, choice.policy).table, "", tuple(kvm_approximations(profile))
    except RigError as e:
        return None, f"no KVM prediction: {e}", ()


def kvm_approximations(profile: Any) -> list[str]:
    """The policy's approximation sentence when L1's kernel has no exact KVM policy (the case is then 'approximate')."""
    try:
        from ..policy import resolve_policy

        choice = resolve_policy(profile.kernel.release if profile.kernel else "")
    except (ImportError, RigError):
        return []
    return [f"KVM policy: {choice.approximation}"] if choice.approximation else []


def l2_prediction(case: Case, machine: str, profile: Any) -> tuple[CpuidTable | None, str]:
    """The QEMU model's configured view of an L2 case on L1's measured KVM (the L2 QEMU is the system build)."""
    try:
        from ..qemu.binaries import find_qemu, gather_facts
        from ..qemu.model import predict_guest
    except ImportError as e:
        return None, f"QEMU model layer not available ({e})"
    supported = profile.kvm.supported
    if supported is None:
        return None, "no KVM_GET_SUPPORTED_CPUID measured in L1"
    try:
        facts = gather_facts(find_qemu("system"))
        return predict_guest(facts, case.cpu_arg, "kvm", machine, supported, host_raw=profile.raw).with_levels(), ""
    except RigError as e:
        return None, f"no prediction: {e}"


class EmulatedGroup:
    """Every case of one emulated host; :meth:`run` is called in a worker thread."""

    def __init__(self, host: str, cases: Sequence[Case]) -> None:
        self.host = host
        self.cases = list(cases)
        self.stop = threading.Event()
        self._active: Any = None

    def cancel(self) -> None:
        """From the event loop's thread: stop after the current case and power L1 off now."""
        self.stop.set()
        h = self._active
        if h is not None:
            try:
                h.close()
            except Exception:  # noqa: BLE001  (best effort while cancelling)
                pass

    def run(self, ctx: Any, emit: Callable[[CaseResult], None]) -> None:
        from ..emulate.host import EmulatedHost

        t0 = time.perf_counter()
        try:
            host = EmulatedHost.from_spec(self.host, workdir=ctx.rundir.path / "hosts" / self.host.replace(":", "-"))
            self._active = host
            host.__enter__()
        except RigError as e:
            for c in self.cases:
                r = CaseResult(c, "rig-error", message=f"emulated host {self.host} did not come up: {e}",
                               duration_s=time.perf_counter() - t0)
                emit(judge(r, ctx.matrix.fail_on))
            return
        try:
            kvm_pred, kvm_note, approx = kvm_prediction(host.profile)
            for c in self.cases:
                if self.stop.is_set():
                    return
                emit(self._one(ctx, host, c, kvm_pred, kvm_note, approx))
        finally:
            self._active = None
            host.__exit__(None, None, None)

    def _one(self, ctx: Any, host: Any, case: Case, kvm_pred: CpuidTable | None, kvm_note: str,
             approx: tuple[str, ...] = ()) -> CaseResult:
        t0 = time.perf_counter()
        workdir = ctx.rundir.case_dir(case.id)
        result = CaseResult(case, "rig-error", artifacts=str(workdir.relative_to(ctx.rundir.path)))
        try:
            base, form = split_machine(case.machine)
            kvmrun = base == KVMRUN_MACHINE
            if kvmrun and (case.accel != "kvm" or case.cpu_arg != "host"):
                raise RigError(f"L2 machine kvmrun (no QEMU: KVM's supported CPUID as it is) runs -cpu host -accel "
                               f"kvm only, not -cpu {case.cpu_arg} -accel {case.accel}")
            if not kvmrun and (form != "pvh" or case.accel != "kvm"):
                raise RigError(f"emulated hosts run -M microvm (or kvmrun) -accel kvm L2 cases only, not "
                               f"-M {case.machine} -accel {case.accel}")
            r = host.run_probe(case.cpu_arg, base, timeout=case.timeout, qmp=not kvmrun)
            (workdir / "cmdline.txt").write_text(
                "(inside L1) " + ("kvmrun /rig/probe.elf" if kvmrun else "qemu-system-x86_64") + " "
                + " ".join(r.args) + "\n")
            (workdir / "serial.log").write_text(r.serial)
            (workdir / "stderr.log").write_text(r.stderr)
            write_json(workdir / "qmp.json", {"replies": r.qmp, "errors": r.qmp_errors})
            reader = ProbeReader(case.id, workdir / "serial.log")
            code = _exit_code(r.exit_status)
            outcome, message = classify(
                exit_code=code, timed_out=r.timed_out, qmp_ready=bool(r.qmp) or code in (33, 35),
                qmp_error="; ".join(r.qmp_errors) or None, stderr=r.stderr, serial_text=r.serial,
                probe_check=reader, timeout=case.timeout, shutdown="L1's timeout (SIGKILL)")
            # QEMU's guest rules do not apply to kvmrun (no QEMU in between)
            version = None if kvmrun else getattr(host, "_outer_version", None)
            result.outcome, result.message, result.qemu_version = outcome, message, version
            if outcome != "ok":
                issue = match_outcome(ctx.matrix.known_issues, case_fields(case, version), outcome)
                result.outcome_issue = IssueRef.of(issue) if issue else None
            observed = reader.report.tables if reader.report is not None and outcome == "ok" else {}
            measured = host.profile.kvm.supported
            if kvmrun:
                # kvmrun sets KVM_GET_SUPPORTED_CPUID as it is: configured = measured, predicted = the policy model
                configured = feature_registers(measured)
                predicted, pred_note = (feature_registers(kvm_pred), "") if kvm_pred is not None else (None, kvm_note)
            else:
                configured = r.feature_words()
                predicted, pred_note = l2_prediction(case, base, host.profile)
            comparison = compare(case, predicted=predicted, configured=configured, observed=observed,
                                 known=ctx.matrix.known_issues, qemu_version=version,
                                 kvm_predicted=kvm_pred, kvm_measured=measured)
            result.findings = comparison.findings
            from .execute import observed_mode, words_of

            mode = observed_mode(observed)
            result.words = words_of(comparison.scope, predicted, configured, observed.get(mode) if mode else None)
            result.approximations = list(approx)
            notes = "; ".join(n for n in (pred_note, kvm_note) if n)
            if notes and outcome == "ok":
                result.message = f"{message}; {notes}"
            write_json(workdir / "views.json", {
                "predicted": None if predicted is None else predicted.to_json(),
                "configured": None if configured is None else configured.to_json(),
                "observed": {m: t.to_json() for m, t in observed.items()}, "observed_mode": mode,
                "kvm_predicted": None if kvm_pred is None else kvm_pred.to_json(),
                "kvm_measured": None if measured is None else measured.to_json(),
                "l1": host.label, "exit_code": r.exit_status, "form": form, "image": str(ctx.probe.pvh),
            })
        except RigError as e:
            result.outcome, result.message = "rig-error", str(e)
        result.duration_s = time.perf_counter() - t0
        result.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return judge(result, ctx.matrix.fail_on)
