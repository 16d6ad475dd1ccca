"""Import round trip: Debian's sources reproduce the committed policy files exactly.

The trees are fetched by the test itself (rig.policy.source: apt-get download
of linux-source-SERIES, or apt-get source --download-only of the source package
linux for 6.17/6.18, with the rig's private apt configurations; only the needed
files extracted, cached under $RIG_CACHE_DIR/kernel-source).  Every imported step's source line
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
from rig.policy.source import POLICY_SERIES, SOURCE_PACKAGE_SERIES, SourceError, fetch_source, fetch_source_package

pytestmark = [pytest.mark.slow, pytest.mark.oracle]

_OP_CALL = {"init": "kvm_cpu_cap_init", "mask": "kvm_cpu_cap_mask", "init_kvm_defined": "kvm_cpu_cap_init_kvm_defined",
            "set": "kvm_cpu_cap_set", "clear": "kvm_cpu_cap_clear", "check_and_set": "kvm_cpu_cap_check_and_set"}


@pytest.fixture(scope="module", params=[*POLICY_SERIES, *SOURCE_PACKAGE_SERIES])
def source(request):
    """The exact package version the committed policy was imported from (newer uploads need a re-import)."""
    committed = json.loads(resources.files("rig.policy").joinpath(f"data/linux-{request.param}.json").read_text())
    version = committed["source"]["package_version"]
    try:
        if request.param in SOURCE_PACKAGE_SERIES:
            s = fetch_source_package(SOURCE_PACKAGE_SERIES[request.param])
            assert s.package_version == version
            return s
        return fetch_source(request.param, version=version)
    except (SourceError, DebianError) as e:
        pytest.skip(f"linux-source-{request.param}={version} not fetchable here ({e}); if Debian superseded it, "
                    f"re-import: rig policy fetch {request.param} && rig policy import TREE -o "
                    f"rig/policy/data/linux-{request.param}.json")


@pytest.fixture(scope="module")
def imported(source):
    return import_tree(source.tree)


def _stable(text: str) -> str:
    """The policy text without the neighbour patch-check sentence, which names the debian tarballs the archive
    happens to serve today (a source package whose own tarball is not served); everything else must match."""
    d = json.loads(text)
    if "not checked directly" in d["source"].get("debian_patches", ""):
        d["source"]["debian_patches"] = "(served neighbours)"
    return json.dumps(d, indent=1)


def test_import_reproduces_committed_policy(source, imported):
    pol = imported
    committed = resources.files("rig.policy").joinpath(f"data/linux-{source.series}.json").read_text()
    assert pol.version == source.series
    assert pol.source["package_version"] == source.package_version
    assert _stable(pol.dumps()) == _stable(committed), (
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
    if "TSA_SQ_NO" not in cpuid_c:
        assert not tsa and source.series == "5.10"  # bullseye's 5.10.223 has no KVM TSA bits
        return
    assert tsa, "Debian's trees carry the TSA bits"
    if pol.era == "cap_init":
        assert ("SYNTHESIZED_F", "TSA_SQ_NO") in tsa[0].features
    else:
        assert any(s.op == "check_and_set" for s in tsa)


def test_cli_fetch_and_import_as_a_user_runs_them(source, tmp_path, capsys):
    from rig.cli import main

    if source.package == "linux":  # a source package: fetched by upstream version
        assert main(["policy", "fetch", source.package_version.split("-")[0]]) == 0
    else:
        assert main(["policy", "fetch", source.series, "--package-version", source.package_version]) == 0
    out = capsys.readouterr().out
    assert str(source.tree) in out and source.package_version in out
    dest = tmp_path / f"linux-{source.series}.json"
    assert main(["policy", "import", str(source.tree), "-o", str(dest)]) == 0
    committed = resources.files("rig.policy").joinpath(f"data/linux-{source.series}.json").read_text()
    assert _stable(dest.read_text()) == _stable(committed)


def test_source_package_provenance_is_recorded(source, imported):
    """6.17/6.18: the orig tarball's SHA256 (checked against the signed Sources index) and the patch check."""
    if source.package != "linux":
        pytest.skip("a linux-source package (Debian patches already applied)")
    src = imported.source
    assert src["orig"] == f"linux_{src['kernel_version']}.orig.tar.xz" and len(src["orig_sha256"]) == 64
    # own debian tarball checked, or (not served) every debian tarball the archive serves, none modifying them
    assert "debian/patches" in src["debian_patches"] or "modify none of the imported files" in src["debian_patches"]
    assert (source.tree / "Makefile").exists()


def test_debian_patch_check_on_a_real_debian_tarball(tmp_path):
    """The archive serves linux 6.16.3-1~bpo13+1's debian.tar.xz (not its orig tarball): its 78-patch series
    modifies none of the importer's KVM/CPU files, and version.patch does modify the top Makefile."""
    from rig.policy.source import patches_touching, source_archive

    try:
        got = source_archive().source_files("linux", "6.16.3-1~bpo13+1", dest=tmp_path)
    except DebianError as e:
        pytest.skip(f"linux 6.16.3-1~bpo13+1 not listed here: {e}")
    sha, path = got["linux_6.16.3-1~bpo13+1.debian.tar.xz"]
    if path is None:
        pytest.skip("the archive does not serve linux_6.16.3-1~bpo13+1.debian.tar.xz")
    hits, n = patches_touching(path)
    assert n > 50 and hits == []
    assert "debian/version.patch" in patches_touching(path, ("Makefile",))[0]


def test_import_from_git_revisions_without_checkout(tmp_path, capsys):
    """Two real trees (Debian's 6.17.8 and 6.18.15 sources) committed as tags v6.17.8 / v6.18.15 of a git repo whose
    work tree then holds neither: `rig policy import REPO --rev TAG` reproduces each committed policy byte for byte
    and leaves the work tree, index and HEAD as they were."""
    import shutil
    import subprocess

    from rig.cli import main

    try:
        trees = {v: fetch_source_package(v) for v in ("6.17.8", "6.18.15")}
    except (SourceError, DebianError) as e:
        pytest.skip(f"Debian source packages not fetchable here: {e}")
    repo = tmp_path / "linux"
    repo.mkdir()

    def git(*a):
        return subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    for v, s in trees.items():
        for p in list(repo.iterdir()):
            if p.name != ".git":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        shutil.copytree(s.tree, repo, dirs_exist_ok=True)
        git("add", "-A")
        git("commit", "-q", "-m", v)
        git("tag", f"v{v}")
    (repo / "arch/x86/kvm/cpuid.c").write_text("local edit, not committed\n")  # the work tree must not be read
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    for v in trees:
        series = ".".join(v.split(".")[:2])
        out = tmp_path / f"linux-{series}.json"
        assert main(["policy", "import", str(repo), "--rev", f"v{v}", "-o", str(out)]) == 0
        got = json.loads(out.read_text())
        committed = json.loads(resources.files("rig.policy").joinpath(f"data/linux-{series}.json").read_text())
        assert got["source"]["git_rev"] == f"v{v}" and len(got["source"]["git_commit"]) == 40
        for k in ("package", "package_version", "suite", "kind", "orig", "orig_sha256", "debian_tar", "debian_patches",
                  "git_rev", "git_commit"):
            got["source"].pop(k, None)
            committed["source"].pop(k, None)
        assert got == committed, v
    assert git("rev-parse", "HEAD") == head and git("status", "--porcelain") == status
    capsys.readouterr()
    assert main(["policy", "import", str(repo), "--rev", "v9.99"]) == 2
    assert "no revision 'v9.99'" in capsys.readouterr().err


def test_policy_get_as_a_user_runs_it(tmp_path, monkeypatch, capsys):
    """`rig policy get`: a shipped series needs nothing; a series Debian has no source of (6.14) is an error naming
    the git import that gets it; nothing is written to the user store in either case."""
    from rig.cli import main

    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))
    assert main(["policy", "get", "6.18.15"]) == 0
    assert "linux-6.18 is already shipped" in capsys.readouterr().out
    rc = main(["policy", "get", "6.14"])
    err = capsys.readouterr().err
    if "network" in err or "cannot look up" in err:
        pytest.skip(f"Debian archive not reachable: {err.strip()}")
    assert rc == 2 and "rig policy import KERNEL_TREE --rev v6.14 --store" in err
    assert not (tmp_path / "policies").exists()


def test_policy_get_imports_into_the_user_store(tmp_path, monkeypatch, capsys):
    """The success path of `rig policy get`, on a rig whose shipped set lacks 6.19: Debian's source package linux
    6.19.11 is fetched and imported into the user store, and `policy check --kernel 6.19.11` then uses it exactly."""
    import shutil

    from rig.cli import main
    from rig.policy import getpolicy, store

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("linux.overlay.json", "linux-7.3.json"):
        shutil.copy(store.data_dir() / name, shipped / name)
    real_shipped = store.data_dir()
    monkeypatch.setattr(store, "data_dir", lambda: shipped)
    monkeypatch.setattr(getpolicy, "data_dir", lambda: shipped)
    monkeypatch.setattr(store, "user_dir", lambda: tmp_path / "user")
    monkeypatch.setattr(getpolicy, "user_dir", lambda: tmp_path / "user")
    try:
        rc = main(["policy", "get", "6.19"])
    except (SourceError, DebianError) as e:
        pytest.skip(f"Debian's 6.19 source not fetchable here: {e}")
    out, err = capsys.readouterr()
    assert rc == 0 and "into the user store" in out and "rig policy get: importing linux 6.19.11" in err
    got = (tmp_path / "user" / "linux-6.19.json").read_text()
    assert _stable(got) == _stable((real_shipped / "linux-6.19.json").read_text())
    ch = store.resolve_policy("6.19.11+deb13-cloud-amd64")
    assert ch.exact and ch.entry.store == "user" and ch.policy.synthesized == "prefix"
