"""Typed QMP queries on top of ``qemu.qmp``, with a JSON-lines transcript.

:class:`QmpSession` wraps a connected :class:`qemu.qmp.QMPClient`.  Every
command and its reply (or error) is appended to the transcript as one JSON
line ``{"t_ms": …, "execute": …, "arguments"?: …, "return"|"error": …}`` so a
case can be replayed and audited from its artifacts.

The queries the rig needs:

* :meth:`QmpSession.cpu0_qom_path` - ``query-cpus-fast`` -> ``qom-path`` of CPU 0;
* :meth:`QmpSession.feature_words` / :meth:`QmpSession.filtered_features` -
  ``qom-get`` of the X86CPU properties of the same names, as :class:`CpuidTable`;
* :meth:`QmpSession.cpu_model_expansion` - ``query-cpu-model-expansion``;
* :meth:`QmpSession.cpu_definitions` - ``query-cpu-definitions``;
* :meth:`QmpSession.observe_cpu` - all of the above for CPU 0 in two round trips
  (commands are pipelined: QEMU answers them in order).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from qemu.qmp import ExecuteError, QMPClient, QMPError

from ..cpuid.parse import parse_feature_words
from ..cpuid.table import CpuidTable
from ..errors import RigError

# qemu.qmp logs connection drops (QEMU exiting under it) as errors; they are
# expected here and recorded in the transcript instead.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

class QmpFailure(RigError):
    """A QMP command failed or the connection broke; the message names the command."""


@dataclass(frozen=True)
class CpuDefinition:
    """One entry of ``query-cpu-definitions``."""

    name: str
    typename: str = ""
    unavailable_features: tuple[str, ...] = ()
    static: bool = False
    migration_safe: bool = False
    deprecated: bool = False
    alias_of: str | None = None

    @classmethod
    def from_qmp(cls, d: Mapping[str, Any]) -> CpuDefinition:
        return cls(
            name=str(d["name"]),
            typename=str(d.get("typename", "")),
            unavailable_features=tuple(d.get("unavailable-features", ()) or ()),
            static=bool(d.get("static", False)),
            migration_safe=bool(d.get("migration-safe", False)),
            deprecated=bool(d.get("deprecated", False)),
            alias_of=d.get("alias-of"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "typename": self.typename,
            "unavailable-features": list(self.unavailable_features),
            "static": self.static,
            "migration-safe": self.migration_safe,
            "deprecated": self.deprecated,
        }
        if self.alias_of is not None:
            out["alias-of"] = self.alias_of
        return out

    @property
    def is_alias(self) -> bool:
        return self.alias_of is not None


@dataclass(frozen=True)
class ModelExpansion:
    """A ``query-cpu-model-expansion`` reply: a model name and its properties."""

    name: str
    props: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_qmp(cls, d: Mapping[str, Any]) -> ModelExpansion:
        model = d.get("model", d)
        return cls(name=str(model["name"]), props=dict(model.get("props", {}) or {}))

    def to_json(self) -> dict[str, Any]:
        return {"model": {"name": self.name, "props": dict(self.props)}}

    def enabled(self) -> frozenset[str]:
        """Names of boolean properties that are true (features, mostly)."""
        return frozenset(k for k, v in self.props.items() if v is True)


#: where QEMU puts CPU 0 (every x86 machine type of QEMU 7.2 and 10.0); only a first guess, checked
#: against ``query-cpus-fast`` (see :meth:`QmpSession.observe_cpu`)
CPU0_QOM_PATH_GUESS = "/machine/unattached/device[0]"


@dataclass
class CpuObservation:
    """What QMP says about CPU 0 (see :meth:`QmpSession.observe_cpu`)."""

    qom_path: str
    feature_words: CpuidTable
    filtered_features: CpuidTable
    expansion: ModelExpansion | None = None
    definitions: list[CpuDefinition] | None = None
    #: the failure of the command sent after the queries (``cont``/``quit``), if it failed
    then_error: QmpFailure | None = None


class RigQMPClient(QMPClient):
    """``QMPClient`` that formats messages for its debug log only when that log is on.

    qemu.qmp pretty-prints every message in and out (``json.dumps(indent=2)``, the
    pure-Python encoder) just to pass it to ``logger.debug``; with the ~20 KB
    ``query-cpu-model-expansion`` and ``feature-words`` replies that was about a
    third of the rig's CPU per case.  The transcript keeps every exchange anyway.
    """

    def __init__(self, name: str | None = None, *, negotiate: bool = True) -> None:
        super().__init__(name)
        #: False: the caller sends ``qmp_capabilities`` itself (pipelined with its first
        #: commands, see :func:`rig.qemu.launcher.launch`); the greeting is still awaited
        self.negotiate = negotiate

    async def capabilities(self) -> None:
        """``qmp_capabilities`` (when the client was made with ``negotiate=False``); not
        transcribed, as qemu.qmp's own negotiation is not."""
        try:
            await self.execute("qmp_capabilities")
        except ExecuteError as e:
            err = e.error.error
            raise QmpFailure(f"QMP qmp_capabilities: {err.class_}: {err.desc}") from None
        except (QMPError, OSError, EOFError) as e:
            raise QmpFailure(f"QMP qmp_capabilities: connection failed: {type(e).__name__}: {e}") from None

    def _cb_outbound(self, msg: Any) -> Any:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_outbound(msg)
        return msg

    def _cb_inbound(self, msg: Any) -> Any:
        if self.logger.isEnabledFor(logging.DEBUG):
            return super()._cb_inbound(msg)
        return msg


class Transcript:
    """Appends one JSON line per QMP exchange to an open text stream (or nowhere)."""

    def __init__(self, stream: IO[str] | None, t0: float | None = None) -> None:
        self._stream = stream
        self._t0 = time.perf_counter() if t0 is None else t0

    def record(self, entry: dict[str, Any]) -> None:
        if self._stream is None:
            return
        entry = {"t_ms": round((time.perf_counter() - self._t0) * 1000, 3), **entry}
        self._stream.write(json.dumps(entry, sort_keys=False) + "\n")


class QmpSession:
    """Typed queries over a connected client; every exchange is transcribed."""

    def __init__(self, client: QMPClient, transcript: Transcript | None = None) -> None:
        self.client = client
        self.transcript = transcript or Transcript(None)

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        entry: dict[str, Any] = {"execute": command}
        if arguments:
            entry["arguments"] = dict(arguments)
        try:
            reply = await self.client.execute(command, dict(arguments) if arguments else None)
        except ExecuteError as e:
            err = e.error.error
            self.transcript.record({**entry, "error": {"class": err.class_, "desc": err.desc}})
            raise QmpFailure(f"QMP {command}: {err.class_}: {err.desc}") from None
        except (QMPError, OSError, EOFError) as e:
            self.transcript.record({**entry, "error": {"class": type(e).__name__, "desc": str(e)}})
            raise QmpFailure(f"QMP {command}: connection failed: {type(e).__name__}: {e}") from None
        self.transcript.record({**entry, "return": reply})
        return reply

    async def cpu0_qom_path(self) -> str:
        cpus = await self.execute("query-cpus-fast")
        if not isinstance(cpus, list) or not cpus:
            raise QmpFailure("QMP query-cpus-fast: no CPUs in reply")
        first = min(cpus, key=lambda c: c.get("cpu-index", 0))
        return str(first["qom-path"])

    async def qom_get(self, path: str, prop: str) -> Any:
        return await self.execute("qom-get", {"path": path, "property": prop})

    async def feature_words(self, path: str) -> CpuidTable:
        return parse_feature_words(await self.qom_get(path, "feature-words"), "QMP feature-words")

    async def filtered_features(self, path: str) -> CpuidTable:
        return parse_feature_words(await self.qom_get(path, "filtered-features"), "QMP filtered-features")

    async def cpu_model_expansion(
        self, model: str, expansion_type: str = "full", props: Mapping[str, Any] | None = None
    ) -> ModelExpansion:
        m: dict[str, Any] = {"name": model}
        if props:
            m["props"] = dict(props)
        reply = await self.execute("query-cpu-model-expansion", {"type": expansion_type, "model": m})
        return ModelExpansion.from_qmp(reply)

    async def cpu_definitions(self) -> list[CpuDefinition]:
        reply = await self.execute("query-cpu-definitions")
        return [CpuDefinition.from_qmp(d) for d in reply]

    async def observe_cpu(self, model: str | None, *, definitions: bool = False,
                          qom_path_guess: str | None = CPU0_QOM_PATH_GUESS,
                          then: str | None = None) -> CpuObservation:
        """``query-cpus-fast`` -> qom-path of CPU 0, ``qom-get`` of its ``feature-words`` and
        ``filtered-features``, ``query-cpu-model-expansion`` (full) of ``model`` (None when QEMU
        cannot expand it), when asked ``query-cpu-definitions``, and then the command ``then``
        (``cont``/``quit``), if any.

        All are sent at once and QEMU answers them in order, so ``then`` runs only after
        the queries have been answered.  The ``qom-get`` commands go to the path QEMU
        gives CPU 0 (``qom_path_guess``); if ``query-cpus-fast`` names another path they
        are asked again for that path (after ``then``: the properties do not change
        while the guest runs).  Every exchange is in the transcript.  Raises
        :class:`QmpFailure` as the single queries do; a failure of ``then`` is returned
        in :attr:`CpuObservation.then_error` (QEMU may exit before it answers ``cont``).
        """
        # tasks start (and send) in the order they are made
        cpus_t = asyncio.ensure_future(self.cpu0_qom_path())
        guessed = None
        if qom_path_guess:
            guessed = asyncio.gather(self.feature_words(qom_path_guess), self.filtered_features(qom_path_guess),
                                     return_exceptions=True)
        exp_t = asyncio.ensure_future(self.cpu_model_expansion(model, "full")) if model else None
        defs_t = asyncio.ensure_future(self.cpu_definitions()) if definitions else None
        then_t = asyncio.ensure_future(self.execute(then)) if then else None
        pending = [t for t in (cpus_t, exp_t, guessed, defs_t, then_t) if t is not None]
        try:
            path = await cpus_t
            if guessed is not None and path == qom_path_guess:
                words, filtered = await guessed
                for r in (words, filtered):
                    if isinstance(r, BaseException):
                        raise r
            else:
                if guessed is not None:
                    await guessed  # wrong path: its errors are in the transcript, the answer is asked again
                words = await self.feature_words(path)
                filtered = await self.filtered_features(path)
            expansion = None
            if exp_t is not None:
                try:
                    expansion = await exp_t
                except QmpFailure:  # e.g. a model without expansion support
                    expansion = None
            defs = await defs_t if defs_t is not None else None
            then_error = None
            if then_t is not None:
                try:
                    await then_t
                except QmpFailure as e:
                    then_error = e
        except BaseException:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        return CpuObservation(path, words, filtered, expansion, defs, then_error)

    async def quit(self) -> None:
        await self.execute("quit")

    async def cont(self) -> None:
        await self.execute("cont")
