"""The repository's front page: ``index.html`` at its root, from the repository's own state.

What a user needs before typing ``apt``: the product, the archive key (full fingerprint,
``.asc``/``.gpg`` links, expiry), per target distro the exact commands (key into
``/usr/share/keyrings``, a deb822 ``.sources`` file, or a one-line ``.list`` where apt predates
deb822, then ``apt-get update && apt-get install``), with each suite of that distro as a
choice (every build, release lines, nightlies), and per suite what is published.

Two steps: :func:`collect` reads the repository (suite members, history, key, pool records of
source packages) into plain data; :func:`render` is pure, data in, one HTML page out. The page
is static: readable without JavaScript (a few lines of it fill in the page's own address and
copy a block), with no external fonts or scripts, dark and light by ``prefers-color-scheme``.
Suites with many packages show the most recently added ones and link to the full index,
so a 10,000-package repository's page stays small (see benchmarks/bench_frontpage.py).

:func:`write_front_page` writes ``index.html`` and a copy in the repository's state
(``.releng-repo/front-page.html``), which is synced with the state: the S3 index pages put
that copy at the destination's root (releng.publish.index_pages).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import html
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from releng.errors import RepoError, SigningError

if TYPE_CHECKING:
    from releng.apt.state import Member, RepoState
    from releng.gpg import KeyInfo
    from releng.project import Project

log = logging.getLogger(__name__)

INDEX = "index.html"
STATE_COPY = "front-page.html"  # in the repository's state directory
URL_PLACEHOLDER = "https://REPOSITORY-URL"
MAX_ROWS = 200  # packages listed per suite; more: the newest, and a link to the full index
HISTORY_SHOWN = 5


@dataclass(frozen=True, kw_only=True)
class Target:
    """A distro release users install on."""

    id: str  # debian-12-bookworm
    label: str  # Debian 12 (bookworm)
    codename: str


@dataclass(frozen=True, kw_only=True)
class PackageRow:
    name: str
    versions: tuple[tuple[str, tuple[str, ...]], ...]  # (arch, versions newest first)
    added: int  # epoch seconds: when its newest member was added
    # Rebuild verification of its newest version per architecture (releng.rebuild.policy):
    # "verified by ... on ...", "unverified"; None: the page shows no rebuild status.
    rebuild: str | None = None


@dataclass(frozen=True, kw_only=True)
class SourceRow:
    name: str
    version: str
    files: tuple[str, ...]  # pool paths: the .dsc, its tarballs and their signatures


@dataclass(frozen=True, kw_only=True)
class PublishRow:
    n: int
    date: str
    note: str
    added: int
    removed: int


@dataclass(frozen=True, kw_only=True)
class SuiteInfo:
    name: str
    channel: str  # what the suite carries, for a person: "every build", "release line 1.2"
    packages: tuple[PackageRow, ...]  # at most MAX_ROWS, see total
    total: int  # package names in the suite
    sources: tuple[SourceRow, ...] = ()
    publishes: tuple[PublishRow, ...] = ()
    architectures: tuple[str, ...] = ()
    has_keyring: bool = False  # carries <name>-archive-keyring: the install commands use it
    keyring_url: str = ""  # the URL that package's source names (recorded when it was built)


@dataclass(frozen=True, kw_only=True)
class FrontPage:
    name: str
    summary: str
    homepage: str
    url: str  # where clients reach the repository; URL_PLACEHOLDER: the page's own address
    key: KeyInfo | None
    keyring: str  # file name of the binary keyring, in the root
    components: tuple[str, ...]
    targets: tuple[Target, ...]
    suites: tuple[SuiteInfo, ...]
    generated: dt.datetime
    has_source_dir: bool = False
    keyring_sha256: str = ""  # of the keyring file: the install commands refuse any other
    other_keys: tuple[KeyInfo, ...] = ()  # more keys in the keyring (a key change under way)


# -- reading the repository -----------------------------------------------------------------------


def key_infos(keyring: Path) -> tuple[KeyInfo, ...]:
    """Every primary key of a keyring file, in order (during a key change: the old and the
    new key); none, with a warning, when gpg cannot read it."""
    from releng.gpg import keyring_keys

    if not keyring.is_file():
        return ()
    try:
        return tuple(keyring_keys(keyring))
    except SigningError as exc:
        log.warning("%s", exc)
        return ()


def _channel(suite: str, codename: str) -> str:
    rest = suite[len(codename) :].lstrip("-")
    if not rest:
        return "every build (releases and nightlies)"
    if "nightly" in rest:
        return "nightly builds"
    if rest[:1].isdigit():
        return f"release line {rest}"
    return rest


def _newer(a: str, b: str) -> int:
    from releng.apt.index import version_compare

    return version_compare(b, a)


_newest_first = functools.cmp_to_key(_newer)


def _rebuild_cell(
    attested: Mapping[str, Mapping[str, str]], newest: Mapping[str, tuple[str, str]]
) -> str:
    """One package's rebuild status: its newest version's (``newest``: arch -> (version, pool
    path)), the same for every architecture in one phrase, else per architecture."""
    from releng.rebuild.policy import rebuild_status

    found = {arch: rebuild_status(attested.get(path)) for arch, (_v, path) in newest.items()}
    distinct = sorted(set(found.values()))
    if len(distinct) == 1:
        return distinct[0]
    return "; ".join(f"{arch}: {status}" for arch, status in sorted(found.items()))


def _newest_added(members: Mapping[str, Member]) -> tuple[dict[str, int], list[str]]:
    """When each package's newest file was added, and the suite's .dsc paths."""
    added: dict[str, int] = {}
    dscs: list[str] = []
    for path, (when, kind, package, _version, _arch) in members.items():
        if kind == "dsc":
            dscs.append(path)
        elif added.get(package, -1) < when:
            added[package] = when
    return added, dscs


def _versions_of(
    members: Mapping[str, Member], shown: set[str], verify: set[str]
) -> tuple[dict[str, dict[str, list[str]]], dict[str, dict[str, tuple[str, str]]]]:
    """The versions of the packages ``shown``, by architecture; and, of those in ``verify``,
    each architecture's newest version and its pool path. One pass over the members, the
    packages looked at limited to the page's rows (a suite may have 10,000)."""
    by_name: dict[str, dict[str, list[str]]] = {}
    newest: dict[str, dict[str, tuple[str, str]]] = {}
    for path, (_when, kind, package, version, arch) in members.items():
        if kind == "dsc" or package not in shown:
            continue
        by_name.setdefault(package, {}).setdefault(arch, []).append(version)
        if package in verify:
            seen = newest.setdefault(package, {}).get(arch)
            if seen is None or _newer(version, seen[0]) < 0:
                newest[package][arch] = (version, path)
    return by_name, newest


def _suite_info(
    state: RepoState,
    name: str,
    codename: str,
    architectures: Sequence[str],
    *,
    keyring: str = "",
    attested: Mapping[str, Mapping[str, str]] | None = None,
    not_rebuilt: frozenset[str] = frozenset(),
) -> SuiteInfo:
    """``attested``: pool path -> its ``attestations/index.json`` entry (None: no rebuild
    status column); ``not_rebuilt``: packages no rebuild is asked of (the keyring package):
    an empty cell, no claim."""
    from releng.apt.history import History
    from releng.apt.state import find_records

    members = state.load_suite(name).members
    added, dscs = _newest_added(members)
    names = sorted(added)
    if len(names) > MAX_ROWS:  # the newest first, then by name (a stable sort keeps that order)
        names = sorted(names, key=added.__getitem__, reverse=True)[:MAX_ROWS]
    shown = set(names)
    verify = shown - not_rebuilt if attested is not None else set()
    by_name, newest = _versions_of(members, shown, verify)
    rows = tuple(
        PackageRow(
            name=n,
            versions=tuple(
                (arch, tuple(sorted(vs, key=_newest_first)))
                for arch, vs in sorted(by_name[n].items())
            ),
            added=added[n],
            rebuild=(
                None
                if attested is None
                else ("" if n in not_rebuilt else _rebuild_cell(attested, newest[n]))
            ),
        )
        for n in names
    )
    sources: list[SourceRow] = []
    for path, rec in sorted(find_records(state, sorted(dscs)[-MAX_ROWS:]).items()):
        files = (path, *(f[0] for f in rec.files))
        sources.append(SourceRow(name=rec.package, version=rec.version, files=files))
    history = History(state, name)
    publishes = []
    for n in history.numbers()[-HISTORY_SHOWN:][::-1]:
        try:
            e = history.entry(n)
        except RepoError:  # a damaged entry: show-history reports it; the page goes on
            continue
        publishes.append(
            PublishRow(n=e.n, date=e.date, note=e.note, added=len(e.added), removed=len(e.removed))
        )
    return SuiteInfo(
        name=name,
        channel=_channel(name, codename),
        packages=rows,
        total=len(added),
        sources=tuple(sources),
        publishes=tuple(publishes),
        architectures=tuple(architectures),
        has_keyring=keyring in added,
    )


def collect(
    repo_root: Path,
    project: Project,
    *,
    url: str = "",
    clock: Callable[[], dt.datetime] | None = None,
) -> FrontPage:
    """Everything the page shows, read from the repository at ``repo_root``."""
    from releng import keyring_package
    from releng.apt.state import RepoState
    from releng.digest import file_sha256
    from releng.distro import read_targets

    cfg = project.config
    name = cfg.name
    state = RepoState(repo_root)
    suites = state.suites()
    targets: list[Target] = []
    for distro_id in read_targets(project.root):
        distro = project.distro(distro_id)
        if not distro.is_debianish:
            continue
        family = distro.family.capitalize()
        label = f"{family} {distro.number} ({distro.codename})"
        targets.append(Target(id=distro.id, label=label, codename=distro.codename))
    codenames = sorted((t.codename for t in targets), key=len, reverse=True)
    attested, exempt = _attested(repo_root, project)
    package_urls = keyring_package.recorded_urls(repo_root)
    infos = []
    for suite in suites:
        codename = next((c for c in codenames if suite == c or suite.startswith(c + "-")), "")
        infos.append(
            _suite_info(
                state,
                suite,
                codename,
                cfg.repositories.architectures,
                keyring=f"{name}-archive-keyring",
                attested=attested,
                not_rebuilt=exempt,
            )
        )
        if infos[-1].has_keyring and suite in package_urls:
            infos[-1] = dataclasses.replace(infos[-1], keyring_url=package_urls[suite])
    keyring = f"{name}-archive-keyring.gpg"
    keys = key_infos(repo_root / keyring)
    return FrontPage(
        name=name,
        summary=cfg.product.summary,
        homepage=cfg.product.homepage,
        url=url.rstrip("/") or URL_PLACEHOLDER,
        key=keys[0] if keys else None,
        other_keys=keys[1:],
        keyring_sha256=file_sha256(repo_root / keyring) if keys else "",
        keyring=keyring,
        components=tuple(cfg.repositories.components),
        targets=tuple(targets),
        suites=tuple(infos),
        generated=(clock or (lambda: dt.datetime.now(dt.UTC)))(),
        has_source_dir=(repo_root / "source").is_dir(),
    )


def _attested(
    repo_root: Path, project: Project
) -> tuple[dict[str, dict[str, str]] | None, frozenset[str]]:
    """Pool path -> its ``attestations/index.json`` entry, when the page shows a rebuild
    status ([verify] rebuild is not "off", or the repository has attestations; None: it shows
    none), and the packages no rebuild is asked of."""
    if project.config.verify.rebuild == "off" and not (repo_root / "attestations").is_dir():
        return None, frozenset()  # the usual case costs one stat, not importing releng.rebuild
    from releng.rebuild.attest import read_index
    from releng.rebuild.policy import not_rebuilt, show_rebuild_status

    if not show_rebuild_status(project, repo_root):
        return None, frozenset()
    return read_index(repo_root), not_rebuilt(project)


def write_front_page(
    repo_root: Path,
    project: Project,
    *,
    url: str = "",
    clock: Callable[[], dt.datetime] | None = None,
) -> Path:
    """Render the front page of the repository at ``repo_root`` into its ``index.html``
    (and the state's copy, for S3); returns the page's path."""
    from releng.apt.state import STATE_DIR, write_atomic

    page = render(collect(repo_root, project, url=url, clock=clock)).encode()
    out = repo_root / INDEX
    write_atomic(out, page)
    os.chmod(out, 0o644)  # noqa: PTH101  (served as is by any web server)
    state = repo_root / STATE_DIR
    if state.is_dir():
        write_atomic(state / STATE_COPY, page)
    log.info("front page: %s (%d bytes)", out, len(page))
    return out


# -- the page -------------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def install_commands(page: FrontPage, target: Target, suite: str) -> str:
    """The exact shell commands (run as root) that add the repository and install the product:
    :func:`releng.keyring_package.install_instructions`, the one install text (``target``: the
    release the block is shown under; the suite decides deb822 or a one-line ``.list``)."""
    from releng import keyring_package

    del target  # one text per suite
    info = next((s for s in page.suites if s.name == suite), None)
    return keyring_package.install_instructions(
        name=page.name,
        # the URL the suite's keyring package names: the source written is then its conffile
        url=info.keyring_url if info is not None and info.keyring_url else page.url,
        suite=suite,
        components=page.components,
        sha256=page.keyring_sha256,
        with_package=info is None or info.has_keyring,
    ).rstrip("\n")


def recovery_commands(page: FrontPage) -> str:
    """What a client that missed a key change runs (:func:`releng.keyring_package.recovery_instructions`)."""
    from releng import keyring_package

    return keyring_package.recovery_instructions(
        name=page.name, url=page.url, sha256=page.keyring_sha256
    ).rstrip("\n")


def _code(text: str, *, label: str, block_id: str) -> str:
    """A command block with its copy button. The repository URL is marked so that the page's
    script can put in the page's own address."""
    body = _e(text).replace(_e(URL_PLACEHOLDER), f'<span class="u">{_e(URL_PLACEHOLDER)}</span>')
    return (
        f'<div class="code"><pre id="{block_id}" tabindex="0" role="region" aria-label="{_e(label)}">'
        f"<code>{body}</code></pre>"
        f'<button type="button" class="copy" data-for="{block_id}">Copy</button></div>'
    )


def _when(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


_CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--mute:#555;--line:#d0d0d0;--code:#f3f3f3;
--link:#0645ad;--btn:#1f5fae;--btnfg:#fff}
@media (prefers-color-scheme:dark){:root{--bg:#15171a;--fg:#e6e6e6;--mute:#b0b0b0;
--line:#3a3d42;--code:#22252a;--link:#8ab4f8;--btn:#8ab4f8;--btnfg:#111}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}
main,header,footer{max-width:60rem;margin:0 auto;padding:0 1rem}
a{color:var(--link)}
h1{margin:1rem 0 .25rem}h2{margin-top:2rem;border-bottom:1px solid var(--line)}
.mute{color:var(--mute)}
.fpr{font-family:ui-monospace,monospace;word-break:break-all}
nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5rem}
nav a{display:inline-block;padding:.2rem .6rem;border:1px solid var(--line);border-radius:.3rem;
text-decoration:none}
.code{position:relative;margin:.5rem 0}
pre{background:var(--code);border:1px solid var(--line);border-radius:.3rem;padding:.75rem;
padding-right:4.5rem;overflow-x:auto;margin:0;font:14px/1.4 ui-monospace,monospace}
.copy{position:absolute;top:.4rem;right:.4rem;background:var(--btn);color:var(--btnfg);
border:0;border-radius:.25rem;padding:.2rem .6rem;font:inherit;font-size:14px;cursor:pointer}
table{border-collapse:collapse;width:100%;font-size:15px}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid var(--line);
vertical-align:top}
.scroll{overflow-x:auto}
details{margin:.5rem 0}summary{cursor:pointer}
section.distro{scroll-margin-top:1rem}
"""

# Fills in the page's own address where the repository URL was not configured, and copies
# a block. The page reads the same without it.
_JS = """
(function(){
var here=location.href.replace(/[?#].*$/,"").replace(/\\/[^\\/]*$/,"");
if(/^https?:/.test(here)){document.querySelectorAll(".u").forEach(function(s){
s.textContent=here;});}
document.querySelectorAll("button.copy").forEach(function(b){b.addEventListener("click",
function(){var t=document.getElementById(b.dataset.for).textContent;
var done=function(){b.textContent="Copied";setTimeout(function(){b.textContent="Copy";},1500);};
if(navigator.clipboard){navigator.clipboard.writeText(t).then(done,function(){});}});});
})();
"""


def _fpr(fingerprint: str) -> str:
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


def _expiry(k: KeyInfo) -> str:
    if k.expires is None:
        return "never"
    return f'<time datetime="{k.expires:%Y-%m-%d}">{k.expires:%Y-%m-%d}</time>'


def _key_section(page: FrontPage) -> str:
    asc = page.keyring.removesuffix(".gpg") + ".asc"
    links = f'<a href="{_e(page.keyring)}">{_e(page.keyring)}</a> (binary, for Signed-By) · <a href="{_e(asc)}">{_e(asc)}</a> (ASCII-armored)'
    if page.key is None:
        return f'<h2 id="key">Archive key</h2><p>Not published yet. {links}</p>'
    k = page.key
    uid = f"<p>{_e(', '.join(k.uids))}</p>" if k.uids else ""
    others = "".join(
        f'<p>Also signing (a key change is under way): <strong class="fpr">{_fpr(o.fingerprint)}'
        f"</strong>, expires {_expiry(o)}</p>"
        for o in page.other_keys
    )
    digest = (
        f'<p>SHA-256 of {_e(page.keyring)}: <span class="fpr" id="keyring-sha256">'
        f"{page.keyring_sha256}</span> (the install commands check it)</p>"
        if page.keyring_sha256
        else ""
    )
    return (
        '<h2 id="key">Archive key</h2>'
        f'<p>Fingerprint: <strong class="fpr" id="fingerprint" data-fingerprint="{k.fingerprint}">{_fpr(k.fingerprint)}</strong></p>'
        f"{uid}<p>Expires: {_expiry(k)}</p>{others}<p>Download: {links}</p>{digest}"
        '<p class="mute">Check the fingerprint of the file you download: '
        f"<code>gpg --show-keys {_e(page.keyring)}</code>. After the first install the keys "
        f"come as a package, <code>{_e(page.name)}-archive-keyring</code>: "
        "<code>apt upgrade</code> brings the next key before the repository changes keys.</p>"
    )


def _recover_section(page: FrontPage) -> str:
    if not any(s.has_keyring for s in page.suites):
        return ""  # no keyring package yet (include-packages alone): nothing to recover with
    return (
        '<h2 id="recover">Missed a key change?</h2>'
        "<p>A machine that was not upgraded while the old and the new key both signed holds "
        "only the old key, and <code>apt-get update</code> fails for this repository with "
        "<code>NO_PUBKEY</code> (&#8220;The repository &#8230; is not signed&#8221;; "
        "Ubuntu 16.04 refuses at install: &#8220;unauthenticated packages&#8221;). "
        "Fetch the current keys once, as on a first install, and upgrade the keyring package "
        "(as root):</p>"
        + _code(recovery_commands(page), label="Recover after a key change", block_id="cmd-recover")
    )


def _install_section(page: FrontPage) -> str:
    by_codename: dict[str, list[SuiteInfo]] = {}
    for s in page.suites:
        for t in page.targets:
            if s.name == t.codename or s.name.startswith(t.codename + "-"):
                by_codename.setdefault(t.codename, []).append(s)
    nav = "".join(
        f'<li><a href="#install-{_e(t.codename)}">{_e(t.label)}</a></li>' for t in page.targets
    )
    parts = [
        '<h2 id="install">Install</h2>',
        f'<nav aria-label="Distributions"><ul>{nav}</ul></nav>',
        '<p class="mute">Run as root (for example after <code>sudo -i</code>). apt&#8217;s '
        "own downloader fetches the keys once"
        f"{' (checked against the SHA-256 above)' if page.keyring_sha256 else ''}; the "
        f"package <code>{_e(page.name)}-archive-keyring</code> then keeps them and the source "
        "file current. The key is checked by apt for every download; the repository address "
        f"is {'this page&#8217;s' if page.url == URL_PLACEHOLDER else _e(page.url)}.</p>",
    ]
    for t in page.targets:
        suites = sorted(
            by_codename.get(t.codename, []), key=lambda s: (s.name != t.codename, s.name)
        )
        parts.append(
            f'<section class="distro" id="install-{_e(t.codename)}"><h3>{_e(t.label)}</h3>'
        )
        if not suites:
            parts.append("<p>Nothing published for this release yet.</p></section>")
            continue
        first = suites[0]
        parts.append(f"<p>Suite <strong>{_e(first.name)}</strong>: {_e(first.channel)}.</p>")
        parts.append(
            _code(
                install_commands(page, t, first.name),
                label=f"Install on {t.label}",
                block_id=f"cmd-{t.codename}",
            )
        )
        for other in suites[1:]:
            parts.append(
                f"<details><summary>Instead: suite <strong>{_e(other.name)}</strong> "
                f"({_e(other.channel)})</summary>"
                + _code(
                    install_commands(page, t, other.name),
                    label=f"Install from {other.name} on {t.label}",
                    block_id=f"cmd-{other.name}",
                )
                + "</details>"
            )
        parts.append("</section>")
    return "\n".join(parts)


def _suite_section(page: FrontPage, s: SuiteInfo) -> str:
    comp = page.components[0] if page.components else "main"
    rows = []
    rebuild = any(p.rebuild is not None for p in s.packages)
    for p in s.packages:
        versions = "<br>".join(f"{_e(arch)}: {_e(', '.join(vs))}" for arch, vs in p.versions)
        status = f"<td>{_e(p.rebuild or '')}</td>" if rebuild else ""
        rows.append(
            f"<tr><td>{_e(p.name)}</td><td>{versions}</td><td>{_when(p.added)}</td>{status}</tr>"
        )
    shown = (
        f"the {len(s.packages)} most recently added of {s.total}; every package: "
        + ", ".join(
            f'<a href="dists/{_e(s.name)}/{_e(comp)}/binary-{_e(a)}/Packages">{_e(a)}</a>'
            for a in s.architectures
        )
        if s.total > len(s.packages)
        else f"{s.total} package{'s' if s.total != 1 else ''}"
    )
    out = [
        f'<section id="suite-{_e(s.name)}"><h3>{_e(s.name)}</h3>',
        f"<p>{_e(s.channel.capitalize())}. {shown}.</p>",
    ]
    if rows:
        out.append(
            f'<div class="scroll"><table><caption class="mute">Packages in {_e(s.name)}</caption>'
            '<thead><tr><th scope="col">Package</th><th scope="col">Versions per architecture</th>'
            '<th scope="col">Added</th>'
            + ('<th scope="col">Independent rebuild</th>' if rebuild else "")
            + "</tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></div>"
        )
    if s.sources:
        items = []
        for src in s.sources:
            links = " · ".join(
                f'<a href="{_e(f)}">{_e(f.rsplit("/", 1)[-1])}</a>' for f in src.files
            )
            items.append(f"<li>{_e(src.name)} {_e(src.version)}: {links}</li>")
        out.append("<p>Source:</p><ul>" + "".join(items) + "</ul>")
    if s.publishes:
        items = [
            f"<li>#{p.n} {_e(p.date)}: +{p.added} &#8722;{p.removed}"
            + (f" ({_e(p.note)})" if p.note else "")
            + "</li>"
            for p in s.publishes
        ]
        out.append("<p>Last publishes:</p><ul>" + "".join(items) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def render(page: FrontPage) -> str:
    """Pure: the front page's HTML."""
    title = f"{page.name} packages"
    home = f' · <a href="{_e(page.homepage)}">{_e(page.homepage)}</a>' if page.homepage else ""
    stamp = page.generated.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    browse = ['<a href="dists/">dists/</a>', '<a href="pool/">pool/</a>']
    if page.has_source_dir:
        browse.append('<a href="source/">source/</a>')
    published = "\n".join(_suite_section(page, s) for s in page.suites) or "<p>No suites yet.</p>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<header><h1>{_e(title)}</h1><p>{_e(page.summary)}{home}</p></header>\n"
        "<main>\n"
        f"{_key_section(page)}\n{_install_section(page)}\n{_recover_section(page)}\n"
        f'<h2 id="published">What is published</h2>\n{published}\n'
        f'<h2 id="browse">Browse</h2><p>{" · ".join(browse)}</p>\n'
        "</main>\n"
        f'<footer><p class="mute">Generated {stamp} by releng.</p></footer>\n'
        f"<script>{_JS}</script>\n"
        "</body></html>\n"
    )
