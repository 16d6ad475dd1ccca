"""Import round trip: Debian's linux-source packages reproduce the committed policy files exactly.

The trees are fetched by the test itself (rig.policy.source: apt-get download
with the rig's private apt configuration, only the needed files streamed out,
cached under $RIG_CACHE_DIR/kernel-source).  Every imported step's source line
is also checked against the tree: the cited line must hold the statement the
step was read from.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from rig.images.debian import DebianError
from rig.policy.importer import import_tree
from rig.policy.source import POLICY_SERIES, SourceError, fetch_source

pytestmark = [pytest.mark.slow, pytest.mark.oracle]

_OP_CALL = {"init": "kvm_cpu_cap_init", "mask": "kvm_cpu_cap_mask", "init_kvm_defined": "kvm_cpu_cap_init_kvm_defined",
            "set": "kvm_cpu_cap_set", "clear": "kvm_cpu_cap_clear", "check_and_set": "kvm_cpu_cap_check_and_set"}


@pytest.fixture(scope="module", params=POLICY_SERIES)
def source(request):
    """The exact package version the committed policy was imported from (newer uploads need a re-import)."""
    committed = json.loads(resources.files("rig.policy").joinpath(f"data/linux-{request.param}.json").read_text())
    version = committed["source"]["package_version"]
    try:
        return fetch_source(request.param, version=version)
    except (SourceError, DebianError) as e:
        pytest.skip(f"linux-source-{request.param}={version} not fetchable here ({e}); if Debian superseded it, "
                    f"re-import: rig policy fetch {request.param} && rig policy import TREE -o "
                    f"rig/policy/data/linux-{request.param}.json")


@pytest.fixture(scope="module")
def imported(source):
    return import_tree(source.tree)


def test_import_reproduces_committed_policy(source, imported):
    pol = imported
    committed = resources.files("rig.policy").joinpath(f"data/linux-{source.series}.json").read_text()
    assert pol.version == source.series
    assert pol.source["package_version"] == source.package_version
    assert pol.dumps() == committed, (
        f"rig/policy/data/linux-{source.series}.json is stale: regenerate with "
        f"`rig policy import {source.tree} -o rig/policy/data/linux-{source.series}.json`")


def test_every_step_cites_its_source_line(source, imported):
    pol = imported
    steps = list(pol.common) + [s for v in pol.vendors.values() for s in v]
    assert len(steps) > 40
    for s in steps:
        rel, line = s.src.rsplit(":", 1)
        text = (source.tree / rel).read_text(errors="replace").splitlines()[int(line) - 1]
        if s.op == "call":
            assert f"{s.function}(" in text, (s, text)
        elif s.op in ("set", "clear") and "kvm_cpu_caps[" in text:
            assert re.search(r"\|=|&=", text), (s, text)  # 6.1: kvm_cpu_caps[WORD] |= BIT(n)
        else:
            assert _OP_CALL[s.op] + "(" in text, (s, text)
            if s.feature and "_BIT" not in s.feature:
                assert f"X86_FEATURE_{s.feature}" in text, (s, text)


def test_macro_era_matches_the_tree(source, imported):
    pol = imported
    cpuid_c = (source.tree / "arch/x86/kvm/cpuid.c").read_text()
    assert (pol.era == "cap_init") == ("#define SYNTHESIZED_F" in cpuid_c or "#define PASSTHROUGH_F" in cpuid_c)
    # the TSA bits: SYNTHESIZED_F in the 6.14+ era, check_and_set backports in 6.1/6.12
    tsa = [s for s in pol.common if "TSA_SQ_NO" in (s.feature or "") or any(f == "TSA_SQ_NO" for _, f in s.features)]
    assert tsa, "Debian's trees carry the TSA bits"
    if pol.era == "cap_init":
        assert ("SYNTHESIZED_F", "TSA_SQ_NO") in tsa[0].features
    else:
        assert any(s.op == "check_and_set" for s in tsa)


def test_cli_fetch_and_import_as_a_user_runs_them(source, tmp_path, capsys):
    from rig.cli import main

    assert main(["policy", "fetch", source.series, "--package-version", source.package_version]) == 0
    out = capsys.readouterr().out
    assert str(source.tree) in out and source.package_version in out
    dest = tmp_path / f"linux-{source.series}.json"
    assert main(["policy", "import", str(source.tree), "-o", str(dest)]) == 0
    committed = resources.files("rig.policy").joinpath(f"data/linux-{source.series}.json").read_text()
    assert dest.read_text() == committed


@pytest.mark.parametrize("source", POLICY_SERIES[:1], indirect=True)  # the output path is the same for every series
def test_cli_import_into_character_device_and_stdout(source, tmp_path, capsys):
    """`rig policy import TREE -o DEV` writes into the device (it stays one); `-o -` prints the policy file."""
    import os
    import stat

    from rig.cli import main

    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers, in tmp_path
    except PermissionError:
        pytest.skip("mknod of a character device needs root (CAP_MKNOD)")
    assert main(["policy", "import", str(source.tree), "-o", str(dev)]) == 0
    assert stat.S_ISCHR(os.lstat(dev).st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null"]
    capsys.readouterr()
    assert main(["policy", "import", str(source.tree), "-o", "-"]) == 0
    committed = resources.files("rig.policy").joinpath(f"data/linux-{source.series}.json").read_text()
    assert capsys.readouterr().out == committed
