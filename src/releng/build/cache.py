"""The compiler cache around one build: its volume (filled from S3 in s3 mode) before,
new entries uploaded and the hit rate logged after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from releng.build.plan import BuildPlan, Owner
from releng.compiler_cache import LOG_PREFIX, S3Sync, ensure_volume
from releng.engine import Engine


def start_cache(
    engine: Engine,
    target: BuildPlan,
    *,
    owner: Owner,
    env: Mapping[str, str],
    record: Callable[[str], None],
) -> _CacheRun:
    """The compiler cache's volume, filled from S3 in s3 mode, before the build."""
    cache = target.compiler_cache
    record(f"releng: compiler cache: {cache.describe()}")
    ensure_volume(engine, cache, target.distro.id)
    uid, gid = (int(x) for x in owner.build_user.split(":"))
    shared = S3Sync(engine, cache, target.distro.id, env, record, uid, gid)
    shared.pull()
    return _CacheRun(shared, record, f"releng: compiler cache: {cache.describe()}")


class _CacheRun:
    """Remembers the wrapper's last ``>>> compiler cache:`` line (the hit rate, or why the
    cache was off); :meth:`end` uploads new entries (s3 mode) and logs that line last."""

    def __init__(self, shared: S3Sync, record: Callable[[str], None], summary: str) -> None:
        self.shared = shared
        self.record = record
        self.summary = summary

    def watch(self, line: str) -> None:
        if line.startswith(LOG_PREFIX):
            self.summary = "releng: compiler cache:" + line[len(LOG_PREFIX) :]

    def end(self) -> None:
        self.shared.push()
        self.record(self.summary)
