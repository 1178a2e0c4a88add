"""Signing-key rotation as a procedure: add a key (both sign), wait the overlap, retire the old.

``[signing] key`` in product.toml lists the keys that sign; ``[signing] keys_changed`` says
when that list last changed. :func:`plan` turns ``--add`` / ``--retire`` into the new list
(plain data, refused with one line when it would break clients), :func:`write_signing` puts
it into product.toml, and :func:`republish` exports every key beside the repository, adds
the keyring package of the new set to every suite and re-signs every suite with the new set.
See docs/key-rotation.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from releng import keyring_package
from releng.config import parse_product
from releng.errors import SigningError

if TYPE_CHECKING:
    from releng.apt.repository import PublishResult
    from releng.gpg import KeyInfo, Signer
    from releng.project import Project

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The keys before and after one rotation step."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    changed: dt.datetime  # the time the new list takes effect
    action: str  # "add" or "retire"
    key: str


@dataclass(frozen=True, kw_only=True)
class Status:
    keys: tuple[KeyInfo, ...]  # the signing keys, the first (tarballs, attestations) first
    changed: dt.datetime | None  # when the list last changed
    overlap_days: int
    warn_days: int
    now: dt.datetime

    @property
    def overlap_ends(self) -> dt.datetime | None:
        """When an old key may retire (None: one key signs, no overlap runs)."""
        if len(self.keys) < 2 or self.changed is None:
            return None
        return self.changed + dt.timedelta(days=self.overlap_days)

    def lines(self) -> list[str]:
        out = []
        for n, key in enumerate(self.keys):
            role = "signs Releases" + (", tarballs and attestations" if n == 0 else "")
            out.append(f"{key.fingerprint}  {key.uid}: {role}; {key.describe_expiry(self.now)}")
        ends = self.overlap_ends
        if ends is not None and self.changed is not None:
            ran = (self.now - self.changed).total_seconds() / 86_400
            state = (
                "over: the old key may retire (invoke rotate-keys --retire OLDFPR)"
                if self.now >= ends
                else f"ends {ends:%Y-%m-%d %H:%M UTC}"
            )
            out.append(
                f"overlap: {len(self.keys)} keys sign since {self.changed:%Y-%m-%d %H:%M UTC} "
                f"({ran:.1f} of {self.overlap_days} days); {state}"
            )
        else:
            out.append("no overlap running: one key signs")
        from releng.gpg import expiry_warnings

        out += [
            f"warning: {w}"
            for w in expiry_warnings(self.keys, warn_days=self.warn_days, now=self.now)
        ]
        return out

    def as_json(self) -> dict[str, object]:
        ends = self.overlap_ends
        return {
            "keys": [
                {
                    "fingerprint": k.fingerprint,
                    "uid": k.uid,
                    "expires": k.expires.isoformat() if k.expires else None,
                    "expired": k.expired(self.now),
                }
                for k in self.keys
            ],
            "keys_changed": self.changed.isoformat() if self.changed else None,
            "overlap_days": self.overlap_days,
            "overlap_ends": ends.isoformat() if ends else None,
        }


def status(project: Project, signer: Signer, *, now: dt.datetime | None = None) -> Status:
    cfg = project.config.signing
    return Status(
        keys=signer.keys,
        changed=keyring_package.changed_at(signer, cfg.keys_changed)
        if len(signer.keys) > 1 or cfg.keys_changed
        else None,
        overlap_days=cfg.overlap_days,
        warn_days=cfg.warn_days,
        now=now or dt.datetime.now(dt.UTC),
    )


def plan(
    current: Sequence[str],
    *,
    add: str = "",
    retire: str = "",
    changed: dt.datetime | None,
    overlap_days: int,
    force: bool = False,
    now: dt.datetime | None = None,
) -> Plan:
    """The new key list for ``--add FPR`` (appended: the first key keeps signing tarballs
    during the overlap) or ``--retire FPR``; fingerprints already full and upper-case."""
    now = now or dt.datetime.now(dt.UTC)
    before = tuple(current)
    if bool(add) == bool(retire):
        raise SigningError("give one of --add FPR, --retire FPR or --status")
    if add:
        if add in before:
            raise SigningError(f"key {add} signs already; see invoke rotate-keys --status")
        return Plan(before=before, after=(*before, add), changed=now, action="add", key=add)
    if retire not in before:
        raise SigningError(
            f"key {retire} does not sign ({', '.join(before) or 'no key'}); "
            "see invoke rotate-keys --status"
        )
    if len(before) == 1:
        raise SigningError(
            f"key {retire} is the only signing key: add its successor first "
            "(invoke rotate-keys --add NEWFPR), retire it after the overlap"
        )
    if changed is not None and not force:
        ends = changed + dt.timedelta(days=overlap_days)
        if now < ends:
            raise SigningError(
                f"the overlap runs until {ends:%Y-%m-%d %H:%M UTC} ([signing] overlap_days = "
                f"{overlap_days}): clients that have not upgraded since would lose the "
                "repository; wait, or retire now with --force"
            )
    after = tuple(k for k in before if k != retire)
    return Plan(before=before, after=after, changed=now, action="retire", key=retire)


_SECTION_RE = re.compile(r"^\s*\[([^\]]*)\]\s*(#.*)?$")
_KEY_LINE_RE = re.compile(r"^\s*(key|keys_changed)\s*=")


def write_signing(path: Path, keys: Sequence[str], changed: dt.datetime) -> None:
    """Set ``[signing] key`` and ``keys_changed`` in product.toml, the rest kept as written."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    value = json.dumps(keys[0]) if len(keys) == 1 else json.dumps(list(keys))
    new = [f"key = {value}\n", f'keys_changed = "{changed.isoformat(timespec="seconds")}"\n']
    start = next(
        (i for i, ln in enumerate(lines) if (m := _SECTION_RE.match(ln)) and m[1] == "signing"),
        None,
    )
    if start is None:
        out = [*lines, *(["\n"] if lines and lines[-1].strip() else []), "[signing]\n", *new]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if _SECTION_RE.match(lines[i])), len(lines)
        )
        body: list[str] = []
        skipping = False  # within a multi-line `key = [` array being replaced
        for line in lines[start + 1 : end]:
            if skipping:
                skipping = "]" not in line
                continue
            if _KEY_LINE_RE.match(line):
                skipping = "[" in line and "]" not in line
                continue
            body.append(line)
        out = [*lines[: start + 1], *new, *body, *lines[end:]]
    result = "".join(out)
    parse_product(result, path=path, where=str(path))  # never write what does not load
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(result, encoding="utf-8")
    tmp.replace(path)


def republish(
    project: Project,
    signer: Signer,
    *,
    repo: Path,
    url: str,
    changed: dt.datetime,
    scratch: Path,
) -> dict[str, PublishResult]:
    """After the key list changed: export every key beside the repository, add the new
    keyring package to every suite, and re-sign every suite with every key."""
    from releng import apt

    repository = apt.Repository(repo, apt.settings_for(project), signer)
    for path in repository.export_keys():
        log.info("wrote %s", path)
    results = keyring_package.add_to_suites(repository, url=url, changed=changed, scratch=scratch)
    rest = [s for s in repository.state.suites() if s not in results]
    if rest:
        result = repository.publish(rest)
        results.update(dict.fromkeys(result.suites, result))
    return results


def rotate(
    project: Project,
    env: Mapping[str, str],
    *,
    add: str = "",
    retire: str = "",
    force: bool = False,
    repo: Path | None,
    url: str = "",
    scratch: Path,
) -> tuple[Plan, dict[str, PublishResult]]:
    """One rotation step: plan it, write product.toml, republish ``repo`` (when given)."""
    from releng import gpg
    from releng.project import Project as _Project

    project = _Project.load(project.root)  # what product.toml says now: this step rewrites it
    cfg = project.config.signing
    current = gpg.signer_for(project, env, release=True)
    home = gpg.gnupghome_for(project, env)
    wanted = add or retire
    # The full fingerprint of what was named (a short id or a fingerprint in any case).
    named = gpg.Signer(gnupghome=home, key=wanted, passphrase=None).fingerprint
    step = plan(
        current.fingerprints,
        add=named if add else "",
        retire=named if retire else "",
        changed=keyring_package.changed_at(current, cfg.keys_changed)
        if len(current.keys) > 1
        else None,
        overlap_days=cfg.overlap_days,
        force=force,
    )
    write_signing(project.root / "product.toml", step.after, step.changed)
    log.info("[signing] key = %s (was %s)", ", ".join(step.after), ", ".join(step.before))
    project = _Project.load(project.root)
    signer = gpg.signer_for(project, env, release=True)
    if repo is None:
        return step, {}
    return step, republish(
        project, signer, repo=repo, url=url, changed=step.changed, scratch=scratch
    )
