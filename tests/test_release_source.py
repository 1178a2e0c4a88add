"""publish-release-source: the embargo, the source copy and the tag/branch push, with real git.

Two bare repositories stand in for staging's remote and the public repository
(file:// transport); the staging repository is the project's own checkout, as
for the demo. Packages are published into a real signed local repository by
``invoke update-repos``, and the embargo check reads it as apt would.
"""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from releng.errors import ReleaseSourceError
from releng.project import Project
from releng.publish.release_source import expected_publications
from releng.version import Version
from tests.apt_debs import make_deb
from tests.fixtures.gpg import TestKey, make_key
from tests.fixtures.project import git
from tests.test_apt_tasks import signing_toml
from tests.test_cli import assert_one_error_line, invoke

VERSION = "1.0.0"
TAG = "tally-v1.0.0"
BRANCH = "tally-1.0"


def _bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def _refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


@pytest.fixture
def release(make_project: Callable[[str], Project], gpg_key: TestKey, tmp_path: Path):
    """A project whose staging checkout has an annotated release tag and a release branch,
    an empty public bare repository, and the environment that signs with the test key."""
    public = _bare(tmp_path / "public.git")
    project = make_project(
        signing_toml(gpg_key)
        + f'[source]\npublic_repository = "{public}"\nrelease_branch = "{{name}}-{{major}}.{{minor}}"\n'
    )
    git(project.root, "tag", "-f", "-a", "-m", "tally 1.0.0", TAG)
    git(project.root, "branch", BRANCH)
    env = {"TEST_PASSPHRASE": gpg_key.passphrase}
    made = invoke("make-source-tarball", "--version", VERSION, root=project.root, env=env)
    assert made.returncode == 0, made.stderr
    return project, public, env


def _publish_packages(project: Project, env: dict[str, str], *, skip: str = "") -> None:
    """Builds of every target in out/1.0.0/, then update-repos into out/repo (real, signed)."""
    for item in expected_publications(project, Version.parse(VERSION)):
        out = project.root / "out" / VERSION / item.distro
        if item.distro == skip or out.is_dir():
            continue
        out.mkdir(parents=True)
        make_deb(out, item.package, item.version)
    result = invoke("update-repos", "--version", VERSION, root=project.root, env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_source_goes_public_only_after_the_packages_are_live(release) -> None:
    project, public, env = release
    # Before the packages are published: refused, the public repository unchanged.
    early = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert_one_error_line(early, "the embargo holds")
    assert _refs(public) == {}
    assert not (project.root / "out/repo/source").exists()

    _publish_packages(project, env)
    dry = invoke("publish-release-source", VERSION, "--dry-run", root=project.root, env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"would push refs/tags/{TAG} (create" in dry.stdout
    assert f"would push refs/heads/{BRANCH} (create" in dry.stdout
    assert _refs(public) == {}
    assert not (project.root / "out/repo/source").exists()

    done = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert done.returncode == 0, done.stderr
    staging = _refs(project.root)
    assert _refs(public) == {
        f"refs/tags/{TAG}": staging[f"refs/tags/{TAG}"],  # the same tag object, not a new one
        f"refs/heads/{BRANCH}": staging[f"refs/heads/{BRANCH}"],
    }
    assert git(public, "cat-file", "-t", TAG) == "tag"
    names = sorted(p.name for p in (project.root / "out/repo/source").iterdir())
    assert names == sorted(
        [
            "tally-1.0.0.tar.gz",
            "tally-1.0.0.tar.gz.asc",
            "tally-1.0.0.SHA256SUMS",
            "tally-1.0.0.SHA256SUMS.asc",
        ]
    )
    assert (project.root / "out/repo/source/tally-1.0.0.tar.gz").read_bytes() == (
        project.root / "out/tally-1.0.0.tar.gz"
    ).read_bytes()

    # A rerun converges: nothing to push, the public repository unchanged.
    before = _refs(public)
    again = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert again.returncode == 0, again.stderr
    assert "pushed" not in again.stdout
    assert f"refs/tags/{TAG} already at commit" in again.stdout
    assert _refs(public) == before


@pytest.mark.slow
def test_one_suite_missing_holds_the_embargo_and_force_overrides_it(release) -> None:
    project, public, env = release
    skipped = project.targets()[-1]
    _publish_packages(project, env, skip=skipped)
    held = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert_one_error_line(held, "the embargo holds")
    assert _refs(public) == {}
    forced = invoke("publish-release-source", VERSION, "--force", root=project.root, env=env)
    assert forced.returncode == 0, forced.stderr
    assert "--force" in forced.stderr and "goes public although" in forced.stderr
    assert f"refs/tags/{TAG}" in _refs(public)


@pytest.mark.slow
def test_a_conflicting_tag_in_public_is_refused_naming_both_commits(release, tmp_path) -> None:
    project, public, env = release
    _publish_packages(project, env)
    # Someone pushed a tag of the same name at another commit to the public repository.
    other = tmp_path / "other"
    git(tmp_path, "init", "-q", "-b", "main", str(other))
    (other / "f").write_text("other\n")
    git(other, "add", "f")
    git(other, "commit", "-q", "-m", "other")
    git(other, "tag", TAG)
    git(other, "push", "-q", str(public), f"refs/tags/{TAG}")
    public_commit = git(other, "rev-parse", "HEAD")
    before = _refs(public)
    result = invoke("publish-release-source", VERSION, root=project.root, env=env)
    staging_commit = git(project.root, "rev-parse", f"{TAG}^{{commit}}")
    assert_one_error_line(result, public_commit)
    assert staging_commit in result.stderr.strip().splitlines()[-1]
    assert _refs(public) == before  # the branch was not pushed either
    assert not (project.root / "out/repo/source").exists()  # refused before any write


@pytest.mark.slow
def test_a_branch_that_would_not_fast_forward_is_refused(release) -> None:
    project, public, env = release
    _publish_packages(project, env)
    # Public's release branch has a commit staging's branch does not contain.
    git(project.root, "push", "-q", str(public), f"refs/heads/{BRANCH}")
    work = Path(str(public) + "-work")
    git(public.parent, "clone", "-q", "-b", BRANCH, str(public), str(work))
    (work / "hotfix").write_text("only in public\n")
    git(work, "add", "hotfix")
    git(work, "commit", "-q", "-m", "hotfix only in public")
    git(work, "push", "-q", "origin", BRANCH)
    result = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert_one_error_line(result, "does not contain it")
    assert f"refs/tags/{TAG}" not in _refs(public)


@pytest.mark.slow
def test_a_branch_that_moved_forward_in_staging_is_fast_forwarded(release) -> None:
    project, public, env = release
    _publish_packages(project, env)
    git(project.root, "push", "-q", str(public), f"{TAG}~0:refs/heads/{BRANCH}")
    git(project.root, "checkout", "-q", BRANCH)
    git(project.root, "commit", "-q", "--allow-empty", "-m", "release notes")
    result = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert result.returncode == 0, result.stderr
    assert f"refs/heads/{BRANCH} (fast-forward" in result.stdout
    assert _refs(public)[f"refs/heads/{BRANCH}"] == git(project.root, "rev-parse", BRANCH)


@pytest.mark.slow
def test_bad_input_is_one_line_and_nothing_is_pushed(
    make_project: Callable[[str], Project], gpg_key: TestKey, tmp_path: Path
) -> None:
    env = {"TEST_PASSPHRASE": gpg_key.passphrase}
    # The public repository is unreachable.
    project = make_project(
        signing_toml(gpg_key) + f'[source]\npublic_repository = "{tmp_path / "nowhere.git"}"\n',
        name="unreachable",
    )
    assert (
        invoke("make-source-tarball", "--version", VERSION, root=project.root, env=env).returncode
        == 0
    )
    _publish_packages(project, env)
    assert_one_error_line(
        invoke("publish-release-source", VERSION, root=project.root, env=env),
        "cannot reach the public repository",
    )
    assert not (project.root / "out/repo/source").exists()
    # The release tag is missing in staging.
    git(project.root, "tag", "-d", TAG)
    git(project.root, "init", "-q", "--bare", str(tmp_path / "nowhere.git"))
    assert_one_error_line(
        invoke("publish-release-source", VERSION, root=project.root, env=env),
        f"release tag {TAG!r} does not exist in the staging repository",
    )
    assert _refs(tmp_path / "nowhere.git") == {}
    # The public repository is the staging repository itself.
    same = make_project("", name="same")
    (same.root / "product.toml").write_text(f'[source]\npublic_repository = "{same.root}"\n')
    assert_one_error_line(
        invoke("publish-release-source", VERSION, root=same.root, env=env),
        "is the staging repository itself",
    )
    # A nightly has nothing to push: said, exit 0.
    nightly = invoke("publish-release-source", "2026.11.20", root=same.root, env=env)
    assert nightly.returncode == 0, nightly.stderr
    assert "nothing to push" in nightly.stdout


@pytest.mark.slow
def test_the_tag_signature_is_verified_before_anything_is_pushed(
    make_project: Callable[[str], Project], gpg_key: TestKey, tmp_path: Path
) -> None:
    signer = make_key(tmp_path / "release-signer", name="release signer", passphrase=None)
    stranger = make_key(tmp_path / "stranger", name="stranger", passphrase=None)
    good = signer.public_keyring(tmp_path / "release-keys.gpg")
    bad = stranger.public_keyring(tmp_path / "stranger-keys.gpg")
    public = _bare(tmp_path / "public.git")
    env = {"TEST_PASSPHRASE": gpg_key.passphrase}
    base = signing_toml(gpg_key) + f'[source]\npublic_repository = "{public}"\n'
    project = make_project(base + f'tag_keyring = "{bad}"\n')
    subprocess.run(
        [
            "git",
            "-c",
            f"user.signingkey={signer.fingerprint}",
            "-c",
            "user.name=r",
            "-c",
            "user.email=r@releng.invalid",
            "tag",
            "-f",
            "-s",
            "-m",
            "signed",
            TAG,
        ],
        cwd=project.root,
        env={"GNUPGHOME": str(signer.home), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    assert (
        invoke("make-source-tarball", "--version", VERSION, root=project.root, env=env).returncode
        == 0
    )
    _publish_packages(project, env)
    refused = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert_one_error_line(refused, "is not signed by a key in")
    assert _refs(public) == {}
    (project.root / "product.toml").write_text(base + f'tag_keyring = "{good}"\n')
    accepted = invoke("publish-release-source", VERSION, root=project.root, env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert f"refs/tags/{TAG}" in _refs(public)


@pytest.mark.aws
def test_against_the_bucket_the_embargo_reads_the_published_suites(
    release, moto_server, monkeypatch, tmp_path
) -> None:
    """--dest: the embargo reads the bucket's suites; the source goes from scratch to source/."""
    from releng.gpg import Signer
    from releng.publish import flows
    from releng.publish.release_source import publish_release_source
    from releng.publish.sync import S3Url, SyncOptions, s3_client

    project, public, env = release
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    client = s3_client()
    bucket, scratch = f"pub-{tmp_path.name[-8:]}".lower(), f"scr-{tmp_path.name[-8:]}".lower()
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=scratch)
    dest = flows.Destination(
        s3=client,
        url=S3Url(bucket, "apt"),
        lock=flows.LockOptions(timeout=60, poll=0.2),
        sync=SyncOptions(grace=dt.timedelta(0)),
    )
    version = Version.parse(VERSION)
    signing = project.config.signing
    signer = Signer(
        gnupghome=Path(signing.gnupghome), key=signing.key, passphrase=env["TEST_PASSPHRASE"]
    )
    for item in expected_publications(project, version):
        out = project.build_dir(version, item.distro)
        if not out.is_dir():
            out.mkdir(parents=True)
            make_deb(out, item.package, item.version)
            flows.upload_build(client, project, version, item.distro, scratch=scratch)
    flows.upload_build(client, project, version, "source", scratch=scratch)
    run = {"env": env, "repo": tmp_path / "unused", "dest": dest, "scratch": scratch}

    with pytest.raises(ReleaseSourceError, match="the embargo holds"):
        publish_release_source(project, version, **run)
    assert _refs(public) == {}
    flows.update_repos(
        project, signer, version=version, dest=dest, scratch=scratch, work=tmp_path / "work"
    )
    result = publish_release_source(project, version, **run)
    assert [u.ref for u in result.pushed] == [f"refs/tags/{TAG}", f"refs/heads/{BRANCH}"]
    assert "source/tally-1.0.0.tar.gz" in result.copied
    body = client.get_object(Bucket=bucket, Key="apt/source/tally-1.0.0.tar.gz")["Body"].read()
    assert body == (project.out_dir / "tally-1.0.0.tar.gz").read_bytes()
    assert f"refs/tags/{TAG}" in _refs(public)


# --- issue 23: git as an attacker or a dead network would have it (items 1, 8, 13) ---


def _staging_with_tag(tmp_path: Path) -> tuple[Path, str]:
    staging = tmp_path / "staging"
    git(tmp_path, "init", "-q", "-b", "main", str(staging))
    git(staging, "commit", "-q", "--allow-empty", "-m", "one")
    git(staging, "tag", "-a", "-m", "first", TAG)
    return staging, git(staging, "rev-parse", "HEAD")


def test_git_never_reads_a_remote_as_an_option(tmp_path: Path) -> None:
    from releng.gitrefs import GitRemote, RefAction, RefPlan, RefUpdate, push_refs, remote_refs

    staging, commit = _staging_with_tag(tmp_path)
    mark = tmp_path / "ran"
    hostile = GitRemote(url=f"--upload-pack=touch {mark};false")
    with pytest.raises(ReleaseSourceError, match="cannot reach the public repository"):
        remote_refs(staging, hostile, [f"refs/tags/{TAG}"], env={})
    update = RefUpdate(
        ref=f"refs/tags/{TAG}", object_id=commit, commit=commit, public_object="",
        action=RefAction.CREATE,
    )  # fmt: skip
    pushing = GitRemote(url=f"--receive-pack=touch {mark};false")
    with pytest.raises(ReleaseSourceError, match="failed"):
        push_refs(staging, pushing, RefPlan(updates=(update,)), env={})
    assert not mark.exists(), "git ran a command named by the remote's URL"


def test_a_remote_that_never_answers_is_stopped_naming_it(tmp_path: Path) -> None:
    import socket

    from releng.gitrefs import GitRemote, remote_refs

    staging, _ = _staging_with_tag(tmp_path)
    with socket.socket() as server:  # accepts the connection (the kernel does), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"git://127.0.0.1:{server.getsockname()[1]}/silent.git"
        with pytest.raises(ReleaseSourceError) as err:
            remote_refs(staging, GitRemote(url=url), [f"refs/tags/{TAG}"], env={}, timeout=2)
    assert "did not finish within 2 s" in str(err.value)
    assert url in str(err.value)


def test_a_tag_made_again_at_the_same_commit_is_not_called_two_commits(tmp_path: Path) -> None:
    from releng.gitrefs import GitRemote, plan_ref_copy

    staging, commit = _staging_with_tag(tmp_path)
    public = _bare(tmp_path / "public.git")
    git(staging, "push", "-q", str(public), f"refs/tags/{TAG}")
    staging_tag = git(staging, "rev-parse", TAG)
    git(staging, "tag", "-f", "-a", "-m", "made again", TAG)  # another tag object, same commit
    with pytest.raises(ReleaseSourceError) as err:
        plan_ref_copy(staging, str(staging), GitRemote(url=str(public)), tag=TAG, branch="", env={})
    message = str(err.value)
    assert f"both for commit {commit}" in message
    assert f"tag object {staging_tag}" in message
    assert "made again" in message


def test_a_conflicting_annotated_tag_names_the_commit_not_the_tag_object(tmp_path: Path) -> None:
    from releng.gitrefs import GitRemote, plan_ref_copy

    staging, commit = _staging_with_tag(tmp_path)
    public = _bare(tmp_path / "public.git")
    git(staging, "commit", "-q", "--allow-empty", "-m", "two")
    git(staging, "tag", "-a", "-m", "elsewhere", "other")
    git(staging, "push", "-q", str(public), f"refs/tags/other:refs/tags/{TAG}")
    moved = git(staging, "rev-parse", "HEAD")
    with pytest.raises(ReleaseSourceError) as err:
        plan_ref_copy(staging, str(staging), GitRemote(url=str(public)), tag=TAG, branch="", env={})
    assert f"is at commit {moved}, staging's at commit {commit}" in str(err.value)


def test_git_errors_keep_every_line(tmp_path: Path) -> None:
    from releng.gitrefs import GitRemote, remote_refs

    staging, _ = _staging_with_tag(tmp_path)
    with pytest.raises(ReleaseSourceError) as err:
        url = f"file://{tmp_path}/does-not-exist.git"
        remote_refs(staging, GitRemote(url=url), [f"refs/tags/{TAG}"], env={})
    message = str(err.value)
    assert "\n" not in message
    assert "does not appear to be a git repository" in message
    assert "the repository exists" in message


# The modules that build git, gpg, dpkg, docker and mmdebstrap command lines from what a
# user configures or types (this area's; other areas' are listed in their own tests).
COMMAND_BUILDERS = ["src/releng/gitrefs.py", "src/releng/source.py"]
_PROGRAMS = {"git", "gpg", "gpgv", "dpkg", "dpkg-deb", "docker", "mmdebstrap"}
_GIT_HELPERS = {"git", "_git"}  # gitrefs.git(cwd, *args), source._git(cwd, *args)
_END = {"--", "--end-of-options"}
_VALUE_OPTIONS = {"--homedir", "--keyring", "--output"}  # what follows is their value
_PASS_THROUGH = {"args", "network", "cmd"}  # the helpers' own *args, not a value
# Command lines that move elsewhere this round: source.py's gpgv goes to releng.gpg.verify.
_MOVING = {("src/releng/source.py", "gpgv")}


def _spread(args: list[ast.expr]) -> list[ast.expr]:
    """``*("push", "--", url)`` as its items."""
    out: list[ast.expr] = []
    for arg in args:
        if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Tuple):
            out += arg.value.elts
        else:
            out.append(arg)
    return out


def _command_lines(module: str) -> list[tuple[int, list[ast.expr]]]:
    """(line, arguments) of each command line built in ``module``: a list starting with a
    program's name, or a call of a git helper (whose first argument is the directory)."""
    found: list[tuple[int, list[ast.expr]]] = []
    tree = ast.parse((Path(__file__).resolve().parents[1] / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant):
            program = node.elts[0].value
            if program in _PROGRAMS and (module, program) not in _MOVING:
                found.append((node.lineno, _spread(node.elts[1:])))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in _GIT_HELPERS:
            found.append((node.lineno, _spread(node.args[1:])))
    return found


def _unguarded(args: list[ast.expr]) -> list[str]:
    """The values (not literals) that come before any ``--``: git or gpg reads them as options."""
    bad = []
    for i, arg in enumerate(args):
        if isinstance(arg, ast.Constant) and arg.value in _END:
            break
        value_of_option = i > 0 and getattr(args[i - 1], "value", None) in _VALUE_OPTIONS
        pass_through = (
            isinstance(arg, ast.Starred) and getattr(arg.value, "id", "") in _PASS_THROUGH
        )
        if not isinstance(arg, ast.Constant) and not value_of_option and not pass_through:
            bad.append(ast.unparse(arg))
    return bad


@pytest.mark.parametrize("module", COMMAND_BUILDERS)
def test_every_value_in_a_command_line_comes_after_an_end_of_options(module: str) -> None:
    lines = _command_lines(module)
    assert lines, f"{module}: no command lines found (did the builders move?)"
    bad = [f"{module}:{n}: {', '.join(v)}" for n, args in lines if (v := _unguarded(args))]
    assert not bad, "values before any '--' or '--end-of-options':\n" + "\n".join(bad)
