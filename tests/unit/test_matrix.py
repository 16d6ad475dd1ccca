"""Matrix files: loading (with clear errors), expansion (generators, all/all-versions), selection, case IDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.matrix.expand import expand
from rig.matrix.load import MatrixError, load_matrix
from rig.matrix.qemu_source import QemuModels
from rig.matrix.select import SelectError, parse_k, parse_shard, select
from rig.results import Case

REPO = Path(__file__).resolve().parents[2]


class FakeBinary:
    path = Path("/fake/qemu-system-x86_64")


def fake_models() -> QemuModels:
    # shapes as query-cpu-definitions reports them for QEMU 7.2 (alias-of names the versioned model)
    data = {
        "version": "7.2.0",
        "models": {
            "qemu64": {"alias_of": "qemu64-v1", "features": ["sse2", "lm"]},
            "qemu64-v1": {"alias_of": None, "features": ["sse2", "lm"]},
            "EPYC-Rome": {"alias_of": "EPYC-Rome-v1", "features": ["avx2", "sha-ni", "sse2"]},
            "EPYC-Rome-v1": {"alias_of": None, "features": ["avx2", "sha-ni", "sse2"]},
            "EPYC-Rome-v2": {"alias_of": None, "features": ["avx2", "sha-ni", "sse2", "ibrs"]},
            "Broadwell": {"alias_of": "Broadwell-v1", "features": ["avx2"]},
            "Broadwell-IBRS": {"alias_of": "Broadwell-v3", "features": ["avx2", "spec-ctrl"]},
            "Broadwell-v1": {"alias_of": None, "features": ["avx2"]},
            "Broadwell-v3": {"alias_of": None, "features": ["avx2", "spec-ctrl"]},
        },
    }
    return QemuModels(FakeBinary(), data)  # type: ignore[arg-type]


def source(_spec: str) -> QemuModels:
    return fake_models()


def write(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_matrices_load():
    shipped = sorted(p.name for p in (REPO / "matrices").glob("*.toml") if p.name != "known-issues.toml")
    assert {"smoke.toml", "nightly.toml", "nightly-qemu10.toml"} <= set(shipped)
    for name in shipped:
        m = load_matrix(REPO / "matrices" / name)
        assert m.groups and m.name == name.removesuffix(".toml")
        assert m.known_issue_files and all(f.exists() for f in m.known_issue_files)


def test_explicit_variants_cross_product(tmp_path):
    p = write(tmp_path, """
[defaults]
accels = ["tcg"]
[[group]]
name = "g"
models = ["qemu64", "EPYC-Rome"]
machines = ["microvm", "q35"]
variants = [ { name = "default" }, { name = "no-avx2", flags = ["-avx2"] }, "+x2apic,-pni" ]
""")
    cases = expand(load_matrix(p), source)
    assert len(cases) == 2 * 2 * 3
    c = next(c for c in cases if c.variant == "no-avx2" and c.model == "EPYC-Rome" and c.machine == "q35")
    assert c.cpu_arg == "EPYC-Rome,-avx2"
    assert any(c.flags == ("+x2apic", "-pni") for c in cases)
    assert len({c.id for c in cases}) == len(cases)


def test_generators(tmp_path):
    p = write(tmp_path, """
[[group]]
models = ["EPYC-Rome"]
variants = [ { name = "default" }, { generate = "model-features-off", skip = ["sse2"] } ]
[[group]]
name = "on"
models = ["qemu64"]
variants = [ { generate = "catalogue-features-on" } ]
""")
    cases = expand(load_matrix(p), source)
    off = [c for c in cases if c.model == "EPYC-Rome"]
    assert sorted(c.flags for c in off) == [(), ("avx2=off",), ("sha-ni=off",)]
    on = [c for c in cases if c.model == "qemu64"]
    flags = {c.flags[0] for c in on}
    assert "avx2=on" in flags and "sse2=on" not in flags and "lm=on" not in flags  # model has sse2, lm already
    assert all(c.variant.startswith("with-") for c in on)


def test_all_and_all_versions():
    m = fake_models()
    assert m.all_models(versions=False) == ["Broadwell", "EPYC-Rome", "qemu64"]  # Broadwell-IBRS is an alias
    assert m.all_models(versions=True) == ["Broadwell-v1", "Broadwell-v3", "EPYC-Rome-v1", "EPYC-Rome-v2", "qemu64-v1"]


def test_unknown_model_names_the_file_and_key(tmp_path):
    p = write(tmp_path, '[[group]]\nmodels = ["qemu64", "Skylake-Srvr"]\n')
    with pytest.raises(MatrixError, match=r"m.toml: group\[0\]\.models\[1\]: 'Skylake-Srvr' is not a CPU model"):
        expand(load_matrix(p), source)


@pytest.mark.parametrize("body, msg", [
    ('[[group]]\nmodels = ["qemu64"]\naccels = ["kv"]\n', r"group\[0\]\.accels\[0\]: 'kv' is not a accelerator"),
    ('[[group]]\nmodels = ["qemu64"]\nvariants = [{ flags = ["avx2"] }]\n', r"variants\[0\]\.flags\[0\]: 'avx2' is not a valid flag"),
    ('[[group]]\nmodels = ["qemu64"]\nvariants = [{ generate = "each" }]\n', r"'each' is not a generator"),
    ('[[group]]\nmodels = ["qemu64"]\nhosts = ["emulated:EPYC"]\n', r"hosts\[0\]: 'emulated:EPYC' is not a valid host"),
    ('[[group]]\nmodels = ["qemu64"]\ntimeout = -1\n', r"timeout: expected a positive number"),
    ('[[group]]\nmodel = ["qemu64"]\n', r"group\[0\]\.model: unknown key"),
    ('[matrix]\nname = "x"\n', r"group: missing"),
    ('[[group]\n', r"not valid TOML"),
    ('[matrix]\nknown_issues = ["nope.toml"]\n[[group]]\nmodels = ["qemu64"]\n', r"nope.toml: cannot read"),
])
def test_malformed_matrices(tmp_path, body, msg):
    p = write(tmp_path, body)
    with pytest.raises(MatrixError, match=msg):
        load_matrix(p)


def test_known_issue_validation(tmp_path):
    write(tmp_path, '[[issue]]\nid = "a"\ntitle = "t"\nlink = "https://x"\n', "ki.toml")
    p = write(tmp_path, '[matrix]\nknown_issues = ["ki.toml"]\n[[group]]\nmodels = ["qemu64"]\n')
    with pytest.raises(MatrixError, match=r"ki.toml: issue\[0\]: matches everything"):
        load_matrix(p)
    write(tmp_path, '[[issue]]\nid = "a"\ntitle = "t"\nlink = "https://x"\noutcome = "crashed"\n', "ki.toml")
    with pytest.raises(MatrixError, match=r"'crashed' is not an outcome"):
        load_matrix(p)
    write(tmp_path, '[[issue]]\nid = "a"\ntitle = "t"\nlink = "https://x"\nfeatures = ["tsa-sq-no"]\nmodel = ["EPYC-*"]\n',
          "ki.toml")
    issue = load_matrix(p).known_issues[0]
    assert issue.features == ("tsa-sq-no",) and issue.match == (("model", ("EPYC-*",)),)


def test_exclude(tmp_path):
    p = write(tmp_path, """
[[group]]
models = ["qemu64", "EPYC-Rome"]
accels = ["tcg", "kvm"]
exclude = [ { model = "EPYC-*", accel = "kvm" } ]
""")
    cases = expand(load_matrix(p), source)
    assert sorted((c.model, c.accel) for c in cases) == [("EPYC-Rome", "tcg"), ("qemu64", "kvm"), ("qemu64", "tcg")]


def test_case_id_is_readable_and_stable():
    a = Case("native", "system", "tcg", "microvm", "EPYC-Rome", "no-avx2", ("-avx2",))
    b = Case("native", "system", "tcg", "microvm", "EPYC-Rome", "no-avx2", ("-avx2",), timeout=99, group="x")
    c = Case("native", "system", "tcg", "microvm", "EPYC-Rome", "no-avx2", ("avx2=off",))
    assert a.id.startswith("EPYC-Rome-no-avx2-microvm-tcg-")
    assert a.id == b.id  # timeout and group do not change what runs
    assert a.id != c.id  # the flags do
    assert Case.from_json(a.to_json()) == a
    e = Case("emulated:EPYC-Milan@6.12", "10.0", "kvm", "q35", "max")
    assert "emulated-EPYC-Milan_6.12" in e.id and "qemu10.0" in e.id


def test_k_expressions():
    cases = [Case("native", "system", acc, mach, model) for acc in ("tcg", "kvm") for mach in ("microvm", "q35")
             for model in ("qemu64", "EPYC-Rome")]
    pick = select(cases, k="epyc and not kvm")
    assert {(c.model, c.accel) for c in pick} == {("EPYC-Rome", "tcg")} and len(pick) == 2
    assert len(select(cases, k="(q35 or microvm) and qemu64")) == 4
    for bad in ("", "epyc and", "(epyc", "epyc )", "or tcg"):
        with pytest.raises(SelectError):
            parse_k(bad) if bad else select(cases, k=" ")


def test_shards_partition_the_cases():
    cases = [Case("native", "system", "tcg", "microvm", f"m{i}") for i in range(50)]
    parts = [select(cases, shard=(i, 3)) for i in (1, 2, 3)]
    ids = [c.id for p in parts for c in p]
    assert sorted(ids) == sorted(c.id for c in cases)  # every case exactly once
    assert all(parts)
    # a case stays in its shard when others are added
    more = cases + [Case("native", "system", "tcg", "q35", f"x{i}") for i in range(10)]
    assert {c.id for c in parts[0]} <= {c.id for c in select(more, shard=(1, 3))}
    for bad in ("0/3", "4/3", "1-3", "a/b"):
        with pytest.raises(SelectError):
            parse_shard(bad)


def test_a_flag_qemu_does_not_have_is_a_matrix_error_with_suggestions(tmp_path):
    data = {"version": "7.2.0", "models": {"qemu64": {"alias_of": None, "features": ["sse2"]}},
            "cpu_properties": ["avx", "avx2", "sse4.2", "sse4-2", "x2apic", "pni", "level"]}

    def src(_spec: str) -> QemuModels:
        return QemuModels(FakeBinary(), data)  # type: ignore[arg-type]

    ok = write(tmp_path, """
[[group]]
name = "g"
models = ["qemu64"]
variants = [ { name = "a", flags = ["+x2apic", "-pni", "sse4.2=off", "sse4_2=on"] } ]
""")
    assert len(expand(load_matrix(ok), src)) == 1
    bad = write(tmp_path, """
[[group]]
name = "g"
models = ["qemu64"]
variants = [ { name = "default" }, { name = "typo", flags = ["+x2apic", "+avx3"] } ]
""", "bad.toml")
    with pytest.raises(MatrixError, match=r"group\[0\]\.variants\[1\]\.flags\[1\]: '\+avx3'.*no CPU property 'avx3' "
                                          r"\(did you mean avx, avx2\?\)"):
        expand(load_matrix(bad), src)
    # without the property list (an old cache entry, a fake source) nothing is refused
    assert len(expand(load_matrix(bad), source)) == 2
