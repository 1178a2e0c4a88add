"""Signing-key tasks: rotate the keys that sign the repository (docs/key-rotation.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from releng.cli import Context, out, out_json, project, task

DEFAULT_REPO = "out/repo"


@task(
    help={
        "add": "start an overlap: FPR signs too, the keyring package gains it, every suite "
        "is republished",
        "retire": "end the overlap: FPR stops signing and leaves the keyring package (after "
        "[signing] overlap_days)",
        "force": "retire before the overlap has run its [signing] overlap_days",
        "status": "which keys sign, when each expires, how far the overlap has run",
        "repo": f"the repository directory to republish (default {DEFAULT_REPO})",
        "url": "the URL clients use, for the keyring package's .sources (default: [publish] "
        "public_url)",
        "json": "print --status as JSON",
    },
    aliases=["key-rotate"],
    auto_shortflags=False,  # long flags only (one meaning per flag across tasks)
)
def rotate_keys(  # noqa: PLR0917  (invoke maps each parameter to a --flag)
    c: Context,
    add: str = "",
    retire: str = "",
    force: bool = False,
    status: bool = False,
    repo: str = "",
    url: str = "",
    json: bool = False,
) -> None:
    """Rotate the signing keys: --add a key (overlap), --retire the old one, or --status."""
    from releng import gpg, key_rotation
    from releng.errors import SigningError

    proj = project(c)
    if status or not (add or retire):
        signer = gpg.signer_for(proj, os.environ, release=True)
        state = key_rotation.status(proj, signer)
        if json:
            out_json(state.as_json())
        else:
            for line in state.lines():
                out(line)
        return
    if repo.startswith("s3://"):
        raise SigningError(
            f"rotate-keys republishes a local repository, not {repo}: run it without --repo "
            "(it updates product.toml), then publish to S3 as usual: every publish signs with "
            "every configured key"
        )
    root = Path(repo or DEFAULT_REPO)
    root = root if root.is_absolute() else proj.root / root
    client_url = url or proj.config.publish.public_url
    if root.is_dir() and not client_url:
        raise SigningError(
            "the keyring package needs the URL clients use: pass --url URL "
            "or set [publish] public_url in product.toml"
        )
    with tempfile.TemporaryDirectory(prefix="releng-keyring-") as scratch:
        step, results = key_rotation.rotate(
            proj,
            os.environ,
            add=add,
            retire=retire,
            force=force,
            repo=root if root.is_dir() else None,
            url=client_url,
            scratch=Path(scratch),
        )
    if results:
        from releng.publish.front_page import write_front_page

        # the page's key, its SHA-256 and its blocks follow the keys at once
        write_front_page(root, proj, url=client_url)
    verb = "signs too" if step.action == "add" else "no longer signs"
    out(f"{step.key} {verb}; [signing] key = {', '.join(step.after)} in product.toml")
    if results:
        out(f"republished {', '.join(sorted(results))} in {root}, signed by every key")
    else:
        out(f"no repository at {root}: publish to apply (every publish signs with every key)")
    if step.action == "add":
        out("retire the old key after the overlap: invoke rotate-keys --retire OLDFPR")
