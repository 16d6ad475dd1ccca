"""The oracle matrix: emulated hosts as ground truth for the KVM policy model.

``data/oracle.toml`` lists kernels × L1 CPU models × KVM parameter sets.
:func:`capture_matrix` boots each kernel × model once (a few in parallel),
captures one profile per parameter set by reloading the KVM modules in that
L1, and saves each as ``<model>@<kernel-series>[,<params>].json``; :func:`check_profile`
compares the policy model's prediction from a profile with the profile's own
measured ``KVM_GET_SUPPORTED_CPUID`` and counts what was compared.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..cpuid.table import CpuidTable
from ..errors import RigError
from ..host.profile import HostProfile
from .host import EmulatedHost, params_label, parse_params


class OracleError(RigError):
    pass


@dataclass(frozen=True)
class OracleHost:
    model: str
    kernel: str  # kernel request ("6.1", "7.x")
    params: tuple[str, ...] = ()

    @property
    def param_map(self) -> dict[str, str]:
        return parse_params(list(self.params))

    def file_name(self, series: str) -> str:
        label = params_label(self.param_map)
        return f"{self.model}@{series}" + (f",{label}" if label else "") + ".json"

    def __str__(self) -> str:
        label = params_label(self.param_map)
        return f"{self.model}@{self.kernel}" + (f",{label}" if label else "")


@dataclass(frozen=True)
class OracleMatrix:
    kernels: tuple[str, ...]
    models: tuple[str, ...]
    params: tuple[tuple[str, ...], ...]
    parallel: int = 2

    def hosts(self) -> list[OracleHost]:
        return [OracleHost(m, k, p) for k in self.kernels for m in self.models for p in self.params]


def load_matrix(path: Path | None = None) -> OracleMatrix:
    try:
        text = path.read_text() if path else resources.files("rig.emulate").joinpath("data/oracle.toml").read_text()
        d = tomllib.loads(text)
        return OracleMatrix(
            kernels=tuple(str(k) for k in d["kernels"]),
            models=tuple(str(m) for m in d["models"]),
            params=tuple(tuple(str(x) for x in p) for p in d["params"]),
            parallel=int(d.get("parallel", 2)),
        )
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise OracleError(f"{path or 'rig/emulate/data/oracle.toml'}: bad oracle matrix: {e}") from e


@dataclass
class Captured:
    host: OracleHost
    profile: HostProfile | None
    path: Path | None
    seconds: float
    error: str | None = None


def _save(host: OracleHost, prof: HostProfile, series: str, out_dir: Path | None) -> Path | None:
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / host.file_name(series)
    prof.save(path)
    return path


def capture_group(hosts: list[OracleHost], out_dir: Path | None = None) -> list[Captured]:
    """Hosts sharing kernel and model: one L1 boot, then a module reload per further parameter set."""
    out: list[Captured] = []
    t0 = time.monotonic()
    first = hosts[0]
    try:
        with EmulatedHost(first.model, first.kernel, list(first.params), l2=False) as h:
            assert h.profile is not None and h._image is not None
            series = h._image.series
            prof = h.profile
            out.append(Captured(first, prof, _save(first, prof, series, out_dir), time.monotonic() - t0))
            for host in hosts[1:]:
                t1 = time.monotonic()
                try:
                    prof = h.reload(list(host.params))
                except RigError as e:
                    out.append(Captured(host, None, None, time.monotonic() - t1, str(e)))
                    continue
                out.append(Captured(host, prof, _save(host, prof, series, out_dir), time.monotonic() - t1))
    except RigError as e:
        done = {c.host for c in out}
        out += [Captured(x, None, None, time.monotonic() - t0, str(e)) for x in hosts if x not in done]
    return out


def capture_one(host: OracleHost, out_dir: Path | None = None) -> Captured:
    """One host, one fresh boot."""
    return capture_group([host], out_dir)[0]


def capture_matrix(hosts: Iterable[OracleHost], out_dir: Path | None = None, *, parallel: int = 2,
                   progress: Callable[[Captured], None] | None = None) -> list[Captured]:
    """Capture every host; each kernel × model boots once (``parallel`` L1s at a time), the
    parameter sets are module reloads in that L1.  Profiles are saved into ``out_dir``."""
    hosts = list(hosts)
    # fetch kernels and build images first, once each, so parallel boots do not race on the cache
    from ..images.l1 import l1_image_for

    for k in sorted({h.kernel for h in hosts}):
        l1_image_for(k, with_qemu=False)
    groups: dict[tuple[str, str], list[OracleHost]] = {}
    for h in hosts:
        groups.setdefault((h.kernel, h.model), []).append(h)
    out: list[Captured] = []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for caps in pool.map(lambda g: capture_group(g, out_dir), groups.values()):
            for c in caps:
                out.append(c)
                if progress:
                    progress(c)
    order = {h: i for i, h in enumerate(hosts)}
    return sorted(out, key=lambda c: order[c.host])


# ------------------------------------------------------------------ checking


@dataclass
class OracleResult:
    """Policy prediction vs measured KVM_GET_SUPPORTED_CPUID for one profile."""

    name: str
    policy: str
    words: int = 0
    bits: int = 0
    differences: list = field(default_factory=list)  # rig.policy.Difference
    known: list = field(default_factory=list)  # differences explained by known-differences data
    error: str | None = None
    #: the policy was imported for the profile's kernel series (False: another one stood in for it)
    exact: bool = True
    #: how the policy was chosen (rig.policy.store.PolicyChoice.why)
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.differences

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: {self.error}"
        approx = "" if self.exact else f" (APPROXIMATE: {self.why})"
        head = f"{self.name} [{self.policy}{approx}]: {self.words} words / {self.bits} bits compared, " \
               f"{len(self.differences)} mismatches" + (f", {len(self.known)} known" if self.known else "")
        return "\n  ".join([head, *(str(d) for d in self.differences)])


def count_compared(predicted: CpuidTable, measured: CpuidTable) -> tuple[int, int]:
    """(registers, bits) a comparison covers: every register of every leaf on either side."""
    keys = set(predicted.entries) | set(measured.entries)
    return 4 * len(keys), 128 * len(keys)


def check_profile(profile: HostProfile, name: str | None = None) -> OracleResult:
    """Predict KVM_GET_SUPPORTED_CPUID from ``profile`` with rig.policy and compare with what L1 measured.

    Same selection and comparison as ``rig policy check --profile``: the policy
    for the profile's kernel release, differences named by feature, those listed
    in rig/policy/data/known-differences.json (with their kernel source) kept
    apart as *known*.
    """
    from ..policy import check as policy_check
    from ..policy.store import resolve_policy

    name = name or profile.name or "?"
    measured = profile.kvm.supported
    if measured is None:
        return OracleResult(name, "-", error=f"profile has no measured KVM_GET_SUPPORTED_CPUID ({profile.kvm.error})")
    release = profile.kernel.release or ""
    try:
        choice = resolve_policy(release)
    except RigError as e:
        return OracleResult(name, "-", exact=False, why=str(e), error=f"no policy: {e}")
    policy = choice.policy
    try:
        res = policy_check.check(profile, policy)
    except RigError as e:
        return OracleResult(name, "-", error=f"policy model failed: {e}")
    words, bits = count_compared(res.prediction.table, measured)
    out = OracleResult(name, policy.label, words, bits, exact=choice.exact, why=choice.why)
    out.differences = res.unexplained
    out.known = [d for d, _k in res.known]
    return out

