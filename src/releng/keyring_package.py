"""``<name>-archive-keyring``: the signing keys as a package, so that ``apt upgrade`` brings a
client the next key before the archive stops signing with the old one (as Debian's
``debian-archive-keyring`` does).

The package (architecture all) holds the keys in ``/usr/share/keyrings/<name>-archive-keyring.gpg``
and the apt source that names them with ``Signed-By``: the deb822
``/etc/apt/sources.list.d/<name>.sources``, or a one-line ``<name>.list`` for the releases in
:data:`ONE_LINE_CODENAMES` (:func:`source_file`). A source names one suite, so each suite
carries its own package, versioned
``<stamp>+<suite>``: the stamp is the time the keys last changed (the set: ``[signing]
keys_changed``, written by ``rotate-keys``; a key: its newest signature on itself, made when
its expiry is extended), so the version increases whenever the keys change. releng writes the
``.deb`` itself (ar, tar, gzip with fixed times and owners): the same keys, suite and URL give
the same bytes.

:func:`install_instructions` is the one text that tells a client how to start (the front page,
``update-repos``, docs/key-rotation.md): it writes the package's source file byte for byte, so
that dpkg takes the file over without a conffile question; :func:`recovery_instructions` is
what a client that missed a key change runs.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from releng.deb822 import parse_paragraphs
from releng.errors import RepoError

if TYPE_CHECKING:
    from releng.apt.repository import PublishResult, Repository
    from releng.gpg import Signer
    from releng.project import Project

log = logging.getLogger(__name__)

_VERSION_TEXT = re.compile(r"[^A-Za-z0-9.+~]")  # what may not stand in a version without revision
# Releases given a one-line ``.list`` rather than deb822 ``.sources`` (a suite belongs to one when
# it is the codename or starts with ``<codename>-``): apt before 1.1 reads no deb822, and
# xenial's era of tools (software-properties, apt-add-repository) lists only one-line sources.
ONE_LINE_CODENAMES = frozenset({"xenial", "trusty", "precise", "stretch", "jessie", "wheezy"})
URLS_STATE = "keyring-urls.json"  # in the repository's state: suite -> its package's source URL


@dataclass(frozen=True, kw_only=True)
class KeyringPackage:
    """What one suite's keyring package holds: plain data, :meth:`deb` makes its bytes."""

    name: str  # the product: the package is <name>-archive-keyring
    keys: bytes  # the public keys, binary (what Signed-By reads on every target)
    changed: dt.datetime  # when the keys last changed (keys_changed_at): the version, file times
    url: str  # the repository's URL, for the .sources file
    suite: str
    components: tuple[str, ...] = ("main",)

    @property
    def package(self) -> str:
        return f"{self.name}-archive-keyring"

    @property
    def version(self) -> str:
        stamp = self.changed.astimezone(dt.UTC).strftime("%Y%m%d.%H%M%S")
        return f"{stamp}+{_VERSION_TEXT.sub('.', self.suite)}"

    @property
    def filename(self) -> str:
        return f"{self.package}_{self.version}_all.deb"

    @property
    def keyring_path(self) -> str:
        return f"usr/share/keyrings/{self.package}.gpg"

    @property
    def source(self) -> SourceFile:
        return source_file(
            name=self.name, url=self.url, suite=self.suite, components=self.components
        )

    @property
    def sources_path(self) -> str:
        """The source file (a conffile), relative: ``etc/apt/sources.list.d/<name>.sources``."""
        return self.source.path.lstrip("/")

    def sources(self) -> str:
        """The source file's text: the same text the install instructions write by hand, so
        that installing the package over it is no conffile question."""
        return self.source.text

    def files(self) -> dict[str, bytes]:
        return {
            self.keyring_path: self.keys,
            self.sources_path: self.sources().encode(),
            f"usr/share/doc/{self.package}/copyright": (
                f"The public OpenPGP keys that sign the {self.name} apt repository.\n".encode()
            ),
        }

    def control(self) -> str:
        size = sum((len(b) + 1023) // 1024 for b in self.files().values())
        return (
            f"Package: {self.package}\n"
            f"Version: {self.version}\n"
            "Architecture: all\n"
            f"Maintainer: {self.name} release engineering <releng@invalid>\n"
            f"Installed-Size: {size}\n"
            "Section: misc\n"
            "Priority: optional\n"
            "Multi-Arch: foreign\n"
            f"Description: OpenPGP keys of the {self.name} apt repository\n"
            f" The keys that sign the {self.name} repository's Release files, and the apt\n"
            f" source ({self.suite}) that trusts only them. Upgrading this package brings\n"
            " a new signing key before the repository stops signing with the old one.\n"
        )

    def deb(self) -> bytes:
        """The ``.deb``: the same fields give the same bytes."""
        mtime = int(self.changed.timestamp())
        files = self.files()
        md5sums = "".join(
            f"{hashlib.md5(data, usedforsecurity=False).hexdigest()}  {path}\n"
            for path, data in sorted(files.items())
        )
        control = {
            "control": self.control().encode(),
            "md5sums": md5sums.encode(),
            "conffiles": f"/{self.sources_path}\n".encode(),
        }
        return _ar(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", _tar_gz(control, mtime)),
                ("data.tar.gz", _tar_gz(files, mtime)),
            ],
            mtime,
        )


def sources_text(*, name: str, url: str, suite: str, components: Sequence[str]) -> str:
    """``/etc/apt/sources.list.d/<name>.sources`` for one suite, trusting the keyring package's
    keys (:func:`releng.apt.sources_snippet`, the one deb822 source releng writes)."""
    from releng.apt import sources_snippet

    return sources_snippet(name=name, url=url, suites=[suite], components=components)


@dataclass(frozen=True, kw_only=True)
class SourceFile:
    """The apt source a client of one suite holds: the keyring package's conffile."""

    path: str  # absolute: /etc/apt/sources.list.d/<name>.sources (or .list)
    text: str


def one_line(suite: str) -> bool:
    """Whether clients of ``suite`` get a one-line ``.list`` (see :data:`ONE_LINE_CODENAMES`)."""
    return suite.split("-", 1)[0] in ONE_LINE_CODENAMES


def source_file(*, name: str, url: str, suite: str, components: Sequence[str]) -> SourceFile:
    """The source file of a client of ``suite``: deb822 ``<name>.sources``, or for a release
    whose tools read only one-line sources, ``<name>.list``; both trust only the keyring
    package's keys."""
    if one_line(suite):
        keyring = f"/usr/share/keyrings/{name}-archive-keyring.gpg"
        line = f"deb [signed-by={keyring}] {url} {suite} {' '.join(components)}\n"
        return SourceFile(path=f"/etc/apt/sources.list.d/{name}.list", text=line)
    return SourceFile(
        path=f"/etc/apt/sources.list.d/{name}.sources",
        text=sources_text(name=name, url=url, suite=suite, components=components),
    )


def _fetch_keys(name: str, url: str, sha256: str) -> str:
    """Commands that put the repository's current keys where the source's Signed-By looks.

    apt's own downloader fetches them (every target has it; a minimal system has no curl or
    gpg), into /tmp where apt's unprivileged download user may write; given ``sha256`` (of the
    keyring file, as the front page shows it) it refuses any other file."""
    keyring = f"{name}-archive-keyring.gpg"
    check = f" \\\n  SHA256:{sha256}" if sha256 else ""  # on a line of its own: readable
    return (
        "/usr/lib/apt/apt-helper download-file \\\n"
        f"  {url}/{keyring} /tmp/{keyring}{check}\n"
        f"install -m 644 /tmp/{keyring} /usr/share/keyrings/{keyring}\n"
    )


def install_instructions(
    *,
    name: str,
    url: str,
    suite: str,
    components: Sequence[str],
    sha256: str = "",
    with_package: bool = True,
) -> str:
    """The commands a client runs once, as root; from then on ``apt upgrade`` keeps its keys.

    Fetch the keys (checked against ``sha256`` when given), write the source file the keyring
    package installs, byte for byte (:func:`source_file`: dpkg then takes it over without a
    conffile question), then install the keyring package and the product. The one install
    text: the front page, ``update-repos`` and the docs show this. ``with_package=False``: the
    suite carries no keyring package yet (filled by ``include-packages`` alone, before any
    ``update-repos`` or ``rotate-keys``): the same commands without it.
    """
    source = source_file(name=name, url=url, suite=suite, components=components)
    packages = f"{name}-archive-keyring {name}" if with_package else name
    return (
        _fetch_keys(name, url, sha256)
        + f"cat > {source.path} <<'EOF'\n{source.text}EOF\n"
        + f"apt-get update && apt-get install -y {packages}\n"
    )


def recovery_instructions(*, name: str, url: str, sha256: str = "") -> str:
    """What a client that missed a key change runs, as root (its ``apt-get update`` says
    ``NO_PUBKEY``): the current keys, as on a first install, then the current keyring
    package, so that ``apt upgrade`` follows the next change again."""
    return (
        _fetch_keys(name, url, sha256)
        + f"apt-get update && apt-get install -y {name}-archive-keyring\n"
    )


def client_url(project: Project, root: Path, url: str = "") -> str:
    """The URL clients use, in the keyring package's source and the instructions: ``url``, else
    ``[publish] public_url``, else the repository's directory as a file: URL."""
    return url or project.config.publish.public_url or root.resolve().as_uri()


def _tar_gz(files: dict[str, bytes], mtime: int) -> bytes:
    """A gzip'ed tar of ``files`` (relative paths) and their directories, as dpkg-deb lays it
    out (``./``, ``./usr/``, ...): root-owned, sorted, every time ``mtime``."""
    dirs = {"."}
    for path in files:
        parts = Path(path).parts[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in [*((d, None) for d in sorted(dirs)), *sorted(files.items())]:
            info = tarfile.TarInfo(
                "./" if name == "." else f"./{name}{'/' if data is None else ''}"
            )
            info.mtime, info.uname, info.gname = mtime, "root", "root"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data), 0o644
            tar.addfile(info, None if data is None else io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=mtime, compresslevel=9, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _ar(members: list[tuple[str, bytes]], mtime: int) -> bytes:
    """A Unix ar archive (what a .deb is) of ``members``, in order."""
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{mtime:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n"
        out += [header.encode(), data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def changed_at(signer: Signer, configured: str) -> dt.datetime:
    """When the set of keys last changed: ``[signing] keys_changed`` (ISO 8601, written by
    rotate-keys), else the newest key's creation time."""
    if configured:
        return parse_time(configured, where="[signing] keys_changed")
    return max(k.created for k in signer.keys)


def keys_changed_at(signer: Signer, configured: str) -> dt.datetime:
    """When the keys last changed, as a set (:func:`changed_at`) or one of them (its newest
    signature on itself: a new expiry, user id or subkey): the keyring package's stamp, so
    that a client's apt upgrade brings it a key whose expiry was extended before the old
    expiry passes."""
    return max(changed_at(signer, configured), *(k.signed or k.created for k in signer.keys))


def parse_time(text: str, *, where: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RepoError(
            f"{where} = {text!r} is not an ISO 8601 time such as 2026-12-06T11:00:00+00:00; "
            "fix it in product.toml (invoke rotate-keys writes it)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def recorded_urls(root: Path) -> dict[str, str]:
    """Per suite, the URL its keyring package's source names, as :func:`add_to_suites` recorded
    it in the repository's state (synced with it on S3): the instructions for a suite must write
    that URL, byte for byte, whatever address the page is read at."""
    from releng.apt.state import STATE_DIR

    path = root / STATE_DIR / URLS_STATE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def _record_url(root: Path, suite: str, url: str) -> None:
    from releng.apt.state import STATE_DIR, write_atomic

    urls = recorded_urls(root) | {suite: url}
    text = json.dumps(dict(sorted(urls.items())), indent=1) + "\n"
    write_atomic(root / STATE_DIR / URLS_STATE, text.encode())


def suite_carries(root: Path, suite: str, name: str) -> bool:
    """Whether ``dists/<suite>`` lists ``<name>-archive-keyring`` (any version)."""
    wanted = f"{name}-archive-keyring"
    return any(st.get("Package") == wanted for st in _stanzas(root, suite, wanted))


def suite_holds(root: Path, suite: str, package: str, version: str) -> bool:
    """Whether ``dists/<suite>`` lists ``package`` at ``version`` in any binary index."""
    return any(
        st.get("Package") == package and st.get("Version") == version
        for st in _stanzas(root, suite, package)
    )


def _stanzas(root: Path, suite: str, package: str) -> Iterator[dict[str, str]]:
    """The stanzas of ``dists/<suite>``'s binary indexes that name ``package``."""
    for index in sorted((root / "dists" / suite).glob("*/binary-*/Packages")):
        text = index.read_text(encoding="utf-8", errors="replace")
        yield from parse_paragraphs(text, where=str(index), containing=package)


def add_to_suites(
    repository: Repository,
    *,
    url: str,
    changed: dt.datetime,
    suites: Sequence[str] | None = None,
    scratch: Path | None = None,
) -> dict[str, PublishResult]:
    """Include the current keyring package into every suite (or ``suites``) that does not hold
    it yet; the results of the suites that changed.

    ``scratch``: a directory for the ``.deb`` files (the repository copies them into its pool);
    default: a temporary one.
    """
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="releng-keyring-") as tmp:
            return add_to_suites(
                repository, url=url, changed=changed, suites=suites, scratch=Path(tmp)
            )
    signer = repository.signer
    if signer is None:
        raise RepoError("no signing key: the keyring package needs the keys; configure [signing]")
    keys = signer.public_keys()
    settings = repository.settings
    results: dict[str, PublishResult] = {}
    for suite in suites if suites is not None else repository.state.suites():
        pkg = KeyringPackage(
            name=settings.name,
            keys=keys,
            changed=changed,
            url=url,
            suite=suite,
            components=tuple(settings.components),
        )
        if suite_holds(repository.root, suite, pkg.package, pkg.version):
            continue
        path = scratch / suite / pkg.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pkg.deb())
        log.info("including %s into %s", pkg.filename, suite)
        results[suite] = repository.include([suite], [path])
        _record_url(repository.root, suite, url)
    return results


def add_for_project(
    project: Project, repository: Repository, *, url: str = ""
) -> dict[str, PublishResult]:
    """The publish hook: the keyring package of the configured keys into every suite of
    ``repository`` that lacks it (``url``: where clients fetch; default ``[publish] public_url``,
    else the repository's directory as a file: URL)."""
    if repository.signer is None:
        raise RepoError("no signing key: the keyring package needs the keys; configure [signing]")
    changed = keys_changed_at(repository.signer, project.config.signing.keys_changed)
    return add_to_suites(repository, url=client_url(project, repository.root, url), changed=changed)
