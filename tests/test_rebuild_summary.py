"""rebuild.json, read, written and merged in one place (releng.rebuild.summary)."""

from __future__ import annotations

from pathlib import Path

from releng.rebuild.summary import (
    RESULT_DIFFERS,
    RESULT_REPRODUCED,
    architectures,
    merge_reproduced,
    read_summary,
    write_summary,
)

AMD64 = {"result": RESULT_REPRODUCED, "architecture": "amd64",
         "packages": {"tally_1_amd64.deb": {"first": "a"}, "tally-doc_1_all.deb": {"first": "d"}}}  # fmt: skip
ARM64 = {"result": RESULT_REPRODUCED, "architecture": "arm64",
         "packages": {"tally_1_arm64.deb": {"first": "b"}}}  # fmt: skip


def test_two_reproduced_architectures_merge_into_one_summary() -> None:
    merged = merge_reproduced(AMD64, ARM64)
    assert merged is not None
    assert sorted(merged["packages"]) == [
        "tally-doc_1_all.deb", "tally_1_amd64.deb", "tally_1_arm64.deb"
    ]  # fmt: skip
    assert merged["architectures"] == ["amd64", "arm64"]
    assert architectures(merged) == ["amd64", "arm64"]
    # merged again with a third rebuild of amd64: still both, the later entry winning
    again = merge_reproduced(merged, {**AMD64, "packages": {"tally_1_amd64.deb": {"first": "c"}}})
    assert again is not None
    assert again["packages"]["tally_1_amd64.deb"] == {"first": "c"}
    assert again["architectures"] == ["amd64", "arm64"]


def test_a_rebuild_that_did_not_reproduce_adds_no_package() -> None:
    differs = {**ARM64, "result": RESULT_DIFFERS}
    merged = merge_reproduced(AMD64, differs)
    assert merged is not None
    assert "tally_1_arm64.deb" not in merged["packages"]
    assert merged["architectures"] == ["amd64"]
    assert merge_reproduced(differs, {**AMD64, "result": RESULT_DIFFERS}) is None


def test_read_what_was_written_and_nothing_from_a_missing_or_broken_file(tmp_path: Path) -> None:
    assert read_summary(tmp_path) is None
    write_summary(tmp_path, AMD64)
    assert read_summary(tmp_path) == AMD64
    (tmp_path / "rebuild.json").write_text("[1, 2]\n")
    assert read_summary(tmp_path) is None
    (tmp_path / "rebuild.json").write_text("{not json\n")
    assert read_summary(tmp_path) is None
