"""lintian's report: tags counted by severity; only the listed tags fail a build."""

from __future__ import annotations

from releng.lintian import LintianReport

# What lintian 2.116 (bookworm) prints for a small package, with its deprecation noise.
REPORT = """\
E: foo: no-changelog usr/share/doc/foo/changelog.Debian.gz (non-native package)
E: foo: no-copyright-file
W: foo: no-manual-page [usr/bin/foo]
W: foo source: recommended-field foo_1.0-1.dsc Priority
I: foo: hardening-no-fortify-functions [usr/bin/foo]
N: an explanation line is not a tag
A future release will drop --no-tag-display-limit; please use '--tag-display-limit 0' instead.
"""


def test_tags_and_severities_are_counted() -> None:
    report = LintianReport.parse(REPORT)
    assert report.tags == {
        "no-changelog": 1,
        "no-copyright-file": 1,
        "no-manual-page": 1,
        "recommended-field": 1,
        "hardening-no-fortify-functions": 1,
    }
    assert report.summary() == "lintian: 2 error(s), 2 warning(s), 1 info(s)"
    assert LintianReport.parse("").summary() == "lintian: no tags"


def test_only_listed_tags_are_fatal_whatever_their_severity() -> None:
    report = LintianReport.parse(REPORT)
    assert report.fatal([]) == []  # errors alone fail nothing
    assert report.fatal(["no-manual-page", "not-there"]) == ["no-manual-page"]
