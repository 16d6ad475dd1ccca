"""Kernel trees from a git repository at any revision, without a checkout.

``rig policy import TREE --rev v6.13`` reads the importer's files
(:data:`rig.policy.source.FILES`) with ``git cat-file --batch`` from the
object database: the repository's work tree and index are never touched, and
a bare clone works too.  The files land in a temporary directory that
:func:`import_tree` reads like any partial tree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .model import PolicyError
from .source import FILES


class GitSourceError(PolicyError):
    pass


def _git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    if shutil.which("git") is None:
        raise GitSourceError("git not found", hint="install git to import from a repository revision")
    proc = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True)
    if proc.returncode != 0:
        raise GitSourceError(f"git {' '.join(args)} in {repo}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def resolve_rev(repo: Path, rev: str) -> str:
    """The commit id of ``rev`` (a tag, branch or commit)."""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    except GitSourceError:
        raise GitSourceError(f"{repo}: no revision {rev!r}",
                             hint="name a tag, branch or commit of that repository, e.g. v6.13") from None


def export_files(repo: Path, rev: str, into: Path) -> dict[str, str]:
    """Write the importer's files of ``rev`` under ``into``; returns the provenance (repository, rev, commit)."""
    commit = resolve_rev(repo, rev)
    query = "".join(f"{commit}:{f}\n" for f in FILES).encode()
    out = _git(repo, "cat-file", "--batch", input=query)
    pos = 0
    for rel in FILES:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].decode()
        pos = nl + 1
        if header.endswith(" missing"):
            continue
        _sha, kind, size = header.split()
        data = out[pos:pos + int(size)]
        pos += int(size) + 1
        if kind != "blob":
            continue
        p = into / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    if not (into / "arch/x86/kvm/cpuid.c").exists():
        raise GitSourceError(f"{repo} at {rev}: no arch/x86/kvm/cpuid.c", hint="is this a Linux kernel repository?")
    return {"git_rev": rev, "git_commit": commit}
