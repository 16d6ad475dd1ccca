"""``rig repro CASE_ID``: a standalone reproducer of one case with plain QEMU.

Writes a directory with the probe image the case booted, ``repro.sh`` (runs
QEMU with the case's command line, the QMP queries the rig made, and prints
the CPUID rows of the leaves that differed) and ``README.txt`` saying what to
compare: for every differing bit, the predicted, configured and observed values
the rig saw and where to find them in the script's output.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..caseaxes import GuestKind, SimulatedHost
from ..errors import RigError
from ..images.cache import cache_root
from ..outfile import output_directory, write_output
from ..qemu.cmdline import DEBUG_EXIT_IOBASE, DEBUG_EXIT_IOSIZE, EXIT_PROBE_OK
from ..results import CaseResult
from .rundir import RunDir


class ReproError(RigError):
    pass


@dataclass(frozen=True)
class Repro:
    directory: Path
    script: Path
    readme: Path
    image: Path


def find_run(run: Path | None) -> RunDir:
    if run is None:
        latest = cache_root() / "runs" / "latest"
        if not latest.exists():
            raise ReproError("no run found (no --run given and no latest run in the cache)",
                             hint="pass --run RUN_DIR as printed by `rig run`")
        run = latest.resolve()
    return RunDir.open_existing(run)


def find_case(results: Sequence[CaseResult], case_id: str, where: Path) -> CaseResult:
    exact = [r for r in results if r.id == case_id]
    if exact:
        return exact[0]
    hits = [r for r in results if r.id.startswith(case_id) or r.case.digest == case_id]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ReproError(f"{where}: no case {case_id!r}", hint="case IDs are in the report and `rig report`")
    raise ReproError(f"{where}: {case_id!r} matches {len(hits)} cases ({', '.join(r.id for r in hits[:3])}, ...)",
                     hint="give more of the ID")


def _argv(run_path: Path, r: CaseResult) -> list[str]:
    p = run_path / r.artifacts / "cmdline.txt"
    try:
        return shlex.split(p.read_text())
    except OSError as e:
        raise ReproError(f"{p}: cannot read the case's command line ({e.strerror})") from None


def _rewrite(argv: list[str], image_name: str, initrd_name: str | None = None) -> list[str]:
    """The case's argv without the rig's QMP socket, serial file and -S, with the image (and initrd) next to the script."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-qmp", "-serial") and i + 1 < len(argv):
            i += 2
            continue
        if a == "-S":
            i += 1
            continue
        if a == "-kernel" and i + 1 < len(argv):
            out += [a, f"@HERE@/{image_name}"]
            i += 2
            continue
        if a == "-initrd" and initrd_name and i + 1 < len(argv):
            out += [a, f"@HERE@/{initrd_name}"]
            i += 2
            continue
        if a == "-drive" and i + 1 < len(argv):
            rest = ",".join(p for p in argv[i + 1].split(",") if not p.startswith("file="))
            out += [a, f"file=@HERE@/{image_name},{rest}".rstrip(",")]
            i += 2
            continue
        out.append(a)
        i += 1
    out[0] = "@QEMU@"
    return out


def _leaves(r: CaseResult) -> list[tuple[int, int]]:
    seen = dict.fromkeys((f.location.leaf, f.location.subleaf) for f in r.findings)
    return list(seen) or [(1, 0), (7, 0)]


def _script(r: CaseResult, argv: list[str], cpu_path: str, binary: str, expect: int = EXIT_PROBE_OK,
            what: str = "probe finished") -> str:
    def q(a: str) -> str:
        if a == "@QEMU@":
            return '"$QEMU"'
        return '"$HERE"'.join(shlex.quote(p) if p else "" for p in a.split("@HERE@"))

    cmd = " ".join(q(a) for a in argv)
    qmp = [
        {"execute": "qmp_capabilities"},
        {"execute": "query-cpus-fast"},
        {"execute": "qom-get", "arguments": {"path": cpu_path, "property": "feature-words"}},
        {"execute": "qom-get", "arguments": {"path": cpu_path, "property": "filtered-features"}},
        {"execute": "cont"},
    ]
    qmp_lines = "\n".join(json.dumps(c) for c in qmp)
    greps = "\n".join(f"grep -a '^C {lf:08x} {sub:08x} ' \"$HERE/serial.log\" || echo '  (leaf {lf:#x}.{sub} not reported)'"
                      for lf, sub in _leaves(r))
    return f"""#!/bin/sh
# Reproduces rig case {r.id} with plain QEMU (the rig is not needed).
#   -cpu {r.case.cpu_arg}  -machine {r.case.machine}  -accel {r.case.accel}
# QEMU is started paused; the QMP commands below read what QEMU configured
# (feature-words) and then let the probe run.  The probe writes its CPUID rows
# to serial.log and exits QEMU with status {EXIT_PROBE_OK} (isa-debug-exit at {DEBUG_EXIT_IOBASE:#x}, size {DEBUG_EXIT_IOSIZE}).
# Set QEMU=/path/to/qemu-system-x86_64 to try another build.  See README.txt.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
QEMU=${{QEMU:-{shlex.quote(binary)}}}
rm -f "$HERE/serial.log"
cat > "$HERE/qmp-commands.jsonl" <<'EOF'
{qmp_lines}
EOF
# QMP on stdin/stdout: QEMU answers the commands, then the guest runs (EOF on stdin does not stop it)
timeout {max(10, int(r.case.timeout) + 5)} {cmd} -S -qmp stdio -serial file:"$HERE/serial.log" \\
  < "$HERE/qmp-commands.jsonl" > "$HERE/qmp-replies.jsonl" 2> "$HERE/stderr.log"
status=$?
echo "QEMU exit status: $status (expected {expect}: {what}; 124: timed out)"
echo "--- configured (QMP feature-words): $HERE/qmp-replies.jsonl"
echo "--- observed (guest CPUID rows: C LEAF SUBLEAF EAX EBX ECX EDX, one section per CPU mode):"
{greps}
echo "--- stderr: $HERE/stderr.log"
"""


def _readme(r: CaseResult, run_path: Path) -> str:
    lines = [f"rig case {r.id}", f"  from run {run_path}", f"  outcome {r.outcome}, verdict {r.verdict}: {r.message}",
             f"  QEMU {r.qemu_version}, -cpu {r.case.cpu_arg}, -machine {r.case.machine}, -accel {r.case.accel}, host {r.case.host}",
             "", "Run ./repro.sh, then compare:"]
    if not r.findings:
        lines.append("  the rig found no differing bits; the rows printed by repro.sh should match")
        for key, (_p, c, o) in sorted(r.words.items()):
            if key.startswith(("0x1.0.", "0x7.0.")):
                lines.append(f"    {key}: configured {c}, observed {o}")
    for f in r.findings:
        obs = ", ".join(f"{m}={v}" for m, v in f.observed.items()) or "-"
        lines.append(f"  {f.location} {f.name}: predicted {f.predicted}, configured (QMP) {f.configured}, "
                     f"observed (guest) {obs}  -> {f.cls}" + (f" ({f.issue.id}: {f.issue.link})" if f.issue else ""))
    lines += ["",
              "Where to look:",
              "  configured: qmp-replies.jsonl, the qom-get feature-words reply: entries",
              "     {cpuid-input-eax, cpuid-input-ecx, cpuid-register, features} (features = the register's bits)",
              "  observed:   serial.log lines 'C LEAF SUBLEAF EAX EBX ECX EDX' (hex), after 'MODE <mode>'",
              "  predicted:  the rig's model; `rig explain` (if available) shows why",
              ""]
    if r.outcome not in ("ok", "simulated"):
        lines.insert(6, f"  the case ended as {r.outcome!r}: check the exit status and stderr.log first")
    return "\n".join(lines)


def write_repro(run: RunDir, case_id: str, out: Path | None = None) -> Repro:
    results = run.results()
    r = find_case(results, case_id, run.path)
    if isinstance(r.case.host_spec, SimulatedHost):
        raise ReproError(f"case {r.id} is simulated (no QEMU ran); nothing to reproduce with QEMU")
    argv = _argv(run.path, r)
    views_path = run.path / r.artifacts / "views.json"
    try:
        views = json.loads(views_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReproError(f"{views_path}: cannot read ({e})") from None
    guest = r.case.guest_spec.kind
    if guest == GuestKind.SSH:
        raise ReproError(f"case {r.id} boots the ssh guest's disk image, which a reproducer does not copy",
                         hint=f"boot the same guest with: rig ssh --cpu {shlex.quote(r.case.cpu_arg)} "
                              f"--machine {r.case.machine} --accel {r.case.accel}")
    initrd = None
    if guest == GuestKind.LINUX:  # the linux guest: the kernel and initramfs the command line names
        src = Path(argv[argv.index("-kernel") + 1]) if "-kernel" in argv else Path(views["image"])
        initrd = Path(argv[argv.index("-initrd") + 1]) if "-initrd" in argv else None
    else:
        src = Path(views["image"])
    for f in (src, initrd):
        if f is not None and not f.is_file():
            raise ReproError(f"{guest} image {f} is gone from the cache", hint="rerun the case (rig run -k ID) to rebuild it")
    cpu_path = "/machine/unattached/device[0]"
    qmp = run.path / r.artifacts / "qmp.jsonl"
    if qmp.exists():
        for line in qmp.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("execute") == "query-cpus-fast" and rec.get("return"):
                cpu_path = rec["return"][0]["qom-path"]
                break
    d = output_directory(out or Path.cwd() / f"repro-{r.id}")
    image = d / src.name
    shutil.copyfile(src, image)
    if initrd is not None:
        shutil.copyfile(initrd, d / initrd.name)
    script = d / "repro.sh"
    expect = (0, "the linux guest's init reported and ended QEMU") if guest == "linux" else (EXIT_PROBE_OK, "probe finished")
    write_output(script, _script(r, _rewrite(argv, src.name, initrd.name if initrd else None), cpu_path, argv[0], *expect))
    if script.is_file():  # not a device or FIFO the user put there
        script.chmod(0o755)
    readme = d / "README.txt"
    write_output(readme, _readme(r, run.path))
    return Repro(d, script, readme, image)
