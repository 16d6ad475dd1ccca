"""Oracle: the KVM policy model against real KVM in emulated hosts.

For every host of the matrix (every Debian kernel series with KVM modules:
5.10, 6.1, 6.12, 6.16, 6.17, 6.18, 7.2, 7.3 × L1 models EPYC, EPYC-Rome,
EPYC-Milan, max × kvm_amd parameters default, npt=0, nested=0) the rig's
prediction from the captured L1 profile must equal L1's real
KVM_GET_SUPPORTED_CPUID on every register of every leaf.  Differences are
listed by feature name; the only ones accepted are those in the policy's
known-differences data (rig/policy/data/known-differences.json, each with its
kernel source reference).  A series with no policy imported for it is
skipped, saying which policy stood in: agreement of a stand-in proves nothing
about the series.

Independent of the model, each profile is also checked against facts from
the kernel source (arch/x86/kvm/svm/svm.c svm_set_cpu_caps: X86_FEATURE_SVM
only ``if (nested)``, X86_FEATURE_NPT only ``if (npt_enabled)``), which
proves the module parameters reached KVM.
"""

from __future__ import annotations

import pytest

from rig.emulate.oracle import check_profile, load_matrix

pytestmark = [pytest.mark.slow, pytest.mark.oracle]

HOSTS = [str(h) for h in load_matrix().hosts()]


def _captured(oracle_captures, host):
    c = oracle_captures[host]
    assert c.error is None, f"{host}: {c.error}"
    return c.profile


def _on(value: str) -> bool:
    return value.strip().upper() in ("Y", "1")


@pytest.mark.parametrize("host", HOSTS)
def test_capture_is_complete(oracle_captures, host):
    p = _captured(oracle_captures, host)
    series = oracle_captures[host].host.kernel
    assert p.source == "emulated" and p.kernel.release
    if series[0].isdigit() and series[-1].isdigit():
        assert p.kernel.release.startswith(series + ".") or p.kernel.release.startswith(series + "-")
    assert p.kvm.supported is not None, p.missing
    assert p.kvm.vendor_module == "kvm_amd" and "svm" in p.kernel.flags
    assert p.missing == []


@pytest.mark.parametrize("host", HOSTS)
def test_kvm_params_reach_kvm(oracle_captures, host):
    p = _captured(oracle_captures, host)
    params = p.kvm.params("kvm_amd")
    want = oracle_captures[host].host.param_map
    nested = _on(params["nested"])
    npt = _on(params["npt"])
    assert nested == (want.get("kvm_amd.nested", "1") != "0")
    assert npt == (want.get("kvm_amd.npt", "1") != "0")
    sup = p.kvm.supported
    assert sup.bit(0x80000001, 0, "ecx", 2) == int(nested)  # SVM
    assert (sup.bit(0x8000000A, 0, "edx", 0) or 0) == int(nested and npt)  # NPT (leaf only with nested)


@pytest.mark.parametrize("host", HOSTS)
def test_policy_prediction_equals_real_kvm(oracle_captures, host):
    p = _captured(oracle_captures, host)
    res = check_profile(p, host)
    if not res.exact:
        pytest.skip(f"no KVM policy imported for kernel {p.kernel.release} ({res.why}); "
                    + (res.error or f"stand-in result: {len(res.differences)} mismatches"))
    assert res.error is None, res.error
    assert res.words > 0 and res.bits == 32 * res.words
    assert res.ok, res.describe()


def test_oracle_detects_a_wrong_bit(oracle_captures):
    """The check can fail: flip one measured bit (AVX2, 7.0.EBX[5]) and it is reported by name."""
    import copy

    p = copy.deepcopy(_captured(oracle_captures, HOSTS[0]))
    ebx = p.kvm.supported.value(7, 0, "ebx")
    p.kvm.supported.set_reg(7, 0, "ebx", ebx ^ (1 << 5))
    res = check_profile(p, "flipped")
    assert not res.ok
    assert [(d.feature, str(d.location)) for d in res.differences] == [("AVX2", "0x7.0.EBX[5]")]


def test_reload_equals_fresh_boot(oracle_captures):
    """A parameter set captured by module reload (as the matrix does) equals a fresh L1 boot with it."""
    from rig.emulate.oracle import capture_one

    host = next(c.host for c in oracle_captures.values() if c.host.params)
    fresh = capture_one(host)
    assert fresh.error is None, fresh.error
    reloaded = _captured(oracle_captures, str(host))
    assert fresh.profile.kvm.supported_entries == reloaded.kvm.supported_entries
    assert fresh.profile.kvm.emulated_entries == reloaded.kvm.emulated_entries
    assert fresh.profile.kvm.modules == reloaded.kvm.modules
    assert fresh.profile.raw == reloaded.raw and fresh.profile.kernel.flags == reloaded.kernel.flags


@pytest.mark.parametrize("kernel", load_matrix().kernels)
def test_policy_check_cli_agrees_for_an_l1_profile_of_each_series(oracle_captures, kernel, tmp_path, capsys):
    """`rig policy check --profile L1PROFILE` as a user runs it: full agreement (exit 0) for each series."""
    from rig.cli import main
    from rig.policy.store import resolve_policy

    host = next(h for h in HOSTS if h == f"EPYC-Milan@{kernel}")
    p = _captured(oracle_captures, host)
    path = tmp_path / "l1.json"
    p.save(path)
    choice = resolve_policy(p.kernel.release)
    rc = main(["policy", "check", "--profile", str(path)])
    out = capsys.readouterr().out
    if not choice.exact:
        assert "APPROXIMATE" in out
        pytest.skip(f"no KVM policy imported for {p.kernel.release}: {choice.why}")
    assert rc == 0, out
    assert f"policy linux-{kernel} for kernel {p.kernel.release}" in out and "full agreement" in out
