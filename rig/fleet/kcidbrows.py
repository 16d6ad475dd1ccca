"""A fleet nightly's stored rows as KCIDB (the writer is :mod:`rig.report.kcidb`)."""

from __future__ import annotations

from typing import Any

from ..report.kcidb import KcidbCase, case_from_result, kcidb_document
from .runner import result_from_json
from .store import Nightly, utc


def nightly_document(n: Nightly, rows: list[dict[str, Any]]) -> dict[str, Any]:
    cases = []
    for row in rows:
        if row["result"]:
            c = case_from_result(result_from_json(row["result"]), host_class=row["host_class"],
                                 artifacts=row["artifacts"])
            c.misc["worker"] = row["worker"]
        else:  # missing: never ran by the deadline
            c = KcidbCase(row["case_id"], row["verdict"], row["outcome"], row["host_class"],
                          comment=f"not run by the deadline of nightly {n.id} on host class {row['host_class']}",
                          misc={"case_id": row["case_id"]})
        cases.append(c)
    return kcidb_document(cases, run=n.id, matrix=n.matrix, started_at=utc(n.created_at))
