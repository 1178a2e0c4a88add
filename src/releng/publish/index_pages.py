"""Browsable ``index.html`` pages for a published repository, like a web server's listings.

:func:`render_index` is pure: one directory's folders and files (size, date) in,
one HTML page out, saying when it was generated. :class:`IndexPages` applies it
to S3 for the directories whose contents changed (the sync reports them; see
:func:`releng.publish.sync.dirty_directories`), listing only those directories, one
delimiter listing each. A directory that no longer has anything loses its page.

The control area (``.releng/``) never appears in a page. Pages get a short
Cache-Control TTL, so CloudFront needs no invalidation for the pool's pages.

The root's page is the repository's front page (releng.publish.front_page) when the
repository's state holds one (``.releng/state/front-page.html``, written by every publish
and synced with the state): it is copied into place, and the listings stay below it.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from releng.publish.sync import (
    CONTROL_DIR,
    DEFAULT_SHORT_TTL,
    FRONT_PAGE,
    S3Url,
    delete_keys,
    is_not_found,
    list_keys,
    s3_errors,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

INDEX = "index.html"
# Past this many directories, one listing of everything is cheaper than one listing each.
FULL_LISTING_ABOVE = 50


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int = 0
    modified: dt.datetime | None = None


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render_index(
    directory: str, entries: Sequence[Entry], *, generated: dt.datetime, title: str = ""
) -> str:
    """Pure: the page for ``directory`` ('' is the root). Folders first, then files, by name."""
    shown = "/" + (directory + "/" if directory else "")
    heading = html.escape(f"{title} {shown}".strip() if title else f"Index of {shown}")
    rows: list[str] = []
    if directory:
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for entry in sorted(entries, key=lambda e: (not e.is_dir, e.name)):
        href = urllib.parse.quote(entry.name) + ("/" if entry.is_dir else "")
        label = html.escape(entry.name + ("/" if entry.is_dir else ""))
        if entry.is_dir:
            rows.append(f'<tr><td><a href="{href}">{label}</a></td><td>-</td><td></td></tr>')
            continue
        when = (
            entry.modified.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            if entry.modified
            else ""
        )
        rows.append(
            f'<tr><td><a href="{href}">{label}</a></td>'
            f'<td title="{entry.size} bytes">{html.escape(human_size(entry.size))}</td>'
            f"<td>{when}</td></tr>"
        )
    stamp = generated.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = "\n".join(rows)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{heading}</title>"
        "<style>body{font-family:sans-serif}td{padding:0 1em}th{text-align:left}</style>"
        f"</head><body><h1>{heading}</h1>\n"
        "<table><tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
        f"{body}\n</table>\n"
        f"<p><small>Generated {stamp}.</small></p>\n"
        "</body></html>\n"
    )


def directories_of(keys: Iterable[str]) -> set[str]:
    """Pure: every directory (relative, '' for the root) that holds one of ``keys``."""
    out: set[str] = {""}
    for key in keys:
        parts = key.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


def _hidden(rel: str) -> bool:
    return rel == CONTROL_DIR or rel.startswith(CONTROL_DIR + "/")


class IndexPages:
    """Writes index pages into one destination through one S3 client."""

    def __init__(
        self,
        client: S3Client,
        dest: S3Url,
        *,
        title: str = "",
        short_ttl: int = DEFAULT_SHORT_TTL,
        clock: Callable[[], dt.datetime] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.client = client
        self.dest = dest
        self.title = title
        self.short_ttl = short_ttl
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.dry_run = dry_run

    def listing(self, directory: str) -> list[Entry]:
        """One directory's folders and files (one delimiter listing; index.html left out)."""
        prefix = self.dest.key(directory + "/") if directory else self.dest.key_prefix
        entries: list[Entry] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.dest.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(prefix) :].rstrip("/")
                if name and not _hidden(f"{directory}/{name}".lstrip("/")):
                    entries.append(Entry(name, is_dir=True))
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if name and name != INDEX:
                    entries.append(Entry(name, False, obj["Size"], obj["LastModified"]))
        return entries

    def full_listing(self, directories: set[str]) -> dict[str, list[Entry]]:
        """Entries of many directories from one listing of the whole prefix (1 request per
        1,000 objects instead of one per directory)."""
        out: dict[str, list[Entry]] = {d: [] for d in directories}
        seen: set[tuple[str, str]] = set()
        for obj in list_keys(self.client, self.dest.bucket, self.dest.key_prefix):
            rel = self.dest.rel(obj["Key"])
            if _hidden(rel):
                continue
            parts = rel.split("/")
            parent = "/".join(parts[:-1])
            if parent in out and parts[-1] != INDEX:
                out[parent].append(Entry(parts[-1], False, obj["Size"], obj["LastModified"]))
            for i in range(len(parts) - 1):  # every ancestor lists its sub-directory
                ancestor, child = "/".join(parts[:i]), parts[i]
                if ancestor in out and (ancestor, child) not in seen:
                    seen.add((ancestor, child))
                    out[ancestor].append(Entry(child, is_dir=True))
        return out

    def update(self, directories: Iterable[str]) -> list[str]:
        """Remake the page of each directory; drop pages of directories now empty.

        Returns the keys (relative to the prefix) of pages written or deleted.
        """
        touched: list[str] = []
        gone: list[str] = []
        now = self._clock()
        wanted = {d for d in directories if not _hidden(d)}
        with s3_errors("update index pages", self.dest):
            listed = self.full_listing(wanted) if len(wanted) > FULL_LISTING_ABOVE else {}
            for directory in sorted(wanted):
                rel = f"{directory}/{INDEX}" if directory else INDEX
                if not directory and self._front_page():
                    touched.append(rel)
                    continue
                entries = listed[directory] if listed else self.listing(directory)
                if not entries and directory:
                    gone.append(rel)
                    continue
                page = render_index(directory, entries, generated=now, title=self.title)
                touched.append(rel)
                if self.dry_run:
                    continue
                self.client.put_object(
                    Bucket=self.dest.bucket,
                    Key=self.dest.key(rel),
                    Body=page.encode(),
                    ContentType="text/html; charset=utf-8",
                    CacheControl=f"public, max-age={self.short_ttl}",
                )
            if "" not in wanted and self._front_page():  # every publish changes what it shows
                touched.append(INDEX)
            if gone and not self.dry_run:
                delete_keys(self.client, self.dest.bucket, (self.dest.key(r) for r in gone))
        log.info("index pages: %d written, %d removed under %s", len(touched), len(gone), self.dest)
        return touched + gone

    def _front_page(self) -> bool:
        """Put the state's front page at the root's index.html; False when there is none.

        The state's copy may be stored gzipped (the sync packs private files when that is
        smaller, saying so in its metadata): the page is served plain.
        """
        import gzip

        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.dest.bucket, Key=self.dest.key(FRONT_PAGE))
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
        body = got["Body"].read()
        if got.get("Metadata", {}).get("encoding") == "gzip":
            body = gzip.decompress(body)
        if not self.dry_run:
            self.client.put_object(
                Bucket=self.dest.bucket,
                Key=self.dest.key(INDEX),
                Body=body,
                ContentType="text/html; charset=utf-8",
                CacheControl=f"public, max-age={self.short_ttl}",
            )
        return True

    def all_directories(self) -> set[str]:
        """Every public directory under the prefix, from one full listing (for a full rebuild)."""
        with s3_errors("list for index pages", self.dest):
            keys = [
                self.dest.rel(o["Key"])
                for o in list_keys(self.client, self.dest.bucket, self.dest.key_prefix)
            ]
        return {d for d in directories_of(k for k in keys if not _hidden(k)) if not _hidden(d)}
