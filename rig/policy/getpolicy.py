"""``rig policy get VER``: the exact policy for a Debian kernel series, imported into the user policy store.

Order: a shipped imported policy of that series (nothing to do); Debian's
``linux-source-SERIES`` binary package; Debian's ``linux`` source package
(newest upstream version of the series whose upstream tarball the archive
serves, or exactly ``VER`` when a full X.Y.Z is given).  The result is
``<cache>/policies/linux-SERIES.json``, beside the shipped policies.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..images.debian import DebianError
from .importer import import_tree
from .model import PolicyError
from .source import SourceError, fetch_source, fetch_source_package, source_archive
from .store import data_dir, entries, series_of, user_dir, version_key


def _say(text: str) -> None:
    print(f"rig policy get: {text}", file=sys.stderr, flush=True)


def get_policy(version: str) -> tuple[Path, str]:
    """(path of the policy file, how it was obtained); progress on stderr."""
    version_key(version)  # validates
    series = series_of(version)
    for e in entries():
        if e.kind == "imported" and e.name == series:
            return e.path, f"linux-{series} is already {'shipped' if e.store == 'shipped' else 'in the user store'}"
    errors = []
    src = None
    _say(f"looking for Debian's linux-source-{series} (download and extraction take about a minute)")
    try:
        src = fetch_source(series)
    except (SourceError, DebianError) as e:
        errors.append(str(e))
    if src is None:
        full = version if re.fullmatch(r"\d+\.\d+\.\d+", version) else None
        try:
            listed = [v.version.split("-")[0] for v in source_archive().versions("linux")]
        except DebianError as e:
            listed = []
            errors.append(str(e))
        cands = [full] if full else sorted({v for v in listed if series_of(v) == series}, key=version_key, reverse=True)
        for up in cands:
            _say(f"trying Debian's source package linux {up}")
            try:
                src = fetch_source_package(up)
                break
            except (SourceError, DebianError) as e:
                errors.append(str(e))
    if src is None:
        raise PolicyError(f"no Debian source for kernel {series} could be had: " + "; ".join(errors[-2:]),
                          hint=f"import it from a kernel git clone: rig policy import KERNEL_TREE --rev v{series} --store")
    _say(f"importing {src.package} {src.package_version}")
    pol = import_tree(src.tree)
    if (data_dir() / f"linux-{pol.version}.json").exists():
        raise PolicyError(f"linux-{pol.version} is shipped; not writing a user copy")
    user_dir().mkdir(parents=True, exist_ok=True)
    dest = user_dir() / f"linux-{pol.version}.json"
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(pol.dumps())
    tmp.replace(dest)
    return dest, f"imported {src.package} {src.package_version} (kernel {pol.source.get('kernel_version')}) into the user store"
