"""Output files the user names (rig/outfile.py and every `-o`): devices and FIFOs are written in place and stay
what they are, `-` is standard output, a directory is refused with one line, a regular file is replaced atomically.

The device is a real character device made with mknod in a temporary directory, with /dev/null's numbers
(1, 3: Documentation/admin-guide/devices.txt), so writes to it are discarded like /dev/null's; the real
/dev/null is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rig.cli import main
from rig.host.profile import HostProfile
from rig.outfile import OutputError, output_directory, write_output

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def chardev(tmp_path) -> Path:
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod of a character device needs root (CAP_MKNOD)")
    return dev


def assert_chardev(dev: Path) -> None:
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode), f"{dev} is no longer a character device: mode {st.st_mode:o}"
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


@pytest.fixture
def fifo_reader(tmp_path):
    """A FIFO and a thread that reads everything written to it (started before the writer opens it)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()

    def result() -> bytes:
        t.join(timeout=30)
        assert not t.is_alive(), "nothing ever opened the FIFO for writing"
        return got[0]

    return fifo, result


@pytest.fixture(scope="module")
def dump(tmp_path_factory, request) -> Path:
    """A `cpuid -r` dump of this machine made with the Debian cpuid tool, else a libvirt cputestdata file."""
    cpuid = shutil.which("cpuid")
    if cpuid is not None:
        p = tmp_path_factory.mktemp("dump") / "this-host.txt"
        p.write_text(subprocess.run([cpuid, "-r", "-1"], capture_output=True, text=True, check=True).stdout)
        return p
    data = request.getfixturevalue("libvirt_data")  # skips with its reason when absent
    return data / "x86_64-cpuid-EPYC-7713-64-Core.xml"


@pytest.fixture(scope="module")
def profile(tmp_path_factory, dump) -> Path:
    p = tmp_path_factory.mktemp("profile") / "host.json"
    assert main(["host", "import", str(dump), "-o", str(p)]) == 0
    return p


def leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(x.name for x in d.iterdir() if x.name not in keep)


# -- the module itself --------------------------------------------------------------------------------------------

def test_new_file_is_created_with_umask_mode(tmp_path):
    target = tmp_path / "new.json"
    write_output(target, "hello\n")
    assert target.read_text() == "hello\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert leftovers(tmp_path, {"new.json"}) == []


def test_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path):
    target = tmp_path / "old.json"
    target.write_text("old contents, longer than the new ones\n")
    target.chmod(0o640)
    before = target.stat().st_ino
    # a reader holding the old file keeps seeing the old contents: the new file is a new inode renamed over it
    with open(target) as held:
        write_output(target, b"new\n")
        assert held.read() == "old contents, longer than the new ones\n"
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != before
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path, {"old.json"}) == []


def test_root_keeps_the_owner_of_a_replaced_file(tmp_path):
    """A root-run `rig host capture -o ~user/p.json` must not hand the user's file to root."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a file another owner")
    target = tmp_path / "user.json"
    target.write_text("old\n")
    os.chown(target, 4321, 4322)
    write_output(target, "new\n")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322) and target.read_text() == "new\n"


def test_symlink_to_regular_file_stays_a_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_output(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"


def test_character_device_is_written_in_place(chardev):
    write_output(chardev, b"x" * 100_000)
    assert_chardev(chardev)
    assert leftovers(chardev.parent, {"null"}) == []


def test_symlink_to_character_device_stays(chardev):
    link = chardev.parent / "out.json"
    link.symlink_to(chardev)
    write_output(link, "data\n")
    assert link.is_symlink()
    assert_chardev(chardev)


def test_fifo_reader_receives_the_bytes(fifo_reader):
    fifo, received = fifo_reader
    data = bytes(range(256)) * 1000  # more than a pipe buffer (64 KiB): several writes
    write_output(fifo, data)
    assert received() == data
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_dash_is_standard_output(capsysbinary):
    write_output("-", b"to stdout\n")
    assert capsysbinary.readouterr().out == b"to stdout\n"


def test_directory_is_refused(tmp_path):
    (tmp_path / "keep").write_text("x")
    with pytest.raises(OutputError, match="is a directory") as e:
        write_output(tmp_path, "data")
    assert "\n" not in str(e.value)
    assert leftovers(tmp_path, set()) == ["keep"]


def test_missing_directory_is_one_line_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_output(tmp_path / "no" / "such" / "f.json", "data")


def test_output_directory_refuses_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        output_directory(f)
    assert output_directory(tmp_path / "a" / "b").is_dir()


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """A real write failure (EFBIG under RLIMIT_FSIZE) midway: the old file is untouched, no temporary is left."""
    target = tmp_path / "t.json"
    target.write_text("old\n")
    code = (
        "import resource, signal, sys\n"
        "from rig.outfile import OutputError, write_output\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    write_output(sys.argv[1], b'y' * 100000)\n"
        "except OutputError as e:\n"
        "    print(e); sys.exit(2)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "write failed: File too large" in r.stdout
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path, {"t.json"}) == []


def test_profile_save_is_safe(chardev, profile):
    HostProfile.load(profile).save(chardev)
    assert_chardev(chardev)


# -- every command with -o ----------------------------------------------------------------------------------------

def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rig: error: "), err
    return lines[0]


def file_commands(dump: Path, profile: Path) -> dict[str, list[str]]:
    """Every command that writes one file with -o, except those that need a kernel tree or an emulated host
    (policy import: tests/oracle/test_policy_import.py; host emulate: tests/e2e/test_emulate.py)."""
    return {
        "host import": ["host", "import", str(dump)],
        "host capture": ["host", "capture"],
        "policy predict": ["policy", "predict", "--profile", str(profile), "--kernel", "6.12"],
    }


COMMANDS = ["host import", "host capture", "policy predict"]


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_into_character_device(command, chardev, dump, profile, capsys):
    assert main([*file_commands(dump, profile)[command], "-o", str(chardev)]) == 0
    assert_chardev(chardev)
    assert leftovers(chardev.parent, {"null"}) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_into_fifo(command, fifo_reader, dump, profile, capsys):
    fifo, received = fifo_reader
    assert main([*file_commands(dump, profile)[command], "-o", str(fifo)]) == 0
    data = json.loads(received())
    assert data["format"] == ("rig-cpuid/1" if command == "policy predict" else "rig-host-profile/1")


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_dash_is_standard_output(command, dump, profile, capsys):
    assert main([*file_commands(dump, profile)[command], "-o", "-"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # nothing but the JSON document on standard output
    assert data["format"] == ("rig-cpuid/1" if command == "policy predict" else "rig-host-profile/1")
    assert not (Path.cwd() / "-").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_directory_is_refused(command, tmp_path, dump, profile, capsys):
    assert main([*file_commands(dump, profile)[command], "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in one_line_error(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_regular_file_replaced(command, tmp_path, dump, profile, capsys):
    target = tmp_path / "out.json"
    target.write_text("previous\n")
    target.chmod(0o600)
    inode = target.stat().st_ino
    assert main([*file_commands(dump, profile)[command], "-o", str(target)]) == 0
    assert json.loads(target.read_text())["format"]
    assert target.stat().st_ino != inode and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(tmp_path, {"out.json"}) == []


def test_cli_report_out_with_device_named_like_a_report(tmp_path, chardev, capsys):
    """`rig report RUN --out DIR`: a device where report.json goes stays a device; a file as DIR is one line."""
    from rig.run.rundir import RunDir, RunInfo

    rd = RunDir.create(tmp_path / "run", "smoke")
    rd.write_info(RunInfo(matrix="m.toml", matrix_name="smoke", started_at="2026-12-02T00:00:00Z", argv=["rig"]))
    out = chardev.parent
    os.rename(chardev, out / "report.json")
    assert main(["report", str(rd.path), "--out", str(out)]) == 0
    assert_chardev(out / "report.json")
    assert (out / "junit.xml").is_file() and (out / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(rd.path), "--out", str(out / "junit.xml")]) == 2
    assert "exists and is not a directory" in one_line_error(capsys.readouterr().err)


def test_dev_stdout_appended_to_a_log_is_not_replaced(tmp_path, dump):
    """`-o /dev/stdout >>log`: written through the rig's descriptor 1 (opened for appending by the shell), so
    the log keeps its lines and its inode; the summary goes to standard error, as with `-o -`."""
    log = tmp_path / "log.txt"
    log.write_text("previous line\n")
    inode = log.stat().st_ino
    with open(log, "ab") as out:
        r = subprocess.run([sys.executable, "-m", "rig.cli", "host", "import", str(dump), "-o", "/dev/stdout"],
                           stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert "profile written to /dev/stdout" in r.stderr
    assert log.stat().st_ino == inode
    first, rest = log.read_text().split("\n", 1)
    assert first == "previous line" and json.loads(rest)["format"] == "rig-host-profile/1"
    assert leftovers(tmp_path, {"log.txt"}) == []
