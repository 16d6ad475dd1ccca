"""``rig fleet worker|submit|status|results|report``."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from ..errors import RigError
from ..subcommands import positive_int


def _minutes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 minutes")
    return v


def _need(value: str | None, opt: str, env: str) -> str:
    if not value:
        raise RigError(f"{opt} is required", hint=f"pass {opt} URL or set {env}")
    return value


def cmd_worker(args: argparse.Namespace) -> int:
    from ..images.cache import cache_root
    from .app import WorkerConfig, make_app
    from .hostclass import PORTABLE_QUEUE, check_name, queue_for, this_host
    from .runner import system_qemu_version
    from .store import FleetStore

    broker = _need(args.broker, "--broker", "RIG_FLEET_BROKER")
    db = _need(args.db, "--db", "RIG_FLEET_DB")
    host = this_host(system_qemu_version(args.qemu))
    cls = check_name(args.cls) if args.cls else host.name
    hostname = socket.gethostname()
    name = args.name or f"rig-{os.getpid()}@{hostname}"
    with FleetStore(db):  # connect and migrate now: a bad --db fails here, not in the first task
        pass
    cfg = WorkerConfig(name=name, host_class=cls, db=db, jobs=args.jobs,
                       workdir=(args.workdir or cache_root() / "fleet").resolve(), hostname=hostname,
                       host=host.to_json())
    app = make_app(broker, redeliver_after=args.redeliver_after, worker=cfg)
    queues = [queue_for(cls), PORTABLE_QUEUE]
    print(f"rig fleet worker {name}: class {cls}" + (f" (--class; this host's own is {host.name})" if args.cls else "") +
          f"; queues {', '.join(queues)}; jobs: {args.jobs or 'one per CPU'}; artifacts in {cfg.workdir}",
          file=sys.stderr, flush=True)
    import warnings

    from celery.platforms import SecurityWarning

    # KVM hosts often run the rig as root (/dev/kvm); the tasks take JSON only, never pickle
    warnings.filterwarnings("ignore", category=SecurityWarning)
    worker = app.Worker(hostname=name, queues=queues, pool_cls="solo", concurrency=1, loglevel=args.loglevel,
                        without_gossip=True, without_mingle=True, without_heartbeat=True, quiet=True,
                        optimization="fair")
    worker.start()
    return int(worker.exitcode or 0)


def _nightly_summary(store, n) -> tuple[list[str], int]:
    progress = store.progress(n.id)
    bad = sum(p.verdicts["fail"] + p.verdicts["error"] + p.verdicts["missing"] for p in progress.values())
    return [p.line() for p in progress.values()], bad


def cmd_submit(args: argparse.Namespace) -> int:
    from .app import make_app
    from .hostclass import check_name
    from .store import FleetStore, utc
    from .submit import submit, wait

    broker = _need(args.broker, "--broker", "RIG_FLEET_BROKER")
    db = _need(args.db, "--db", "RIG_FLEET_DB")
    if not args.matrix.is_file():
        raise RigError(f"{args.matrix}: no such matrix file", hint="e.g. rig fleet submit matrices/nightly.toml ...")
    classes = [check_name(c.strip()) for c in (args.classes or "").split(",") if c.strip()]
    app = make_app(broker)
    with FleetStore(db) as store:
        n = submit(app, store, args.matrix.resolve(), classes=classes, shards=args.shards, deadline_min=args.deadline,
                   nightly_id=args.nightly_id, k=args.k)
        shards = store.shards(n.id)
        print(f"nightly {n.id}: matrix {n.matrix}, {len(shards)} shard(s) queued for "
              f"{len(store.classes(n.id))} class(es)" + (f", deadline {utc(n.deadline_at)}" if n.deadline_at else ""),
              flush=True)
        if not args.wait:
            print(f"follow it with: rig fleet status {n.id}")
            return 0
        n = wait(store, n, out=sys.stdout)
        lines, bad = _nightly_summary(store, n)
        print(f"nightly {n.id} closed at {utc(n.closed_at)}:")
        for line in lines:
            print("  " + line)
        print(f"results: rig fleet results {n.id} --json | --kcidb FILE; page: rig fleet report {n.id}")
        return 1 if bad else 0


def cmd_status(args: argparse.Namespace) -> int:
    from .store import FleetStore, utc

    with FleetStore(_need(args.db, "--db", "RIG_FLEET_DB")) as store:
        if args.nightly is None:
            ns = store.nightlies()
            if not ns:
                raise RigError(f"{store.where}: no nightly recorded", hint="rig fleet submit MATRIX ...")
            for n in ns:
                state = f"closed {utc(n.closed_at)}" if n.closed_at else "open"
                print(f"{n.id}  matrix {n.matrix}  created {utc(n.created_at)}  {state}")
            return 0
        n = store.close_if_due(store.nightly(args.nightly))
        state = f"closed {utc(n.closed_at)}" if n.closed_at else (
            f"open, deadline {utc(n.deadline_at)}" if n.deadline_at else "open, no deadline")
        print(f"nightly {n.id}: matrix {n.matrix} ({n.matrix_path}), {n.shards} shard(s) per class, {state}")
        lines, _ = _nightly_summary(store, n)
        for line in lines:
            print("  " + line)
        for cls, shard, cases, st, worker, attempts in store.shards(n.id):
            print(f"    {cls} shard {shard}: {cases} cases, {st}" + (f", {worker}" if worker else "") +
                  (f", {attempts} attempts" if attempts > 1 else ""))
        for e in store.events(n.id):
            print(f"  event {utc(e['at'])} {e['kind']}: {e['host_class']} shard {e['shard'] or '-'}"
                  f" ({e['worker'] or '-'}): {e['detail']}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from .store import FleetStore, utc

    with FleetStore(_need(args.db, "--db", "RIG_FLEET_DB")) as store:
        n = store.close_if_due(store.nightly(args.nightly))
        rows = store.results(n.id)
        if args.kcidb:
            from ..report.kcidb import write_kcidb
            from .kcidbrows import nightly_document

            write_kcidb(args.kcidb, nightly_document(n, rows))
            print(f"kcidb: {args.kcidb} ({len(rows)} tests)", file=sys.stderr)
        if args.json:
            doc = {"format": "rig-fleet-results/1", "nightly": n.id, "matrix": n.matrix,
                   "created_at": utc(n.created_at), "deadline_at": utc(n.deadline_at) if n.deadline_at else None,
                   "closed_at": utc(n.closed_at) if n.closed_at else None,
                   "classes": {c: {"expected": p.expected, "stored": p.stored, "verdicts": dict(p.verdicts)}
                               for c, p in store.progress(n.id).items()},
                   "results": [{k: v for k, v in r.items() if k != "result"} |
                               {"findings": [f"{f['cls']}: {f['name']}" for f in (r["result"] or {}).get("findings", [])]}
                               for r in rows]}
            json.dump(doc, sys.stdout, indent=1)
            print()
        elif not args.kcidb:
            for r in rows:
                print(f"{r['host_class']}\t{r['verdict']}\t{r['case_id']}\t{r['worker'] or '-'}\t{r['artifacts'] or '-'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import fleet_html
    from .store import FleetStore

    with FleetStore(_need(args.db, "--db", "RIG_FLEET_DB")) as store:
        n = store.close_if_due(store.nightly(args.nightly))
        out = args.out or Path(f"fleet-{n.id}.html")
        html = fleet_html(store, n)
    if out.exists() and not out.is_file():
        with open(out, "w") as f:
            f.write(html)
    else:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(html)
        tmp.replace(out)
    print(f"report: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..subcommands import level

    fleet = level(sub, "fleet", "nightly on many KVM hosts: Celery workers per host class, one PostgreSQL history",
                  "fleet_command")
    env_b, env_d = os.environ.get("RIG_FLEET_BROKER"), os.environ.get("RIG_FLEET_DB")

    p = fleet.add_parser("worker", help="run shards of this host's class (and emulated-host shards) from the broker")
    p.add_argument("--broker", default=env_b, help="Redis URL, e.g. redis://HOST:6379/0 (env RIG_FLEET_BROKER)")
    p.add_argument("--db", default=env_d, help="history database: postgresql://... (env RIG_FLEET_DB)")
    p.add_argument("--class", dest="cls", metavar="NAME", help="consume this class's queue instead of this host's own")
    p.add_argument("-j", "--jobs", type=positive_int, help="cases in parallel within a shard (default: one per CPU)")
    p.add_argument("--name", help="worker name recorded with its results (default: rig-PID@HOSTNAME)")
    p.add_argument("--workdir", type=Path, help="where shard run directories (artifacts) go (default: <cache>/fleet)")
    p.add_argument("--qemu", default="system", help="QEMU whose version is part of the class (default: system)")
    p.add_argument("--redeliver-after", type=float, default=600.0, metavar="S",
                   help="a shard whose worker died is delivered again after S seconds unacknowledged (default 600)")
    p.add_argument("--loglevel", default="WARNING", help="Celery log level (default WARNING)")
    p.set_defaults(func=cmd_worker)

    p = fleet.add_parser("submit", help="create a nightly: queue a matrix's shards for each host class")
    p.add_argument("matrix", type=Path)
    p.add_argument("--broker", default=env_b, help="Redis URL (env RIG_FLEET_BROKER)")
    p.add_argument("--db", default=env_d, help="history database URL (env RIG_FLEET_DB)")
    p.add_argument("--classes", metavar="A,B,...", help="host classes to run the matrix's native cases on")
    p.add_argument("--shards", type=positive_int, default=4, help="shards per class (default 4)")
    p.add_argument("--wait", action="store_true", help="show progress per class until done, then the summary")
    p.add_argument("--deadline", type=_minutes, metavar="MINUTES",
                   help="cases not stored by then are recorded as missing (and shards not started are dropped)")
    p.add_argument("-k", metavar="EXPR", help="only the cases selected by EXPR (as `rig run -k`)")
    p.add_argument("--nightly-id", help="the nightly's id (default: MATRIX-YYYYmmdd-HHMMSS-XXXX)")
    p.set_defaults(func=cmd_submit)

    p = fleet.add_parser("status", help="a nightly's progress per class, its shards and events (no NIGHTLY: list)")
    p.add_argument("nightly", nargs="?", help="nightly id, or latest")
    p.add_argument("--db", default=env_d, help="history database URL (env RIG_FLEET_DB)")
    p.set_defaults(func=cmd_status)

    p = fleet.add_parser("results", help="a nightly's results: one line per (class, case), --json, --kcidb FILE")
    p.add_argument("nightly", help="nightly id, or latest")
    p.add_argument("--db", default=env_d, help="history database URL (env RIG_FLEET_DB)")
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    p.add_argument("--kcidb", type=Path, metavar="FILE", help="write KCIDB v5 JSON")
    p.set_defaults(func=cmd_results)

    p = fleet.add_parser("report", help="one HTML page: host classes x models, regressions first")
    p.add_argument("nightly", help="nightly id, or latest")
    p.add_argument("--db", default=env_d, help="history database URL (env RIG_FLEET_DB)")
    p.add_argument("-o", "--out", type=Path, help="output file (default: ./fleet-NIGHTLY.html)")
    p.set_defaults(func=cmd_report)
