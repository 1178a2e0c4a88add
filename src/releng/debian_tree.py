"""The ``debian/`` tree a build uses, prepared on the host before the build container runs.

The distro's ``debian/`` is copied (symlinks followed), then:

- for a nightly, every binary package is renamed (``tally`` to ``tally-nightly``,
  ``tally-doc`` to ``tally-nightly-doc``, any other ``libtally1`` to
  ``libtally1-nightly``): ``debian/control`` is rewritten with a deb822 parser, so the
  relationship fields that name the product's own binaries follow them, and each
  renamed package conflicts with and replaces its release counterpart;
  ``debian/<binary>.*`` files are renamed alike;
- a ``debian/changelog`` entry for this build is prepended to the supplied changelog
  (or starts a new one).

This runs in releng, not in the container: the builder image may have no Python.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from releng.errors import BuildError

log = logging.getLogger(__name__)

NIGHTLY_SUFFIX = "-nightly"
# Binary-package fields that name other packages (Debian policy 7.1).
RELATION_FIELDS = (
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Enhances",
    "Breaks",
    "Conflicts",
    "Replaces",
    "Provides",
)
# A package name where a relation alternative starts: after the start, ',' or '|'.
_RELATION_NAME = re.compile(r"(^\s*|[,|]\s*)([a-z0-9][a-z0-9+.-]+)")


@dataclass(frozen=True, kw_only=True)
class ChangelogEntry:
    package: str
    version: str  # the whole Debian version: upstream-revision
    distribution: str
    maintainer: str
    date: str  # RFC 2822
    text: str


def nightly_names(binaries: list[str], *, name: str, package: str) -> dict[str, str]:
    """Each binary's nightly name: ``name`` becomes ``package``, ``name-x`` ``package-x``,
    anything else gets ``-nightly`` appended."""
    renamed = {}
    for binary in binaries:
        if binary == name:
            renamed[binary] = package
        elif binary.startswith(f"{name}-"):
            renamed[binary] = package + binary[len(name) :]
        else:
            renamed[binary] = binary + NIGHTLY_SUFFIX
    return renamed


def rewrite_relations(value: str, mapping: Mapping[str, str]) -> str:
    """``value`` (a relationship field) with each package name in ``mapping`` replaced.

    Whole names only: ``tally`` does not touch ``tally-doc`` or ``tally+extra``, and
    version constraints, architecture lists and substitution variables stay as they are.
    """
    return _RELATION_NAME.sub(lambda m: m[1] + mapping.get(m[2], m[2]), value)


def _names_in(value: str) -> set[str]:
    return {m[2] for m in _RELATION_NAME.finditer(value)}


def rename_control(text: str, *, name: str, package: str) -> tuple[str, dict[str, str]]:
    """``debian/control`` for the nightly ``package`` of ``name``; and the binaries' renames."""
    from debian.deb822 import Deb822

    paragraphs = list(Deb822.iter_paragraphs(text.splitlines(keepends=True)))
    if not paragraphs or "Source" not in paragraphs[0]:
        raise BuildError("debian/control has no Source paragraph first; fix the distro's debian/")
    binaries = [p["Package"] for p in paragraphs[1:] if "Package" in p]
    renamed = nightly_names(binaries, name=name, package=package)
    # Both ways: a release's "Conflicts: tally-nightly" becomes the nightly's "Conflicts: tally".
    swap = {**{new: old for old, new in renamed.items()}, **renamed}
    paragraphs[0]["Source"] = package
    for para in paragraphs[1:]:
        if "Package" not in para:
            continue
        release_name = para["Package"]
        para["Package"] = renamed[release_name]
        for key in RELATION_FIELDS:
            if key in para:
                para[key] = rewrite_relations(para[key], swap)
        for key in ("Conflicts", "Replaces"):  # the two cannot be installed together
            if release_name not in _names_in(para.get(key, "")):
                para[key] = f"{para[key]}, {release_name}" if para.get(key) else release_name
        if "Description" in para:  # last, where it was (the fields above may be new)
            para["Description"] = para.pop("Description")
    return "\n".join(p.dump() for p in paragraphs), renamed


def prepend_changelog(path: Path, entry: ChangelogEntry) -> None:
    """Prepend ``entry`` to the changelog at ``path`` (a new file when there is none).

    A supplied changelog whose top entry is already this package and version is kept as is.
    """
    from debian.changelog import Changelog, ChangelogParseError

    try:
        changelog = Changelog(path.read_text(encoding="utf-8") if path.exists() else None)
    except (ChangelogParseError, UnicodeDecodeError) as exc:
        raise BuildError(
            f"the supplied debian/changelog cannot be read ({exc}); fix it or remove it"
        ) from None
    if len(changelog) and (changelog.package, str(changelog.version)) == (
        entry.package,
        entry.version,
    ):
        log.info("debian/changelog already has %s %s", entry.package, entry.version)
        return
    changelog.new_block(
        package=entry.package,
        version=entry.version,
        distributions=entry.distribution,
        urgency="medium",
        author=entry.maintainer,
        date=entry.date,
        changes=["", f"  * {entry.text}", ""],
    )
    path.write_text(str(changelog), encoding="utf-8")


def stage_debian_dir(
    source: Path, dest: Path, *, name: str, package: str, entry: ChangelogEntry
) -> None:
    """Copy ``source`` (a distro's debian/) into ``dest`` and prepare it for this build."""
    shutil.copytree(source, dest, symlinks=False, dirs_exist_ok=True)
    if package != name:
        control = dest / "control"
        text, renamed = rename_control(
            control.read_text(encoding="utf-8"), name=name, package=package
        )
        control.write_text(text, encoding="utf-8")
        for old, new in renamed.items():
            for path in sorted(dest.glob(f"{glob_escape(old)}.*")):
                path.rename(dest / f"{new}{path.name[len(old) :]}")
    prepend_changelog(dest / "changelog", entry)


def glob_escape(text: str) -> str:
    """``text`` matched literally by Path.glob (package names may hold ``+``, never ``*?[``)."""
    return re.sub(r"([*?[])", r"[\1]", text)
