"""releng.deb822 against readers nobody here wrote: python-debian on what dpkg-source and
apt-ftparchive write, gpg's clearsigning, and the standard library's RFC 2822 parser."""

from __future__ import annotations

import datetime as dt
import email.utils
import subprocess
import sys
from pathlib import Path

import pytest
from debian.deb822 import Deb822, Dsc, Release

from releng import deb822
from releng.apt.history import _release_date
from releng.errors import BadPackageError
from releng.gpg import Signer
from tests.fixtures.gpg import TestKey


def _real_dsc(tmp_path: Path) -> Path:
    """A source package as dpkg-source builds it (3.0 (native))."""
    tree = tmp_path / "hello-1.0"
    (tree / "debian" / "source").mkdir(parents=True)
    (tree / "debian" / "source" / "format").write_text("3.0 (native)\n")
    (tree / "debian" / "control").write_text(
        "Source: hello\nMaintainer: T <t@example.invalid>\nBuild-Depends: debhelper-compat (= 13)"
        "\n\nPackage: hello\nArchitecture: all\nDescription: a test\n one more line\n"
    )
    (tree / "debian" / "changelog").write_text(
        "hello (1.0) unstable; urgency=low\n\n  * A test.\n\n"
        " -- T <t@example.invalid>  Sun, 22 Nov 2026 01:02:03 +0000\n"
    )
    (tree / "README").write_text("hello\n")
    subprocess.run(["dpkg-source", "-b", tree.name], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path / "hello_1.0.dsc"


def test_a_dsc_reads_as_python_debian_reads_it(tmp_path: Path) -> None:
    text = _real_dsc(tmp_path).read_text()
    ours = deb822.parse_paragraph(text, where="hello_1.0.dsc")
    theirs = Dsc(text)
    assert ours == dict(Deb822(text))
    sha = deb822.listed_files(ours, "Checksums-Sha256", where="x")
    assert [(f.digest, f.size, f.name) for f in sha] == [
        (d["sha256"], int(d["size"]), d["name"]) for d in theirs["Checksums-Sha256"]
    ]
    md5 = deb822.listed_files(ours, "Files", where="x")
    assert [(f.digest, f.size, f.name) for f in md5] == [
        (d["md5sum"], int(d["size"]), d["name"]) for d in theirs["Files"]
    ]
    assert [f.name for f in sha] == ["hello_1.0.tar.xz"]
    assert deb822.listed_files(ours, "Checksums-Sha512", where="x") == []


def test_a_clearsigned_dsc_reads_as_the_unsigned_one(tmp_path: Path, gpg_key: TestKey) -> None:
    dsc = _real_dsc(tmp_path)
    text = dsc.read_text()
    signer = Signer(
        gnupghome=gpg_key.home, key=gpg_key.fingerprint, passphrase=gpg_key.passphrase or None
    )
    signed = signer.clearsign(text.encode()).decode()
    assert signed.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    # The line ending before the signature is not part of the signed text (RFC 4880, 7.1).
    assert deb822.strip_signature(signed) == text.removesuffix("\n")
    assert deb822.parse_paragraph(deb822.strip_signature(signed), where="x") == dict(Deb822(text))
    assert deb822.strip_signature(text) == text


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (" abc 12", "malformed Checksums-Sha256 line"),
        (" abc twelve hello.tar.xz", "malformed size"),
        (" abc 12 ../etc/passwd", "not a plain file name"),
        (" abc 12 sub/hello.tar.xz", "not a plain file name"),
    ],
)
def test_a_malformed_file_list_is_refused_in_one_line(line: str, problem: str) -> None:
    fields = {"Checksums-Sha256": "\n" + line}
    with pytest.raises(BadPackageError, match=problem) as caught:
        deb822.listed_files(fields, "Checksums-Sha256", where="x.dsc")
    assert str(caught.value).startswith("x.dsc: ")
    assert "\n" not in str(caught.value)


def _ftparchive_release(tmp_path: Path, *options: str) -> bytes:
    """A Release as apt-ftparchive writes it, over one Packages file."""
    (tmp_path / "main" / "binary-amd64").mkdir(parents=True)
    (tmp_path / "main" / "binary-amd64" / "Packages").write_text("Package: a\nVersion: 1\n")
    out = subprocess.run(
        ["apt-ftparchive", *options, "release", "."],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return out.stdout


def test_a_release_by_apt_ftparchive_reads_as_python_debian_reads_it(tmp_path: Path) -> None:
    release = _ftparchive_release(
        tmp_path,
        "-o",
        "APT::FTPArchive::Release::Codename=bookworm",
        "-o",
        "APT::FTPArchive::Release::ValidTime=86400",
    )
    theirs = Release(release.decode())
    assert [tuple(e) for e in deb822.parse_release_sha256(release.decode())] == [
        (d["name"], int(d["size"]), d["sha256"]) for d in theirs["SHA256"]
    ]
    for name in ("Date", "Valid-Until", "Codename"):
        assert deb822.release_field(release, name) == theirs[name]
    assert deb822.release_field(release, "Suite") is None
    assert deb822.release_field(release, "Until") is None  # part of a name is no name
    when = deb822.parse_date(theirs["Date"])
    assert when == email.utils.parsedate_to_datetime(theirs["Date"])
    assert abs(dt.datetime.now(dt.UTC) - when) < dt.timedelta(minutes=5)
    assert deb822.parse_date(theirs["Valid-Until"]) == when + dt.timedelta(days=1)


def test_the_first_field_and_the_last_line_are_found() -> None:
    assert deb822.release_field(b"Date: a\nSuite: s", "Suite") == "s"
    assert deb822.release_field(b"Date: a\nSuite: s", "Date") == "a"
    assert deb822.release_field(b"Origin: o\n Date: continued\n", "Date") is None


def test_release_dates_are_rfc1123_in_utc() -> None:
    when = dt.datetime(2026, 11, 22, 1, 2, 3, tzinfo=dt.UTC)
    assert deb822.rfc1123(when) == "Sun, 22 Nov 2026 01:02:03 UTC"
    east = when.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert deb822.rfc1123(east) == "Sun, 22 Nov 2026 01:02:03 UTC"


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 22 Nov 2026 01:02:03 UTC",
        "Mon, 29 Feb 2028 23:59:59 UTC",
        "Sun, 22 Nov 2026 01:02:03 +0200",
        "Sun, 22 Nov 2026 01:02:03 GMT",
        "22 Nov 2026 01:02:03 -0000",
        "Sun, 22 Nov 2026 01:02 UTC",
        "Sun, 31 Feb 2026 01:02:03 UTC",  # no such day: the general parser decides
    ],
)
def test_a_date_reads_as_email_utils_reads_it(text: str) -> None:
    try:
        theirs: dt.datetime | None = email.utils.parsedate_to_datetime(text)
    except ValueError:
        theirs = None
    if theirs is not None and theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=dt.UTC)  # apt reads a date without a zone as UTC
    assert deb822.parse_date(text) == theirs


@pytest.mark.parametrize("text", ["", "Sun", "yesterday", "Sun, 22 Nov 2026 25:02:03 UTC"])
def test_what_is_not_a_date_is_none(text: str) -> None:
    assert deb822.parse_date(text) is None


def test_releng_own_dates_are_read_without_loading_email_utils() -> None:
    """A publish reads the Date it wrote (history) and the Valid-Until it signs: email.utils
    takes 5 ms to load."""
    code = (
        "import sys, datetime as dt\n"
        "from releng import deb822\n"
        "when = dt.datetime(2026, 11, 22, 1, 2, 3, tzinfo=dt.UTC)\n"
        "assert deb822.parse_date(deb822.rfc1123(when)) == when\n"
        "print('email.utils' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_history_records_the_release_date_in_utc() -> None:
    assert _release_date(b"Origin: x\nDate: Sun, 22 Nov 2026 03:02:03 +0200\n") == (
        "2026-11-22T01:02:03Z"
    )
    assert _release_date(b"Origin: x\n") == ""


def test_control_data_is_read_in_one_place() -> None:
    """Dates, file lists and stanzas are read by releng.deb822; python-debian only edits and
    reads a debian/ tree (debian_tree, the builder image's build dependencies)."""
    src = Path(__file__).resolve().parents[1] / "src" / "releng"
    users: dict[str, set[str]] = {"parsedate": set(), "Deb822": set()}
    for path in src.rglob("*.py"):
        text = path.read_text()
        for needle, found in users.items():
            if needle in text:
                found.add(path.relative_to(src).as_posix())
    assert users["parsedate"] == {"deb822.py"}
    assert users["Deb822"] == {"debian_tree.py", "images/builder.py"}


def test_paragraphs_containing_a_text_are_found_before_parsing() -> None:
    text = "Package: a\nVersion: 1\n\nPackage: b\nVersion: 2\n \nPackage: ab\nVersion: 3\n"
    every = deb822.parse_paragraphs(text, where="x")
    assert [p["Package"] for p in every] == ["a", "b", "ab"]  # a blank line may hold blanks
    assert [p["Version"] for p in deb822.parse_paragraphs(text, where="x", containing="b")] == [
        "2",
        "3",
    ]
    assert deb822.parse_paragraphs(text, where="x", containing="zz") == []
    with pytest.raises(BadPackageError):  # what is parsed is parsed strictly
        deb822.parse_paragraphs(text + "\nPackage b\n", where="x", containing="b")
