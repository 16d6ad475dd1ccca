"""`rig host emulate --kernel VER` against the Debian archive's real package lists (issue 12 item 4).

The series booted for real are covered by tests/oracle/test_emulated_policy.py (every series × 4 models);
here: what a request resolves to, and the error for a version Debian does not ship with KVM modules.
"""

from __future__ import annotations

import pytest

from rig.emulate import EmulatedHost, EmulateError
from rig.images.debian import DebianError
from rig.images.kernel import KernelError, resolve

pytestmark = pytest.mark.e2e

#: series Debian ships with KVM modules (design.md section 4) and the layout of each
SERIES = {"5.10": "single", "6.1": "single", "6.12": "single", "6.16": "single", "6.17": "single",
          "6.18": "single", "7.2": "split", "7.3": "split"}


@pytest.fixture(scope="module")
def archive_lists():
    try:
        return resolve("7.3")
    except (DebianError, KernelError) as e:
        pytest.skip(f"Debian package lists not reachable ({e})")


@pytest.mark.parametrize("series", sorted(SERIES))
def test_series_resolves_to_its_newest_release(archive_lists, series):
    c = resolve(series)
    assert c.release.startswith(series + ".") or c.release.startswith(series + "-")
    assert c.layout == SERIES[series]
    if SERIES[series] == "split":
        assert any(n.startswith("linux-modules-") for n, _v, _s in c.packages)


@pytest.mark.parametrize("version", ["6.19", "7.1", "6.14"])
def test_cli_rejects_a_kernel_without_kvm_modules_listing_what_exists(archive_lists, version, capsys):
    """6.19 and 7.1 are listed but their modules packages are gone; 6.14 never was in Debian."""
    from rig.cli import main

    assert main(["host", "emulate", "--cpu", "EPYC-Milan", "--kernel", version]) == 2
    err = capsys.readouterr().err
    assert f"matches {version!r}" in err
    for series in ("7.3 (", "6.18 (", "6.16 (", "5.10 ("):
        assert series in err


def test_kvmrun_machine_takes_host_only():
    """L2 without QEMU passes KVM's CPUID through as it is: there is no CPU model to choose."""
    h = EmulatedHost("EPYC-Milan", "7.3")
    with pytest.raises(EmulateError, match="kvmrun runs -cpu host only"):
        h.run_probe("EPYC-Milan", "kvmrun")
    with pytest.raises(EmulateError, match="kvmrun runs -cpu host only"):
        h.run_probe("host", "kvmrun", extra=("-smp", "2"))
