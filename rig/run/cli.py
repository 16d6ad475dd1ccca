"""``rig run``, ``rig report``, ``rig repro``, ``rig history``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..errors import RigError
from ..subcommands import positive_int

# The commands import their machinery when they run, so `rig --help` works even
# when an optional part (QEMU bindings, a model) is missing.




def cmd_run(args: argparse.Namespace) -> int:
    from ..matrix.expand import expand
    from ..matrix.load import load_matrix
    from ..matrix.select import parse_shard, select
    from ..report.summary import summarise
    from .driver import default_jobs, execute, finish, prepare

    if args.list:
        if args.matrix is None:
            raise RigError("--list needs a MATRIX")
        cases = select(expand(load_matrix(args.matrix)), k=args.k, shard=parse_shard(args.shard) if args.shard else None)
        for c in cases:
            print(f"{c.id}\t-cpu {c.cpu_arg} -M {c.machine} -accel {c.accel} host={c.host} qemu={c.qemu}")
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0
    plan = prepare(args.matrix, k=args.k, shard=args.shard, resume=args.resume, out=args.out, argv=sys.argv)
    jobs = args.jobs or plan.matrix.jobs or default_jobs()
    note = f", resuming: {plan.resumed} finished earlier" if args.resume else ""
    print(f"rig run: {plan.matrix.name}: {len(plan.cases)} cases, {jobs} jobs{note}; run directory {plan.rundir.path}",
          file=sys.stderr)
    results = execute(plan, jobs=jobs)
    done = finish(plan, results, history=False if args.no_history else args.history)
    s = summarise(results)
    args.tap_file = done.reports.tap
    print(f"rig run: {s.line()}")
    if done.history_diff is not None:
        d = done.history_diff
        print(f"history: against the previous run on this host: {len(d.bit_changes)} bits changed, "
              f"{len(d.new_findings)} new findings, {len(d.fixed_findings)} fixed, "
              f"{len(d.outcome_changes)} outcomes changed (details: rig history)")
    approx = sorted({a for r in results for a in r.approximations})
    for a in approx:  # one line per distinct approximation, with the cases it affects
        n = sum(a in r.approximations for r in results)
        print(f"APPROXIMATE ({n} case(s), verdict 'approximate'): {a}")
    print(f"report: {done.reports.html}")
    print(f"junit:  {done.reports.junit}")
    if done.unexpected:
        print(f"rig run: {done.unexpected} case(s) with unexpected findings; reproduce one with: "
              f"rig repro {next(r.id for r in results if r.verdict in ('fail', 'error'))} --run {plan.rundir.path}",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report.summary import summarise
    from ..report.write import write_reports
    from .rundir import RunDir

    rd = RunDir.open_existing(args.run_dir)
    results = rd.results()
    paths = write_reports(rd, results, out=args.out)
    args.tap_file = paths.tap
    print(summarise(results).line())
    for r in sorted(results, key=lambda r: r.id):
        if r.verdict in ("fail", "error") or args.verbose:
            print(f"  {r.verdict:8} {r.id}: {r.outcome}" + (f"; {'; '.join(r.unexpected)}" if r.unexpected else ""))
    print(f"report: {paths.html}\njson:   {paths.json}\njunit:  {paths.junit}\ntap:    {paths.tap}")
    if args.kcidb:
        from ..report.kcidb import run_document, write_kcidb

        write_kcidb(args.kcidb, run_document(rd.path, rd.read_info(), results))
        print(f"kcidb:  {args.kcidb}")
    return 0


def _tap(cmd):
    """``--tap``: the command's own lines go to stderr, then the run's TAP stream (results.tap) alone to stdout."""
    def run(args: argparse.Namespace) -> int:
        if not args.tap:
            return cmd(args)
        with contextlib.redirect_stdout(sys.stderr):
            rc = cmd(args)
        if getattr(args, "tap_file", None):
            sys.stdout.write(args.tap_file.read_text())
        return rc
    return run


def cmd_repro(args: argparse.Namespace) -> int:
    from .repro import find_run, write_repro

    rd = find_run(args.run)
    rp = write_repro(rd, args.case_id, args.out)
    print(f"reproducer: {rp.script}")
    print(f"probe image: {rp.image}")
    print(f"what to compare: {rp.readme}")
    print(rp.readme.read_text())
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from ..history.db import History, format_diff

    if args.html:
        from ..report.trends import write_trends

        if not write_trends(args.html, db=args.db, host=args.host, matrix=args.matrix):
            raise RigError("no runs recorded" + (f" for host {args.host}" if args.host else "")
                           + (f" of matrix {args.matrix}" if args.matrix else ""),
                           hint="`rig run MATRIX` records every finished run")
        print(f"trends: {args.html}")
        return 0

    with History(args.db) as db:
        if args.nightly:
            nightly = db.latest_nightly() if args.nightly == "latest" else args.nightly
            rows = db.nightly_runs(nightly) if nightly else []
            if args.host:
                rows = [r for r in rows if r.host_key.startswith(args.host)]
            if not rows:
                raise RigError(f"{db.path}: no fleet nightly {args.nightly!r}" + (f" for class {args.host}" if args.host else ""),
                               hint="`rig fleet status --db URL` lists nightlies")
            for row in rows:  # what changed since the previous nightly, per host class
                old = db.previous(row)
                if old is None:
                    print(f"nightly {nightly}, class {row.host_key}: the first nightly of matrix {row.matrix} "
                          "for this class; nothing to compare with")
                else:
                    print(f"nightly {nightly}, class {row.host_key}, against nightly {old.nightly or old.run_dir}:")
                    print(format_diff(db.diff_runs(old, row)))
            return 0
        runs = db.runs(host=args.host, matrix=args.matrix)
        if not runs:
            raise RigError(f"{db.path}: no runs recorded" + (f" for host {args.host}" if args.host else ""),
                           hint="`rig run MATRIX` records every finished run")
        if args.list:
            for r in runs:
                print(f"{r.id:4} {r.recorded_at} {r.matrix:10} host {r.host_key} ({r.host.cpu_model}; kernel "
                      f"{r.host.kernel}; QEMU {r.host.qemu}) {r.cases} cases, {r.failed} failed  {r.run_dir}")
            return 0
        new = db.run(args.run) if args.run else runs[-1]
        old = db.run(args.against) if args.against else db.previous(new)
        if old is None:
            print(f"run {new.id} ({new.run_dir}) is the first run of matrix {new.matrix} on host {new.host_key}; "
                  "nothing to compare with")
            return 0
        print(format_diff(db.diff_runs(old, new)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a case matrix (TOML): boot QEMU per case, compare layers, write reports")
    p.add_argument("matrix", nargs="?", help="matrix file, e.g. matrices/smoke.toml (optional with --resume)")
    p.add_argument("-j", "--jobs", type=positive_int, help="cases in parallel (default: the matrix's jobs, else one per CPU)")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N (stable by case hash)")
    p.add_argument("-k", metavar="EXPR", help="select cases: words with and/or/not, as in pytest -k")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run (finished cases are kept)")
    p.add_argument("--out", type=Path, metavar="RUN_DIR", help="run directory (default: <cache>/runs/<matrix>-<time>)")
    p.add_argument("--history", type=Path, metavar="DB", help="history database (default: <cache>/history.sqlite)")
    p.add_argument("--no-history", action="store_true", help="do not record the run in the history database")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--tap", action="store_true", help="print the results as TAP version 13 on stdout (other output: stderr)")
    p.set_defaults(func=_tap(cmd_run))

    p = sub.add_parser("report", help="(re)write a run's reports (HTML, JSON, JUnit, TAP) and list its failures")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="write the reports here instead of the run directory")
    p.add_argument("-v", "--verbose", action="store_true", help="list every case")
    p.add_argument("--tap", action="store_true", help="print the results as TAP version 13 on stdout (other output: stderr)")
    p.add_argument("--kcidb", type=Path, metavar="FILE", help="also write the results as KCIDB v5 JSON")
    p.set_defaults(func=_tap(cmd_report))

    p = sub.add_parser("repro", help="write a standalone shell script + probe image reproducing a case with plain QEMU")
    p.add_argument("case_id", help="case ID (or a unique prefix, or its 8-digit hash)")
    p.add_argument("--run", type=Path, metavar="RUN_DIR", help="the run the case is from (default: the latest run)")
    p.add_argument("-o", "--out", type=Path, help="output directory (default: ./repro-<case id>)")
    p.set_defaults(func=cmd_repro)

    p = sub.add_parser("history", help="what changed against the previous run on the same host")
    p.add_argument("--db", metavar="PATH|URL",
                   help="history database: a path / sqlite:///PATH, or postgresql://... (default: <cache>/history.sqlite)")
    p.add_argument("--list", action="store_true", help="list recorded runs")
    p.add_argument("--nightly", metavar="ID|latest",
                   help="a fleet nightly: what changed since the previous nightly, per host class")
    p.add_argument("--host", help="host key (or fleet host class) or fingerprint prefix")
    p.add_argument("--matrix", help="matrix name")
    p.add_argument("--run", type=int, help="run id to show (default: the latest)")
    p.add_argument("--against", type=int, help="compare with this run id (default: the previous run on the same host)")
    p.add_argument("--html", type=Path, metavar="FILE",
                   help="write trends per host (runs over time, verdicts and finding classes, changed bits) as HTML")
    p.set_defaults(func=cmd_history)
