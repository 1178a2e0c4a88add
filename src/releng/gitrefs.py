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
import signal
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


def ref_name_problem(name: str) -> str | None:
    """Why ``git check-ref-format --branch`` refuses ``name``; None when it takes it.

    git's rules (git-check-ref-format(1)): no component starting with '.' or ending
    in '.lock', no '..', no control character, space, '~', '^', ':', '?', '*', '[' or
    '\\', no '@{', not '@', no leading, trailing or double '/', no trailing '.'; and a
    branch name may not start with '-'.
    """
    bad = re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name)
    problems = [
        (not name, "it is empty"),
        (name.startswith("-"), "it starts with '-'"),
        (bad is not None, f"it holds {bad[0]!r}" if bad else ""),
        (".." in name, "it holds '..'"),
        ("@{" in name, "it holds '@{'"),
        (name == "@", "it is '@'"),
        (name.startswith("/") or name.endswith("/") or "//" in name, "an empty '/' component"),
        (name.endswith("."), "it ends in '.'"),
        (any(c.startswith(".") for c in name.split("/")), "a component starts with '.'"),
        (any(c.endswith(".lock") for c in name.split("/")), "a component ends in '.lock'"),
    ]
    return next((why for failed, why in problems if failed), None)


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


# Seconds a clone, fetch, push or ls-remote may take before it is stopped: a remote that
# never answers (a firewall dropping packets, a server that accepts and stalls) must not
# hang a release. http(s) transfers also stop when slower than 1 KB/s for a minute.
NETWORK_TIMEOUT = 600.0
NETWORK_CONFIG = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60")


class GitTimeoutError(Exception):
    """A git command ran past its timeout (and was killed, with its helpers)."""


def run_git(
    cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float | None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a process group of its own; past ``timeout`` seconds, or on Ctrl-C,
    the whole group is killed (git and its ssh or remote-https helper, which would keep
    the pipes open). GitTimeoutError after a timeout."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise GitTimeoutError(shlex.join(cmd)) from None
        raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def git_detail(text: str, returncode: int) -> str:
    """git's error output as one line: every line of it (redacted), not only the last."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return redact("; ".join(lines) if lines else f"exit {returncode}")


def git(
    cwd: Path,
    *args: str,
    env: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    check: bool = True,
    what: str = "",
    remote: GitRemote | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run git in ``cwd`` without prompts; a failure is one ReleaseSourceError line.

    ``env``: the caller's environment (git's PATH, HOME, ssh agent), passed in from the edge;
    ``extra``: variables added for this command (credentials, a GNUPGHOME).

    ``remote``: the command talks to it over the network: it gets
    :data:`NETWORK_TIMEOUT` (or ``timeout``), and running past it is an error naming it.
    """
    network = NETWORK_CONFIG if remote is not None else ()
    cmd = ["git", "-c", "protocol.file.allow=always", "-c", "credential.helper=", *network, *args]
    log.debug("%s (in %s)", redact(shlex.join(cmd)), cwd)
    full_env = {**env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(extra or {})}
    limit = timeout if timeout is not None else (NETWORK_TIMEOUT if remote is not None else None)
    try:
        result = run_git(cmd, cwd=cwd, env=full_env, timeout=limit)
    except GitTimeoutError:
        raise ReleaseSourceError(
            f"git {what or args[0]} did not finish within {limit:.0f} s talking to {remote}; "
            "check that it is reachable (the URL, the network, a firewall), then run again"
        ) from None
    if check and result.returncode != 0:
        raise ReleaseSourceError(
            f"git {what or args[0]} failed: {git_detail(result.stderr, result.returncode)}"
        )
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
    cwd: Path,
    remote: GitRemote,
    refs: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float | None = None,
) -> dict[str, str]:
    """``{ref: object id}`` (and ``ref^{}``, the commit, for annotated tags) of ``refs`` in
    ``remote``. ls-remote lists a peeled ``^{}`` line only when asked for it by name."""
    patterns = [*refs, *(f"{r}^{{}}" for r in refs if r.startswith("refs/tags/"))]
    with credentials(remote, env) as extra:
        result = git(
            cwd,
            "ls-remote",
            "--",
            remote.url,
            *patterns,
            env=env,
            extra=extra,
            check=False,
            remote=remote,
            timeout=timeout,
        )
    if result.returncode != 0:
        raise ReleaseSourceError(
            f"cannot reach the public repository {remote}: "
            f"{git_detail(result.stderr, result.returncode)}; "
            "check [source] public_repository and its credentials"
        )
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        object_id, _, ref = line.partition("\t")
        found[ref] = object_id
    return found


def _local(gitdir: Path, ref: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(object id, commit) of ``ref`` in ``gitdir``; None when it does not exist."""
    obj = git(
        gitdir, "rev-parse", "--verify", "--quiet", "--end-of-options", ref, env=env, check=False
    )
    if obj.returncode != 0:
        return None
    commit = git(gitdir, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}", env=env)
    return obj.stdout.strip(), commit.stdout.strip()


def _is_ancestor(gitdir: Path, older: str, newer: str, env: Mapping[str, str]) -> bool:
    seen = git(
        gitdir, "cat-file", "-e", "--end-of-options", f"{older}^{{commit}}", env=env, check=False
    )
    if seen.returncode != 0:
        return False  # staging has never seen that commit: it cannot be in the branch's past
    ancestor = git(
        gitdir,
        "merge-base",
        "--is-ancestor",
        "--end-of-options",
        older,
        newer,
        env=env,
        check=False,
    )
    return ancestor.returncode == 0


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
        found = _local(gitdir, ref, env)
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
        elif ref.startswith("refs/heads/") and _is_ancestor(gitdir, public_object, commit, env):
            action = RefAction.FAST_FORWARD
        elif public_commit == commit:  # a tag made again: another tag object, the same commit
            raise ReleaseSourceError(
                f"the public repository's tag {ref.split('/', 2)[2]!r} is tag object "
                f"{public_object}, staging's is tag object {object_id}, both for commit "
                f"{commit}: the tag was made again; nothing was pushed: keep one of the two "
                "tags (delete the other by hand) and run again"
            )
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
            gitdir,
            *("push", "--atomic", "--porcelain", "--", public.url, *refspecs),
            env=env,
            extra=extra,
            check=False,
            remote=public,
        )
        if first.returncode != 0 and _NO_ATOMIC in first.stderr:
            log.warning(
                "%s does not support atomic pushes: pushing the branch, then the tag", public
            )
            for refspec in sorted(refspecs, key=lambda r: r.startswith("refs/tags/")):
                git(
                    gitdir,
                    *("push", "--porcelain", "--", public.url, refspec),
                    env=env,
                    extra=extra,
                    what="push",
                    remote=public,
                )
        elif first.returncode != 0:
            raise ReleaseSourceError(
                f"pushing {', '.join(u.short for u in pushing)} to {public} failed: "
                f"{git_detail(first.stderr + first.stdout, first.returncode)}; nothing was "
                "pushed (one atomic push); rerun once the public repository is reachable"
            )
    return pushing


def verify_tag(gitdir: Path, tag: str, keyring: Path, *, env: Mapping[str, str]) -> str:
    """``git verify-tag`` against ``keyring`` only (a throwaway GNUPGHOME); the signer's primary
    key fingerprint (gpg's status lines, read by :func:`releng.gpg.parse_status`)."""
    if not keyring.is_file():
        raise ReleaseSourceError(
            f"[source] tag_keyring {keyring} does not exist; point it at the release "
            "signers' public keys (armored or binary)"
        )
    with tempfile.TemporaryDirectory(prefix="releng-verify-tag-") as home:
        Path(home).chmod(0o700)
        imported = subprocess.run(
            ["gpg", "--batch", "--homedir", home, "--import", "--", str(keyring)],
            capture_output=True,
            check=False,
        )
        if imported.returncode != 0:
            raise ReleaseSourceError(f"[source] tag_keyring {keyring} holds no usable public key")
        result = git(
            gitdir,
            *("verify-tag", "--raw", "--", tag),
            env=env,
            extra={"GNUPGHOME": home},
            check=False,
        )
    from releng.gpg import parse_status

    good = [s for s in parse_status(result.stderr) if s.status == "good" and s.fingerprint]
    if result.returncode != 0 or not good:
        raise ReleaseSourceError(
            f"the release tag {tag!r} is not signed by a key in {keyring}; sign it "
            "(git tag -s) with a release key, or fix [source] tag_keyring"
        )
    return good[0].fingerprint
