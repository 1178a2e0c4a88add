"""Copying a release tag and branch from one git repository to another (the seam around git).

:func:`plan_ref_copy` compares what the staging repository has with what the
public one has and says, per ref, whether it is already there, is to be
pushed, or conflicts (another commit; a branch that would not fast-forward).
:func:`push_refs` pushes what the plan says, in one ``git push --atomic``
where the server supports it, so a tag never arrives without its branch.

Credentials: an HTTPS token is handed to git through ``GIT_ASKPASS`` reading
an environment variable, so it is never on a command line, in a file or in a
log line; URLs in messages have any ``user:password@`` removed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from releng.errors import ReleaseSourceError

log = logging.getLogger(__name__)

_ASKPASS_VAR = "RELENG_GIT_ASKPASS_TOKEN"
_NO_ATOMIC = "does not support --atomic"


def redact(text: str) -> str:
    """``https://user:secret@host/x`` -> ``https://***@host/x`` (for messages and logs)."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


@dataclass(frozen=True, kw_only=True)
class GitRemote:
    """A repository git can reach: a local path, a ``file://`` or a network URL."""

    url: str
    token_env: str = ""  # name of an environment variable with an HTTPS token (optional)

    def same_as(self, other: GitRemote) -> bool:
        return _canonical(self.url) == _canonical(other.url)

    def __str__(self) -> str:
        return redact(self.url)


def _canonical(url: str) -> str:
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" in url or url.startswith("git@"):
        return url.rstrip("/").removesuffix(".git")
    return str(Path(url).resolve()).removesuffix(".git")


class RefAction(enum.Enum):
    PRESENT = "present"  # the public repository has the same object: nothing to do
    CREATE = "create"  # the public repository lacks the ref
    FAST_FORWARD = "fast-forward"  # a branch that moves forward


@dataclass(frozen=True, kw_only=True)
class RefUpdate:
    ref: str  # refs/tags/X or refs/heads/Y
    object_id: str  # what staging has (a tag object for annotated tags)
    commit: str  # the commit it points at
    public_object: str  # what public has ("" when absent)
    action: RefAction

    @property
    def short(self) -> str:
        return self.ref.removeprefix("refs/tags/").removeprefix("refs/heads/")


@dataclass(frozen=True, kw_only=True)
class RefPlan:
    updates: tuple[RefUpdate, ...]

    @property
    def to_push(self) -> tuple[RefUpdate, ...]:
        return tuple(u for u in self.updates if u.action is not RefAction.PRESENT)


def git(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    what: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run git in ``cwd`` without prompts; a failure is one ReleaseSourceError line."""
    cmd = ["git", "-c", "protocol.file.allow=always", "-c", "credential.helper=", *args]
    log.debug("%s (in %s)", redact(shlex.join(cmd)), cwd)
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env, check=False)
    if check and result.returncode != 0:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        detail = redact(lines[-1] if lines else f"exit {result.returncode}")
        raise ReleaseSourceError(f"git {what or args[0]} failed: {detail}")
    return result


@contextlib.contextmanager
def credentials(remote: GitRemote, env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The environment git needs to authenticate to ``remote``: GIT_ASKPASS when a token is set."""
    token = env.get(remote.token_env, "") if remote.token_env else ""
    if not token:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="releng-askpass-") as tmp:
        script = Path(tmp) / "askpass"
        # Answers both prompts: a user name git ignores for tokens, and the token itself.
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "${_ASKPASS_VAR}"\n')
        script.chmod(stat.S_IRWXU)
        yield {"GIT_ASKPASS": str(script), _ASKPASS_VAR: token}


def remote_refs(
    cwd: Path, remote: GitRemote, refs: Sequence[str], *, env: Mapping[str, str]
) -> dict[str, str]:
    """``{ref: object id}`` (and ``ref^{}`` for peeled tags) of ``refs`` in ``remote``."""
    with credentials(remote, env) as extra:
        result = git(cwd, "ls-remote", remote.url, *refs, env=extra, check=False)
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        raise ReleaseSourceError(
            f"cannot reach the public repository {remote}: "
            f"{redact(lines[-1] if lines else 'git ls-remote failed')}; "
            "check [source] public_repository and its credentials"
        )
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        object_id, _, ref = line.partition("\t")
        found[ref] = object_id
    return found


def _local(gitdir: Path, ref: str) -> tuple[str, str] | None:
    """(object id, commit) of ``ref`` in ``gitdir``; None when it does not exist."""
    obj = git(gitdir, "rev-parse", "--verify", "--quiet", ref, check=False)
    if obj.returncode != 0:
        return None
    commit = git(gitdir, "rev-parse", "--verify", f"{ref}^{{commit}}")
    return obj.stdout.strip(), commit.stdout.strip()


def _is_ancestor(gitdir: Path, older: str, newer: str) -> bool:
    if git(gitdir, "cat-file", "-e", f"{older}^{{commit}}", check=False).returncode != 0:
        return False  # staging has never seen that commit: it cannot be in the branch's past
    return git(gitdir, "merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def plan_ref_copy(
    gitdir: Path,
    staging: str,
    public: GitRemote,
    *,
    tag: str,
    branch: str,
    env: Mapping[str, str],
) -> RefPlan:
    """What to push so that ``public`` has staging's ``tag`` (and ``branch``, when given).

    Refuses with one line: a ref staging lacks; a tag public has with another object;
    a public branch that staging's branch does not contain (no fast-forward).
    """
    wanted = [f"refs/tags/{tag}"] + ([f"refs/heads/{branch}"] if branch else [])
    local: dict[str, tuple[str, str]] = {}
    for ref in wanted:
        found = _local(gitdir, ref)
        if found is None:
            kind = "tag" if ref.startswith("refs/tags/") else "branch"
            raise ReleaseSourceError(
                f"release {kind} {ref.split('/', 2)[2]!r} does not exist in the staging "
                f"repository {redact(staging)}; create and push it there first"
            )
        local[ref] = found
    theirs = remote_refs(gitdir, public, wanted, env=env)
    updates = []
    for ref in wanted:
        object_id, commit = local[ref]
        public_object = theirs.get(ref, "")
        public_commit = theirs.get(f"{ref}^{{}}", public_object)
        if not public_object:
            action = RefAction.CREATE
        elif public_object == object_id:
            action = RefAction.PRESENT
        elif ref.startswith("refs/heads/") and _is_ancestor(gitdir, public_object, commit):
            action = RefAction.FAST_FORWARD
        else:
            what = "tag" if ref.startswith("refs/tags/") else "branch"
            how = "" if what == "tag" else " and staging's branch does not contain it"
            raise ReleaseSourceError(
                f"the public repository's {what} {ref.split('/', 2)[2]!r} is at commit "
                f"{public_commit}, staging's at commit {commit}{how}; nothing was pushed: "
                "find out which is right, and move or delete the wrong one by hand"
            )
        updates.append(
            RefUpdate(
                ref=ref,
                object_id=object_id,
                commit=commit,
                public_object=public_object,
                action=action,
            )
        )
    return RefPlan(updates=tuple(updates))


def push_refs(
    gitdir: Path, public: GitRemote, plan: RefPlan, *, env: Mapping[str, str]
) -> tuple[RefUpdate, ...]:
    """Push the plan's refs that public lacks: all in one atomic push where the server can."""
    pushing = plan.to_push
    if not pushing:
        return ()
    refspecs = [f"{u.ref}:{u.ref}" for u in pushing]
    with credentials(public, env) as extra:
        first = git(
            gitdir, "push", "--atomic", "--porcelain", public.url, *refspecs, env=extra, check=False
        )
        if first.returncode != 0 and _NO_ATOMIC in first.stderr:
            log.warning(
                "%s does not support atomic pushes: pushing the branch, then the tag", public
            )
            for refspec in sorted(refspecs, key=lambda r: r.startswith("refs/tags/")):
                git(gitdir, "push", "--porcelain", public.url, refspec, env=extra, what="push")
        elif first.returncode != 0:
            lines = [ln for ln in (first.stderr + first.stdout).splitlines() if ln.strip()]
            raise ReleaseSourceError(
                f"pushing {', '.join(u.short for u in pushing)} to {public} failed: "
                f"{redact(lines[-1] if lines else 'git push failed')}; nothing was pushed "
                "(one atomic push); rerun once the public repository is reachable"
            )
    return pushing


def verify_tag(gitdir: Path, tag: str, keyring: Path) -> str:
    """``git verify-tag`` against ``keyring`` only (a throwaway GNUPGHOME); the signer's key id."""
    if not keyring.is_file():
        raise ReleaseSourceError(
            f"[source] tag_keyring {keyring} does not exist; point it at the release "
            "signers' public keys (armored or binary)"
        )
    with tempfile.TemporaryDirectory(prefix="releng-verify-tag-") as home:
        Path(home).chmod(0o700)
        imported = subprocess.run(
            ["gpg", "--batch", "--homedir", home, "--import", str(keyring)],
            capture_output=True,
            check=False,
        )
        if imported.returncode != 0:
            raise ReleaseSourceError(f"[source] tag_keyring {keyring} holds no usable public key")
        result = git(gitdir, "verify-tag", "--raw", tag, env={"GNUPGHOME": home}, check=False)
    good = re.search(r"^\[GNUPG:\] VALIDSIG (\S+)", result.stderr, re.MULTILINE)
    if result.returncode != 0 or not good:
        raise ReleaseSourceError(
            f"the release tag {tag!r} is not signed by a key in {keyring}; sign it "
            "(git tag -s) with a release key, or fix [source] tag_keyring"
        )
    return good.group(1)
