"""A .deb's control file is read as dpkg reads it (issue 23, item 4): dpkg-deb is the oracle.

``dpkg-deb --build`` refuses malformed control files, so these packages are put together
by hand (ar, control.tar.gz, data.tar.gz), as a hostile or broken tool would make them.
``dpkg-deb --show`` parses the control file with dpkg's own parser (``--info`` only prints it).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from releng import deb822
from releng.apt import RepoSettings, Repository, check_repository, debfile
from releng.apt.debfile import read_deb
from releng.errors import BadPackageError
from releng.gpg import Signer
from tests.fixtures.gpg import TestKey, make_key

GOOD = "Package: p\nVersion: 1\nArchitecture: all\nMaintainer: a <a@b.c>\nDescription: d\n"
CASES = {
    "good": GOOD,
    "duplicate-package": GOOD + "Package: q\n",
    "duplicate-in-another-case": GOOD + "package: q\n",
    "duplicate-user-field": GOOD + "X-A: 1\nX-A: 2\n",
    "blank-line-inside": GOOD.replace("Version: 1\n", "Version: 1\n\n"),
    "blank-lines-after": GOOD + "\n\n",
    "blank-lines-before": "\n\n" + GOOD,
    "blank-continuation": GOOD + "X-A: a\n \n",
    "tab-continuation": GOOD + "X-A: a\n\tmore\n",
    "dot-continuation": GOOD + "X-A: a\n .\n b\n",
    "hyphen-name": GOOD + "-X: y\n",
    "no-colon": GOOD + "Bogus\n",
    "space-in-name": GOOD + "A B: c\n",
    "empty-name": GOOD + ": v\n",
    "comment": "# c\n" + GOOD,
    "continuation-first": " x\n" + GOOD,
    "empty-value-inside": GOOD + "X-E:\nX-F: 1\n",
    "empty-value-last": GOOD + "X-E:\n",
    "no-final-newline": GOOD.rstrip("\n"),
    "crlf": GOOD.replace("\n", "\r\n"),
    "colon-in-value": GOOD + "X-Y:: z\n",
}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def raw_deb(path: Path, control: str) -> Path:
    """A .deb whose control file is ``control``, byte for byte."""
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", _tar_gz({"./control": control.encode()})),
        ("data.tar.gz", _tar_gz({"./usr/share/doc/p/x": b"x\n"})),
    ]
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{1_700_000_000:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_control_file_is_read_as_dpkg_reads_it(tmp_path: Path, case: str) -> None:
    deb = raw_deb(tmp_path / f"{case}.deb", CASES[case])
    dpkg = subprocess.run(
        ["dpkg-deb", "--show", str(deb)], capture_output=True, text=True, check=False
    )
    try:
        info = read_deb(deb)
    except BadPackageError as exc:
        assert dpkg.returncode != 0, f"dpkg reads it ({dpkg.stdout!r}), releng refuses: {exc}"
        assert "\n" not in str(exc) and "rebuild the package" in str(exc)
        return
    assert dpkg.returncode == 0, f"releng reads it, dpkg refuses: {dpkg.stderr}"
    assert f"{info.package}\t{info.version}\n" == dpkg.stdout  # the same name and version


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    key: TestKey = make_key(
        tmp_path_factory.mktemp("debfile-gnupg"), name="debfile", passphrase=None
    )
    return Signer(gnupghome=key.home, key=key.fingerprint, passphrase=None)


SETTINGS = RepoSettings(name="tally", origin="o", label="l", keep_versions=1, byhash_keep=2)


def test_include_refuses_and_repo_check_flags_what_dpkg_refuses(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = GOOD.replace("Package: p\n", "Package: hello\n") + "Package: evil\n"
    bad = raw_deb(tmp_path / "hello_1_all.deb", control)
    repo = Repository(tmp_path / "repo", SETTINGS, signer)
    with pytest.raises(BadPackageError, match="Package is there twice"):
        repo.include(["bookworm"], [bad])
    # A repository an older releng made, which let it in (published under the second name):
    monkeypatch.setattr(debfile, "parse_control", deb822.parse_paragraph)
    repo.include(["bookworm"], [bad])
    monkeypatch.undo()
    report = check_repository(tmp_path / "repo")
    flagged = [p for p in report.problems if "Package is there twice" in p]
    assert flagged, report.problems
    assert flagged[0].startswith("pool/")


def test_what_stands_instead_of_a_file_is_named(tmp_path: Path) -> None:
    import os
    import socket

    from releng.apt.debfile import not_a_file

    os.mkfifo(tmp_path / "fifo.deb")
    (tmp_path / "dir.deb").mkdir()
    (tmp_path / "dangling.deb").symlink_to(tmp_path / "nowhere")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.deb"))
        assert not_a_file(tmp_path / "sock.deb") == "is a socket, not a file"
    assert not_a_file(tmp_path / "fifo.deb") == "is a FIFO (named pipe), not a file"
    assert not_a_file(tmp_path / "dir.deb") == "is a directory, not a file"
    assert not_a_file(tmp_path / "none.deb") == "does not exist"
    assert not_a_file(tmp_path / "dangling.deb") == "does not exist (a dangling symlink)"


def _both_readings(text: str) -> tuple[dict[str, str] | None, dict[str, str] | str]:
    """The common-shape reading (None when the text is not of that shape), and the faithful
    one (its error's text when it refuses)."""
    try:
        faithful: dict[str, str] | str = debfile._dpkg_control(text, where="w")
    except BadPackageError as exc:
        faithful = str(exc)
    return debfile._common_control(text), faithful


def test_the_fast_reading_of_common_control_files_is_dpkgs() -> None:
    """Every control file an installed package came with (dpkg's status file holds them),
    read by the fast path: what the faithful parser gives."""
    status = Path("/var/lib/dpkg/status").read_text(encoding="utf-8")
    stanzas = [s + "\n" for s in status.split("\n\n") if s.strip()]
    assert len(stanzas) > 50
    common = 0
    for text in stanzas:
        fast, faithful = _both_readings(text)
        assert isinstance(faithful, dict), faithful
        if fast is not None:
            common += 1
            assert fast == faithful
    assert common >= 0.9 * len(stanzas)


def test_the_fast_reading_takes_no_text_dpkg_would_read_otherwise() -> None:
    """Texts built from the pieces that make parsers disagree (blanks of every kind, empty
    values, continuations, stray newlines, MSDOS EOF, comments, colons, hyphens, a field
    twice): the fast path either passes a text over or reads it exactly as dpkg's parser."""
    import random

    usual = ["Package: p", "Version: 1", "X-A: a", "X-A:a", " more", "\tmore", " .", "X-G: ü"]
    odd = [
        "package: q",
        "X-B:",
        "X-C:\t",
        "-X: y",
        "A B: c",
        ": v",
        "Bogus",
        "# c",
        "X-D:: z",
        "X-E: a \r",
        "X-F:\vv",
        " ",
        " \r",
        "\v x",
        "",
        "\x1a",
        "X-H:  \t  h  ",
    ]
    rng = random.Random(20261207)
    seen = {"fast": 0, "passed over": 0}
    for _ in range(4000):
        lines = [
            rng.choice(odd if rng.random() < 0.12 else usual) for _ in range(rng.randint(1, 7))
        ]
        text = "\n".join(lines) + rng.choice(["\n", "\n\n", "", "\n\x1a"])
        fast, faithful = _both_readings(text)
        if fast is None:
            seen["passed over"] += 1
        else:
            seen["fast"] += 1
            assert fast == faithful, repr(text)
    assert min(seen.values()) > 200, seen
    for case, text in CASES.items():
        fast, faithful = _both_readings(text)
        assert fast is None or fast == faithful, case
