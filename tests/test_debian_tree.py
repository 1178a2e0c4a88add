"""The debian/ tree prepared on the host: deb822 nightly rename and a prepended changelog."""

from __future__ import annotations

import subprocess
from pathlib import Path

from debian.deb822 import Deb822

from releng.debian_tree import (
    ChangelogEntry,
    prepend_changelog,
    rename_control,
    rewrite_relations,
    stage_debian_dir,
)

CONTROL = """\
Source: foo+bar
Build-Depends: debhelper-compat (= 13)

Package: foo+bar
Architecture: any
Depends: ${shlibs:Depends}, foo+bar-data (= ${source:Version}),
 libfoo+bar1 [amd64] | foo+bar-data:any
Breaks: foo+bar-nightly (<< 1.0)
Description: x
 long text naming foo+bar

Package: foo+bar-data
Architecture: all
Recommends: foo+bar
Description: data

Package: libfoo+bar1
Architecture: any
Replaces: foo+barx
Description: lib
"""
ENTRY = ChangelogEntry(
    package="foo+bar-nightly",
    version="2026.11.30-1~deb12u1",
    distribution="bookworm",
    maintainer="A Packager <a@example.org>",
    date="Mon, 30 Nov 2026 00:00:00 +0000",
    text="Build of foo+bar-nightly 2026.11.30 for bookworm.",
)


def test_relations_are_rewritten_by_whole_names_only() -> None:
    mapping = {"tally": "tally-nightly"}
    assert (
        rewrite_relations("tally (>= 1), tally-doc | tally+x, ${misc:Depends}", mapping)
        == "tally-nightly (>= 1), tally-doc | tally+x, ${misc:Depends}"
    )


def test_a_product_whose_name_has_a_plus_is_renamed_with_its_relations() -> None:
    text, renamed = rename_control(CONTROL, name="foo+bar", package="foo+bar-nightly")
    assert renamed == {
        "foo+bar": "foo+bar-nightly",
        "foo+bar-data": "foo+bar-nightly-data",
        "libfoo+bar1": "libfoo+bar1-nightly",
    }
    source, main, data, lib = Deb822.iter_paragraphs(text.splitlines(keepends=True))
    assert source["Source"] == "foo+bar-nightly"
    assert main["Package"] == "foo+bar-nightly"
    assert main["Depends"] == (
        "${shlibs:Depends}, foo+bar-nightly-data (= ${source:Version}),\n"
        " libfoo+bar1-nightly [amd64] | foo+bar-nightly-data:any"
    )
    assert main["Breaks"] == "foo+bar (<< 1.0)"  # the release's reference to the nightly swaps
    assert main["Conflicts"] == main["Replaces"] == "foo+bar"
    assert main["Description"].endswith("long text naming foo+bar")  # prose is left alone
    assert list(main)[-1] == "Description"
    assert data["Recommends"] == "foo+bar-nightly"
    assert (data["Conflicts"], data["Replaces"]) == ("foo+bar-data", "foo+bar-data")
    assert lib["Replaces"] == "foo+barx, libfoo+bar1"


def test_a_supplied_changelog_gets_the_new_entry_on_top(tmp_path: Path) -> None:
    path = tmp_path / "changelog"
    supplied = (
        "foo+bar (1.0-1) unstable; urgency=low\n\n  * Initial release.\n\n"
        " -- A Packager <a@example.org>  Fri, 02 Jan 2026 00:00:00 +0000\n"
    )
    path.write_text(supplied)
    prepend_changelog(path, ENTRY)
    text = path.read_text()
    assert text.startswith("foo+bar-nightly (2026.11.30-1~deb12u1) bookworm; urgency=medium\n")
    assert text.endswith(supplied)
    parsed = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(path), "-S", "Version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert parsed.stdout.strip() == "2026.11.30-1~deb12u1"
    prepend_changelog(path, ENTRY)  # this version is on top already: kept as it is
    assert path.read_text() == text


def test_staging_copies_renames_files_and_leaves_the_source_alone(tmp_path: Path) -> None:
    src = tmp_path / "debian"
    src.mkdir()
    (src / "control").write_text(CONTROL)
    (src / "foo+bar.install").write_text("usr/bin/foo\n")
    (src / "foo+bar-data.docs").write_text("README\n")
    (src / "rules").write_text("#!/usr/bin/make -f\n")
    dest = tmp_path / "staged"
    stage_debian_dir(src, dest, name="foo+bar", package="foo+bar-nightly", entry=ENTRY)
    assert sorted(p.name for p in dest.iterdir()) == [
        "changelog",
        "control",
        "foo+bar-nightly-data.docs",
        "foo+bar-nightly.install",
        "rules",
    ]
    assert (src / "control").read_text() == CONTROL
    assert not (src / "changelog").exists()
