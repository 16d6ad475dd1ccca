"""Bad input everywhere: property-based tests (Hypothesis) for every parser that reads user input.

Each parser gets structured-but-wrong inputs (mutations of real samples: the shipped matrices and known-issues file,
a real emulated-host profile, real probe and linux-guest transcripts, the shipped policies, a `cpuid -r` dump and
libvirt cputestdata) and random text/bytes. The property: a result or a RigError whose message is one line; through
the CLI (rig.cli.main in-process), exit status 0 or 2 with exactly one `rig: error:` line on stderr, no traceback,
and no partly written output file.

Inputs tried per parser are counted and printed in pytest's terminal summary (tests/conftest.py), with how many
were accepted (a result; exit 0/1) and how many broke the property;
RIG_FUZZ_EXAMPLES=N raises the number of examples per test (bench/bench_fuzz.py does).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.cli import main
from rig.errors import RigError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "unit" / "data"
PROFILE = DATA / "policy" / "oracle-profiles" / "EPYC-Rome@6.12.json"
POLICY_DATA = REPO / "rig" / "policy" / "data"
EXAMPLES = int(os.environ.get("RIG_FUZZ_EXAMPLES", "0"))


def fuzz(n: int):
    """n examples (RIG_FUZZ_EXAMPLES overrides); no deadline (the machine is shared and loaded). Under CI
    (CI set) the examples are derandomised: a landing never hinges on a lucky draw; developers' runs and
    bench/bench_fuzz.py keep exploring new inputs."""
    return settings(max_examples=EXAMPLES or n, deadline=None, database=None, print_blob=True,
                    derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


# -- samples ------------------------------------------------------------------------------------------------------

def _raw_rows() -> list[tuple[int, int, int, int, int, int]]:
    raw = json.loads(PROFILE.read_text())["raw"]["entries"]
    return [(int(r["leaf"], 16), r["subleaf"], *(int(r[x], 16) for x in ("eax", "ebx", "ecx", "edx"))) for r in raw]


def cpuid_r_samples() -> list[str]:
    """`cpuid -r` output of this machine (Debian's cpuid tool, when installed) and in the same layout, the raw
    table of the emulated EPYC-Rome profile."""
    rows = "".join(f"   0x{lf:08x} 0x{sl:02x}: eax=0x{a:08x} ebx=0x{b:08x} ecx=0x{c:08x} edx=0x{d:08x}\n"
                   for lf, sl, a, b, c, d in _raw_rows())
    out = [f"CPU 0:\n{rows}CPU 1:\n{rows}"]
    tool = shutil.which("cpuid")
    if tool is not None:
        out.append(subprocess.run([tool, "-r", "-1"], capture_output=True, text=True, check=True).stdout)
    return out


def _libvirt_dir() -> Path | None:
    d = Path(os.environ.get("RIG_LIBVIRT_DATA", REPO.parent / "shared" / "data" / "libvirt-cputestdata"))
    return d if d.is_dir() else None


def libvirt_xml_samples() -> list[str]:
    rows = "".join(f"  <cpuid eax_in='0x{lf:08x}' ecx_in='0x{sl:02x}' eax='0x{a:08x}' ebx='0x{b:08x}' "
                   f"ecx='0x{c:08x}' edx='0x{d:08x}'/>\n" for lf, sl, a, b, c, d in _raw_rows())
    out = [f"<!-- AMD EPYC-Rome Processor -->\n<cpudata arch='x86'>\n{rows}"
           f"  <msr index='0x10a' edx='0x00000000' eax='0x0000002e'/>\n</cpudata>\n"]
    d = _libvirt_dir()
    if d is not None:
        out += [(d / n).read_text() for n in ("x86_64-cpuid-EPYC-7713-64-Core.xml", "x86_64-cpuid-Core-i5-6600.xml")
                if (d / n).is_file()]
    return out


MATRICES = {p.name: p.read_text() for p in sorted((REPO / "matrices").glob("*.toml")) if p.name != "known-issues.toml"}
KNOWN_ISSUES = (REPO / "matrices" / "known-issues.toml").read_text()
PROBE_TRANSCRIPT = (DATA / "probe-bootsector-epyc-rome-tcg.txt").read_text()
LINUX_TRANSCRIPT = (DATA / "linux-6.1-epyc-rome-tcg.txt").read_text()
CPU_LINES = ["EPYC-Rome,-avx2", "Skylake-Server,+avx,-x2apic,pmu=off", "qemu64,+x2apic", "max,sse4.2=off",
             "EPYC-Milan-v2,x2apic=on,-svm", "host"]
KERNELS = ["6.12", "6.12.57", "7.3.4+deb13-cloud-amd64", "7.0-rc2", "6.16-tsa-prefix", "6.1"]
PARAMS = ["kvm_amd.nested=0", "kvm.enable_pmu=N", "kvm_amd.npt=0", "kvm_amd.vgif=1"]


# -- strategies ---------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=5)
toml_values = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=5)


def _nodes(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _nodes(v, (*path, i))


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _leaves(v)]
    return [tree]


_VOCABULARY: dict[int, list] = {}


def _vocabulary(sample) -> list:
    """The distinct leaf values of a sample (computed once per sample: the samples are module constants)."""
    if id(sample) not in _VOCABULARY:
        _VOCABULARY[id(sample)] = sorted({json.dumps(x) for x in _leaves(sample)})
    return _VOCABULARY[id(sample)]


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@st.composite
def mutated_tree(draw, sample, values):
    """1-4 edits of a parsed sample: a node replaced (by another leaf of the sample: same vocabulary, wrong
    place; or a random value), deleted, duplicated into a list, or a new key added."""
    tree = copy.deepcopy(sample)
    vocabulary = _vocabulary(sample)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _nodes(tree) if p]
        if not paths:
            return draw(values)
        path = draw(st.sampled_from(paths))
        parent, key = _get(tree, path[:-1]), path[-1]
        op = draw(st.sampled_from(["other-leaf", "random", "delete", "duplicate", "add-key"]))
        if op == "other-leaf":
            parent[key] = json.loads(draw(st.sampled_from(vocabulary)))
        elif op == "random":
            parent[key] = draw(values)
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "add-key" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=10))] = draw(values)
    return tree


@st.composite
def mutated_text(draw, sample: str):
    """1-3 edits of a text sample: a line deleted, duplicated, swapped or replaced, random text inserted,
    characters flipped, or the text truncated."""
    lines = sample.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert", "flip", "truncate"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "replace":
            lines[i] = draw(st.text(max_size=40))
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=40)))
        elif op == "flip" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(st.characters()) + lines[i][j + 1:]
        elif op == "truncate":
            text = "\n".join(lines)
            lines = text[:draw(st.integers(0, len(text)))].split("\n")
    return "\n".join(lines)


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_dumps(v, top: bool = True) -> str:
    """A small TOML writer for mutated samples: everything as inline tables and arrays."""
    if isinstance(v, dict):
        items = [f"{_toml_str(str(k))} = {toml_dumps(x, False)}" for k, x in v.items()]
        return "\n".join(items) + "\n" if top else "{ " + ", ".join(items) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_dumps(x, False) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    return _toml_str(str(v))


def text_inputs(samples: list[str], tree=None, values=None, dumps=None):
    """Mutated samples (text edits, and structured edits when the format has a tree), random text, random bytes.
    Yields bytes (what a file holds)."""
    parts = [st.sampled_from(samples).flatmap(mutated_text).map(lambda s: s.encode("utf-8", "surrogatepass")),
             st.text().map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=200)]
    if tree is not None:
        parts.insert(0, st.sampled_from([tree(s) for s in samples]).flatmap(
            lambda t: mutated_tree(t, values)).map(lambda t: dumps(t).encode("utf-8", "surrogatepass")))
    return st.one_of(*parts)


def reframe_probe(text: str) -> str:
    """Recompute each section's line count and CRC-32 (PROTOCOL.md), so that a mutation inside a section
    reaches the parser's checks of the content instead of failing the checksum."""
    out, count, crc, inside = [], 0, 0, False
    for line in text.split("\n"):
        m = re.match(r"END (\S+) \d+ [0-9a-fA-F]{8}$", line)
        if inside and m:
            out.append(f"END {m.group(1)} {count} {crc:08x}")
            inside = False
            continue
        if not inside and re.match(r"MODE \S+$", line):
            inside, count, crc = True, 0, 0
        if inside:
            crc = zlib.crc32((line + "\n").encode("latin-1", "replace"), crc)
            count += 1
        out.append(line)
    return "\n".join(out)


def reframe_linux(text: str) -> str:
    """Linux guest transcript: reframe the probe section's transcript, then every section's lines= and md5=."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = re.match(r"SECTION (\S+)$", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith(f"ENDSECTION {m.group(1)} ")), None)
        if j is None:
            out.extend(lines[i:])
            break
        body = lines[i + 1:j]
        if m.group(1) == "probe":
            body = reframe_probe("\n".join(body) + "\n").split("\n")[:-1]
        digest = hashlib.md5("".join(b + "\n" for b in body).encode("latin-1", "replace")).hexdigest()
        rc = re.search(r" rc=\d+$", lines[j])
        out += [lines[i], *body, f"ENDSECTION {m.group(1)} lines={len(body)} md5={digest}{rc.group(0) if rc else ''}"]
        i = j + 1
    return "\n".join(out)


def transcript_inputs(sample: str, reframe):
    mutated = st.just(sample).flatmap(mutated_text)
    return st.one_of(mutated.map(reframe), mutated, st.text(), st.binary(max_size=300).map(lambda b: b.decode("latin-1")))


# -- properties ---------------------------------------------------------------------------------------------------

def one_line(e: RigError) -> None:
    msg = str(e)
    assert msg and len(msg.splitlines()) == 1, f"{type(e).__name__} message is not one line: {msg!r}"


def parses_or_rig_error(tally, parser: str, fn, *args, **kwargs):
    """The parser's property; counts the input (and the failure, before re-raising it)."""
    row = tally.setdefault(parser, [0, 0, 0])
    row[0] += 1
    try:
        try:
            result = fn(*args, **kwargs)
        except RigError as e:
            one_line(e)
            return e
    except BaseException:
        row[2] += 1
        raise
    row[1] += 1
    return result


def cli_exits_cleanly(tally, parser: str, capsys, argv: list[str], out: Path | None = None, reload=None) -> int:
    """rig.cli.main(argv): 0 (or 1 where the command says "differences"), or 2 with one `rig: error:` line;
    an output file exists only complete (valid JSON), never partly written; no temporary file is left."""
    row = tally.setdefault(parser, [0, 0, 0])
    row[0] += 1
    try:
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        if code == 2:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("rig: error: "), f"exit 2 with stderr {err!r}"
        else:
            assert code in (0, 1), f"exit {code}, stderr {err!r}"
            assert "Traceback" not in err
        if out is not None:
            if code == 0:
                json.loads(out.read_text())
                if reload is not None:
                    reload(out)  # what the rig wrote, the rig reads back
            else:
                assert not out.exists(), f"exit {code} but {out} was written"
            assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == [], "temporary file left"
    except BaseException:
        row[2] += 1
        raise
    row[1] += code != 2
    return code


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("badinput")
    shutil.copyfile(REPO / "matrices" / "known-issues.toml", d / "known-issues.toml")  # the matrices name it
    return d


def _fresh_out(work: Path) -> Path:
    d = work / "out"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return d / "result.json"


# -- matrix TOML and known-issues files ---------------------------------------------------------------------------

@fuzz(40)
@given(text_inputs(list(MATRICES.values()), tomllib.loads, toml_values, toml_dumps))
def test_matrix_toml(fuzz_tally, work, data):
    from rig.matrix.load import load_matrix

    f = work / "matrix.toml"
    f.write_bytes(data)
    parses_or_rig_error(fuzz_tally, "matrix TOML (load_matrix)", load_matrix, f)


@fuzz(100)
@given(text_inputs([KNOWN_ISSUES], tomllib.loads, toml_values, toml_dumps))
def test_known_issues_toml(fuzz_tally, work, data):
    from rig.matrix.load import load_known_issues

    f = work / "known.toml"
    f.write_bytes(data)
    parses_or_rig_error(fuzz_tally, "known-issues TOML", load_known_issues, f)


@fuzz(4)
@given(text_inputs(list(MATRICES.values())[:1]))
def test_matrix_cli(fuzz_tally, work, capsys, data):
    """`rig run FILE --list` on broken files: one line, exit 2 (valid ones list their cases, exit 0)."""
    f = work / "cli-matrix.toml"
    f.write_bytes(data)
    try:
        tomllib.loads(data.decode())
        return  # parseable TOML could name QEMU versions or kernels to fetch; load_matrix is fuzzed above
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        pass
    assert cli_exits_cleanly(fuzz_tally, "matrix TOML (rig run --list)", capsys, ["run", str(f), "--list"]) == 2


# -- host profiles ------------------------------------------------------------------------------------------------

PROFILE_JSON = json.loads(PROFILE.read_text())


def _json_dumps(t) -> str:
    return json.dumps(t, indent=1)


@fuzz(80)
@given(text_inputs([PROFILE.read_text()], json.loads, json_values, _json_dumps))
def test_host_profile(fuzz_tally, work, data):
    from rig.host.profile import HostProfile

    f = work / "profile.json"
    f.write_bytes(data)
    parses_or_rig_error(fuzz_tally, "host profile (HostProfile.load)", HostProfile.load, f)


@fuzz(15)
@given(st.just(PROFILE_JSON).flatmap(lambda t: mutated_tree(t, json_values)))
def test_host_profile_cli(fuzz_tally, work, capsys, tree):
    """`rig host show` and `rig policy predict -o` read every part of a profile."""
    f = work / "cli-profile.json"
    f.write_text(json.dumps(tree))
    cli_exits_cleanly(fuzz_tally, "host profile (rig host show)", capsys, ["host", "show", str(f)])
    out = _fresh_out(work)
    cli_exits_cleanly(fuzz_tally, "host profile (rig policy predict -o)", capsys,
                      ["policy", "predict", "--profile", str(f), "--kernel", "6.12", "-o", str(out)], out)


# -- cpuid -r dumps and libvirt XML ------------------------------------------------------------------------------

CPUID_R = cpuid_r_samples()
LIBVIRT_XML = libvirt_xml_samples()


@fuzz(150)
@given(text_inputs(CPUID_R), st.integers(0, 2))
def test_cpuid_r_dump(fuzz_tally, data, cpu):
    from rig.cpuid.parse import parse_cpuid_r
    from rig.cpuid.table import CpuidTable

    t = parses_or_rig_error(fuzz_tally, "cpuid -r dump (parse_cpuid_r)", parse_cpuid_r,
                            data.decode("utf-8", "replace"), cpu=cpu)
    if isinstance(t, CpuidTable):
        assert CpuidTable.from_json(t.to_json()) == t  # every value a table can hold and write back


@st.composite
def mutated_xml(draw, sample: str):
    """Element edits of a <cpudata> file: an attribute dropped or given another value, an element dropped."""
    lines = sample.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        attrs = re.findall(r"(\w+)='([^']*)'", lines[i])
        op = draw(st.sampled_from(["drop-attr", "value", "drop-element", "rename"]))
        if op == "drop-element":
            del lines[i]
        elif op == "rename":
            lines[i] = lines[i].replace("cpuid", draw(st.sampled_from(["cpudata", "msr", "cpuid2", ""])), 1)
        elif attrs:
            name, value = draw(st.sampled_from(attrs))
            new = "" if op == "drop-attr" else f"{name}='{draw(st.sampled_from(['0x', '-1', '0x1ffffffff', 'zz', '']))}'"
            lines[i] = lines[i].replace(f"{name}='{value}'", new, 1)
        if not lines:
            break
    return "\n".join(lines)


@fuzz(100)
@given(st.one_of(st.sampled_from(LIBVIRT_XML).flatmap(mutated_xml).map(str.encode), text_inputs(LIBVIRT_XML)))
def test_libvirt_xml(fuzz_tally, work, data):
    from rig.host.importer import import_dump

    f = work / "x86_64-cpuid-Fuzz.xml"
    f.write_bytes(data)
    from rig.host.profile import HostProfile

    prof = parses_or_rig_error(fuzz_tally, "libvirt XML (import_dump)", import_dump, f, fmt="libvirt")
    if isinstance(prof, HostProfile):
        HostProfile.from_json(json.loads(prof.dumps()))  # the imported profile reads back


@fuzz(20)
@given(st.one_of(text_inputs(CPUID_R), st.sampled_from(LIBVIRT_XML).flatmap(mutated_xml).map(str.encode)))
def test_host_import_cli(fuzz_tally, work, capsys, data):
    """`rig host import DUMP -o OUT` (format detected from the content)."""
    f = work / "dump.txt"
    f.write_bytes(data)
    out = _fresh_out(work)
    from rig.host.profile import HostProfile

    cli_exits_cleanly(fuzz_tally, "cpuid -r / libvirt (rig host import -o)", capsys,
                      ["host", "import", str(f), "-o", str(out)], out, reload=HostProfile.load)


# -- probe and linux guest transcripts ---------------------------------------------------------------------------

@fuzz(150)
@given(transcript_inputs(PROBE_TRANSCRIPT, reframe_probe))
def test_probe_transcript(fuzz_tally, text):
    from rig.guest.protocol import parse_transcript

    parses_or_rig_error(fuzz_tally, "probe transcript", parse_transcript, text, case="fuzz")


@fuzz(100)
@given(transcript_inputs(LINUX_TRANSCRIPT, reframe_linux))
def test_linux_transcript(fuzz_tally, text):
    from rig.guest.linux import parse_linux_transcript

    parses_or_rig_error(fuzz_tally, "linux guest transcript", parse_linux_transcript, text, case="fuzz")


def test_reframed_samples_still_parse():
    """The strategies' reframing is right: applied to the untouched samples it changes nothing."""
    assert reframe_probe(PROBE_TRANSCRIPT) == PROBE_TRANSCRIPT
    assert reframe_linux(LINUX_TRANSCRIPT) == LINUX_TRANSCRIPT


# -- policy files -------------------------------------------------------------------------------------------------

POLICY_FILES = {n: json.loads((POLICY_DATA / n).read_text())
                for n in ("linux-6.12.json", "linux-7.3-tsa-prefix.json", "linux.overlay.json")}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("policies") / "data"
    shutil.copytree(POLICY_DATA, d)
    return d


@fuzz(20)
@given(st.sampled_from(sorted(POLICY_FILES)).flatmap(
    lambda n: st.tuples(st.just(n), mutated_tree(POLICY_FILES[n], json_values))))
def test_policy_files(fuzz_tally, work, policy_dir, capsys, monkeypatch, named):
    """A policy directory (in place of the shipped one) with one shipped file mutated: loading it, and `rig policy predict`
    with it, give a result or one line."""
    from rig.policy import store

    name, tree = named
    for n in POLICY_FILES:  # the others as shipped
        shutil.copyfile(POLICY_DATA / n, policy_dir / n)
    (policy_dir / name).write_text(json.dumps(tree))
    monkeypatch.setattr(store, "data_dir", lambda: policy_dir)
    store._load_entry.cache_clear()
    try:
        version = "7.3.4" if "tsa" in name else "6.12"
        parses_or_rig_error(fuzz_tally, "policy file (load_policy)", store.load_policy, version)
        store._load_entry.cache_clear()
        out = _fresh_out(work)
        cli_exits_cleanly(fuzz_tally, "policy file (rig policy predict -o)", capsys,
                          ["policy", "predict", "--profile", str(PROFILE), "--kernel", version, "-o", str(out)], out)
    finally:
        store._load_entry.cache_clear()


@fuzz(30)
@given(text_inputs([(POLICY_DATA / "linux-6.12.json").read_text()], json.loads, json_values, _json_dumps))
def test_policy_file_load(fuzz_tally, work, data):
    from rig.policy.store import load_file

    f = work / "linux-fuzz.json"
    f.write_bytes(data)
    parses_or_rig_error(fuzz_tally, "policy file (load_file)", load_file, f)


@fuzz(20)
@given(text_inputs([(POLICY_DATA / "known-differences.json").read_text()], json.loads, json_values, _json_dumps))
def test_known_differences_cli(fuzz_tally, work, capsys, data):
    """`rig policy check --known FILE` with a broken known-differences file: exit 0/1 or one line."""
    f = work / "known.json"
    f.write_bytes(data)
    cli_exits_cleanly(fuzz_tally, "known-differences (rig policy check --known)", capsys,
                      ["policy", "check", "--profile", str(PROFILE), "--known", str(f)])


# -- --kernel, --param and -cpu strings --------------------------------------------------------------------------

def near(samples: list[str]):
    """Samples with a few characters changed, and random text."""
    return st.one_of(st.sampled_from(samples).flatmap(mutated_text), st.text(max_size=30))


@fuzz(60)
@given(near(KERNELS))
def test_kernel_version_strings(fuzz_tally, text):
    from rig.policy.store import select

    parses_or_rig_error(fuzz_tally, "--kernel VER (policy select)", select, text)


@fuzz(15)
@given(near(KERNELS))
def test_kernel_cli(fuzz_tally, capsys, text):
    cli_exits_cleanly(fuzz_tally, "--kernel VER (rig policy show)", capsys, ["policy", "show", "--", text])


@fuzz(15)
@given(st.lists(near(PARAMS), min_size=1, max_size=3))
def test_param_cli(fuzz_tally, work, capsys, params):
    out = _fresh_out(work)
    cli_exits_cleanly(fuzz_tally, "--param M.P=V (rig policy predict -o)", capsys,
                      ["policy", "predict", "--profile", str(PROFILE), "--kernel", "6.12",
                       *(f"--param={p}" for p in params), "-o", str(out)], out)


@fuzz(200)
@given(near(CPU_LINES))
def test_cpu_line(fuzz_tally, text):
    from rig.qemu.cpuline import CpuLine

    r = parses_or_rig_error(fuzz_tally, "-cpu line (CpuLine.parse)", CpuLine.parse, text)
    if not isinstance(r, RigError):
        assert CpuLine.parse(str(r)) == r  # what it prints reads back the same


@pytest.fixture(scope="module")
def qemu_facts_ready():
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed (run scripts/setup.sh)")
    from rig.qemu.binaries import find_qemu, gather_facts

    gather_facts(find_qemu())  # once (cached): the examples below only predict


@fuzz(12)
@given(near(CPU_LINES))
def test_cpu_line_cli(fuzz_tally, qemu_facts_ready, capsys, text):
    """`rig qemu predict CPU`: the model layer on arbitrary -cpu lines (TCG: no guest started)."""
    cli_exits_cleanly(fuzz_tally, "-cpu line (rig qemu predict)", capsys, ["qemu", "predict", "--", text])


# -- -k and --shard selections, `rig diff` table references -----------------------------------------------------

K_EXPRS = ["EPYC and not kvm", "(q35 or pc) and tcg", "not (max or host)", "no-avx2"]


@fuzz(150)
@given(st.one_of(near(K_EXPRS), st.text(alphabet="() andortx", max_size=60)))
def test_k_expression(fuzz_tally, text):
    from rig.matrix.select import parse_k
    from rig.results import Case

    pred = parses_or_rig_error(fuzz_tally, "-k EXPR (parse_k)", parse_k, text)
    if not isinstance(pred, RigError):
        assert pred(Case("native", "system", "tcg", "q35", "EPYC-Rome", "no-avx2", ("-avx2",))) in (True, False)


@fuzz(100)
@given(near(["1/4", "2/2", "10/16"]))
def test_shard(fuzz_tally, text):
    from rig.matrix.select import parse_shard

    parses_or_rig_error(fuzz_tally, "--shard I/N (parse_shard)", parse_shard, text)


@fuzz(25)
@given(st.one_of(text_inputs(CPUID_R[:1] + LIBVIRT_XML[:1]), st.just(PROFILE_JSON).flatmap(
    lambda t: mutated_tree(t, json_values)).map(lambda t: json.dumps(t).encode())),
    st.sampled_from(["", ":raw", ":supported", ":emulated", ":nonsense"]))
def test_diff_cli(fuzz_tally, work, capsys, data, layer):
    """`rig diff A B`: each side a profile layer, a table JSON, `cpuid -r` text or libvirt XML."""
    f = work / "diff-a"
    f.write_bytes(data)
    cli_exits_cleanly(fuzz_tally, "table reference (rig diff)", capsys, ["diff", f"{f}{layer}", f"{PROFILE}:raw"])


# -- emulated hosts: `emulated:MODEL@KERNEL,param=value` (matrix hosts) and --kvm-param K=V ----------------------

@fuzz(150)
@given(near(["emulated:EPYC-Rome@6.12", "emulated:EPYC-Milan@7.3,npt=0,nested=0", "EPYC@7.x,kvm.enable_pmu=1"]))
def test_emulated_host_spec(fuzz_tally, text):
    from rig.emulate.host import HostSpec, parse_host_spec

    spec = parses_or_rig_error(fuzz_tally, "emulated:MODEL@KERNEL (parse_host_spec)", parse_host_spec, text)
    if isinstance(spec, HostSpec):
        assert parse_host_spec(str(spec)) == spec  # the label it prints (run reports, case ids) reads back


@fuzz(100)
@given(st.lists(near(["npt=0", "kvm_amd.nested=0", "kvm.enable_pmu=N"]), max_size=3))
def test_kvm_params(fuzz_tally, items):
    from rig.emulate.host import parse_params

    parses_or_rig_error(fuzz_tally, "--kvm-param K=V (parse_params)", parse_params, items)


# -- the crashes these properties found, kept as examples ----------------------------------------------------------

@pytest.mark.parametrize("argv_of, content, message", [
    (lambda f: ["run", str(f), "--list"], b"\x80", "not UTF-8 text"),
    (lambda f: ["host", "show", str(f)], b"\x80", "not UTF-8 text"),
    (lambda f: ["host", "show", str(f)],
     json.dumps({**PROFILE_JSON, "kernel": {"flags": ["fpu", ["x"]]}}).encode(), "kernel.flags: expected a list of strings"),
    (lambda f: ["host", "show", str(f)], json.dumps({**PROFILE_JSON, "missing": 5}).encode(), "missing: expected a list"),
    (lambda f: ["host", "import", str(f), "-o", str(f.with_suffix(".out"))],
     LIBVIRT_XML[0].replace("<msr index='0x10a' ", "<msr ").encode(), "<msr> element 0 has no 'index' attribute"),
    (lambda f: ["host", "import", str(f), "-o", str(f.with_suffix(".out"))],
     LIBVIRT_XML[0].replace("eax='0x0000000d'", "eax='-1'", 1).encode(), "'-1' is not a hexadecimal number"),
    (lambda f: ["host", "import", str(f), "-o", str(f.with_suffix(".out"))],
     CPUID_R[0].replace("eax=0x0000000d", "eax=0x1ffffffff", 1).encode(), "out of 32-bit range"),
    (lambda f: ["policy", "check", "--profile", str(PROFILE), "--known", str(f)],
     b'{"format": "rig-kvm-known-differences/1", "entries": "x"}', "'entries' must be a list"),
    (lambda f: ["policy", "predict", "--profile", str(PROFILE), "--kernel", "6.12", "--param", "=\nkvm_amd.x=0"],
     b"", "--param '=\\nkvm_amd.x=0': name the module"),
], ids=["matrix-not-utf8", "profile-not-utf8", "profile-flag-not-string", "profile-missing-not-list",
        "libvirt-msr-without-index", "libvirt-negative-register", "cpuid-r-33-bit-register", "known-entries-not-list",
        "param-with-newline"])
def test_found_crashes_are_one_line_errors(tmp_path, capsys, argv_of, content, message):
    f = tmp_path / "input"
    f.write_bytes(content)
    assert main(argv_of(f)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("rig: error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]  # no output file


@pytest.mark.parametrize("change, message", [
    ({"variant_of": "7.3-tsa-prefix"}, "does not name an imported policy"),  # itself: looped for ever
    ({"range": ["6.16"]}, "variant 'range' must be [FIRST, LAST]"),
    ({"set": {"leaves": {"max_basic": "0x1f"}}}, "leaves.max_basic must be a 32-bit integer"),
])
def test_found_policy_variant_crashes(tmp_path, monkeypatch, capsys, change, message):
    from rig.policy import store

    d = tmp_path / "data"
    shutil.copytree(POLICY_DATA, d)
    variant = d / "linux-7.3-tsa-prefix.json"
    variant.write_text(json.dumps({**json.loads(variant.read_text()), **change}))
    monkeypatch.setattr(store, "data_dir", lambda: d)
    store._load_entry.cache_clear()
    try:
        assert main(["policy", "show", "7.3-tsa-prefix"]) == 2
    finally:
        store._load_entry.cache_clear()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err


def test_k_nesting_is_bounded():
    """5000 parentheses overflowed Python's stack (RecursionError); 5000 `not`s are a loop, not recursion."""
    from rig.matrix.select import SelectError, parse_k
    from rig.results import Case

    with pytest.raises(SelectError, match="nested too deeply"):
        parse_k("(" * 5000 + "x" + ")" * 5000)
    case = Case("native", "system", "tcg", "q35", "EPYC-Rome")
    assert parse_k("not " * 5000 + "tcg")(case) is True and parse_k("not " * 5001 + "tcg")(case) is False
    assert parse_k("(" * 100 + "tcg" + ")" * 100)(case) is True


def test_cpu_line_underscore_name_is_refused_not_misread():
    """Found by test_cpu_line: `_x=1` was normalised to `-x=1`, which reads back as a `-x` flag."""
    from rig.qemu.cpuline import CpuLine, CpuLineError

    for text in ("qemu64,_=1", "qemu64, _x"):
        with pytest.raises(CpuLineError, match="starts with '_'"):
            CpuLine.parse(text)
    assert str(CpuLine.parse("qemu64,sse4_1=off")) == "qemu64,sse4-1=off"
