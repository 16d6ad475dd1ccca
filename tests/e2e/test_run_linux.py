"""`rig run` with the linux guest: a real Debian kernel under real QEMU TCG, through the real run path.

The image is built by the rig's own code (``build_linux_image``: the kernel and busybox-static are
fetched with ``apt-get download`` into the cache the first time). References are independent of the
rig's comparison: QEMU's own QMP ``feature-words`` of the same process (kept in the case's
``qmp.jsonl``), the architectural position of AVX2 (CPUID.(EAX=7,ECX=0):EBX[5], Intel SDM vol. 2A),
and the guest kernel's own /proc/cpuinfo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.cpuid.table import CpuidTable
from rig.guest.quirks import mismatching_words
from rig.images.linux import build_linux_image

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MATRIX = """
[matrix]
name = "linux-run-test"
[defaults]
accels = ["tcg"]
guests = ["linux"]
machines = ["microvm"]
timeout = 60
[[group]]
name = "g"
models = ["EPYC-Rome", "Skylake-Server"]
variants = [ { name = "default" }, { name = "no-avx2", flags = ["-avx2"] } ]
exclude = [ { model = "Skylake-Server", variant = "no-avx2" }, { model = "EPYC-Rome", variant = "default" } ]
[[group]]
name = "kernel"
guests = ["linux@6.1"]
models = ["EPYC-Rome"]
"""
AVX2 = (7, 0, "ebx", 5)


def _rig(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory, qemu_binary):
    build_linux_image()  # the rig's own image path (cached after the first build)
    tmp = tmp_path_factory.mktemp("linuxrun")
    (tmp / "m.toml").write_text(MATRIX)
    p = _rig(["run", str(tmp / "m.toml"), "--out", str(tmp / "run"), "--jobs", "2", "--no-history"])
    results = {}
    for line in (tmp / "run" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        results[(r["case"]["model"], r["case"]["variant"] + ("@" + r["case"]["guest"] if "@" in r["case"]["guest"] else ""))] = r
    return p, tmp / "run", results


def _views(rundir: Path, r: dict) -> dict:
    return json.loads((rundir / r["artifacts"] / "views.json").read_text())


def _qmp_feature_words(rundir: Path, r: dict) -> CpuidTable:
    """QEMU's own qom-get feature-words reply from the case's QMP transcript (not the rig's parsed view)."""
    t = CpuidTable()
    for line in (rundir / r["artifacts"] / "qmp.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("execute") == "qom-get" and rec.get("arguments", {}).get("property") == "feature-words":
            for w in rec["return"]:
                t.set_reg(w["cpuid-input-eax"], w.get("cpuid-input-ecx", 0), w["cpuid-register"].lower(), w["features"])
            return t
    raise AssertionError("no feature-words reply in qmp.jsonl")


def test_run_succeeds_without_unexpected_findings(run):
    p, rundir, results = run
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "preparing the linux guest image" in p.stderr
    assert len(results) == 3
    for r in results.values():
        assert r["outcome"] == "ok", (r["id"], r["message"])
        assert r["verdict"] == "pass", (r["id"], r["unexpected"], [f["name"] for f in r["findings"]])
        assert r["case"]["guest"].partition("@")[0] == "linux"
        case = rundir / r["artifacts"]
        for name in ("cmdline.txt", "serial.log", "qmp.jsonl", "views.json"):
            assert (case / name).is_file(), name
        assert (case / "cmdline.txt").read_text().split()[0].endswith("qemu-system-x86_64")
        assert "RIGLINUX END" in (case / "serial.log").read_text()


def test_observed_user_table_equals_qmp_feature_words(run):
    _, rundir, results = run
    for r in results.values():
        v = _views(rundir, r)
        assert v["observed_mode"] == "user" and list(v["observed"]) == ["user"]
        user = CpuidTable.from_json(v["observed"]["user"])
        fw = _qmp_feature_words(rundir, r)
        assert len(fw) > 10
        # every feature word the guest's user mode reads is what QEMU configured (OSXSAVE/OSPKE aside:
        # the guest kernel set CR4.OSXSAVE/PKE, so they follow xsave/pku)
        assert [w.describe() for w in mismatching_words(user, fw)] == [], r["id"]
        assert user.bit(1, 0, "ecx", 27) == fw.bit(1, 0, "ecx", 26) == 1  # OSXSAVE follows XSAVE


def test_avx2_off_in_all_views_and_in_the_kernel(run):
    _, rundir, results = run
    # AVX2 on: Skylake-Server (Intel); off: EPYC-Rome,-avx2 (AMD; EPYC-Rome has AVX2 in QEMU's model)
    on, off = results[("Skylake-Server", "default")], results[("EPYC-Rome", "no-avx2")]
    leaf, sub, reg, bit = AVX2
    key = f"{leaf:#x}.{sub}.{reg}"
    for r, want in ((on, 1), (off, 0)):
        predicted, configured, observed = (int(x, 16) >> bit & 1 for x in r["words"][key])
        assert (predicted, configured, observed) == (want, want, want), (r["id"], r["words"][key])
        assert _qmp_feature_words(rundir, r).bit(leaf, sub, reg, bit) == want
        kernel = _views(rundir, r)["kernel"]
        assert ("avx2" in kernel["cpuinfo_flags"]) == bool(want)
        assert kernel["view"]["cpuid_only"] == [] and kernel["view"]["cpuinfo_only"] == []
        assert {"spectre_v1", "spectre_v2", "meltdown"} <= set(kernel["vulnerabilities"])
        assert kernel["release"].endswith("-cloud-amd64")


def test_no_image_and_no_network_is_a_clear_error(tmp_path, qemu_binary):
    """An empty cache and an unreachable archive (apt through a closed proxy port): the run stops before
    any case with an error naming the command that builds the image."""
    (tmp_path / "m.toml").write_text(MATRIX)
    (tmp_path / "apt.conf").write_text('Acquire::Retries "0";\nAcquire::http::Timeout "2";\n')
    off = {"RIG_CACHE_DIR": str(tmp_path / "cache"), "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "APT_CONFIG": str(tmp_path / "apt.conf")}
    p = _rig(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"), "--no-history"], env=off, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "rig: error: the linux guest image cannot be built" in p.stderr
    assert "rig images build linux" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists() or not (tmp_path / "run" / "results.jsonl").read_text()


def test_repro_of_a_linux_case_runs_plain_qemu(run, tmp_path):
    """`rig repro` copies the case's kernel and initramfs; its script boots them with plain QEMU and shows the
    guest's CPUID rows (7.0.EBX without AVX2), independently of the rig."""
    _, rundir, results = run
    r = results[("EPYC-Rome", "no-avx2")]
    p = _rig(["repro", r["id"], "--run", str(rundir), "-o", str(tmp_path / "repro")])
    assert p.returncode == 0, p.stderr
    names = {f.name for f in (tmp_path / "repro").iterdir()}
    assert {"repro.sh", "README.txt", "vmlinux", "initrd.img"} <= names
    s = subprocess.run(["sh", str(tmp_path / "repro" / "repro.sh")], capture_output=True, text=True, timeout=120)
    assert "QEMU exit status: 0 " in s.stdout, s.stdout + s.stderr
    row = next(ln for ln in s.stdout.splitlines() if ln.startswith("C 00000007 00000000 "))
    ebx = int(row.split()[4], 16)
    assert ebx >> AVX2[3] & 1 == 0
    assert ebx == int(r["words"]["0x7.0.ebx"][2], 16)


def test_kernel_is_selected_per_guest(run):
    """guests = ["linux@6.1"]: that case boots the Debian 6.1 kernel (the guest's own uname -r), the others the
    recipe's default; the ID says which."""
    _, rundir, results = run
    old = results[("EPYC-Rome", "default@linux@6.1")]
    assert "-linux_6.1-" in old["id"]
    assert _views(rundir, old)["kernel"]["release"].startswith("6.1.")
    assert old["verdict"] == "pass"
    default = _views(rundir, results[("Skylake-Server", "default")])["kernel"]["release"]
    assert default == build_linux_image().release  # the recipe's default kernel (cached by the fixture)


KVM_MATRIX = """
[matrix]
name = "linux-kvm-test"
[defaults]
accels = ["kvm"]
guests = ["linux"]
machines = ["microvm"]
timeout = 6
[[group]]
name = "g"
models = ["EPYC-Rome"]
"""


def test_linux_under_kvm_boots_or_times_out_with_the_reason(run, tmp_path):
    """Under this machine's /dev/kvm: a KVM that runs Linux guests gives a complete case; one that does not
    (PVM-style hosts hang Linux guests silently) gives outcome timeout with the reason in the message."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is absent or not accessible: KVM cases need a host with KVM")
    (tmp_path / "m.toml").write_text(KVM_MATRIX)
    p = _rig(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"), "--no-history"], timeout=120)
    (r,) = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    if r["outcome"] == "ok":
        assert p.returncode in (0, 1), p.stderr[-2000:]
    else:
        assert r["outcome"] == "timeout", (r["outcome"], r["message"])
        assert "Linux guests hang on KVM hosts that do not intercept CPUID" in r["message"]
        assert p.returncode == 1
