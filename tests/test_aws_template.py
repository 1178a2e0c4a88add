"""The CloudFormation template: generated, committed, lint-clean, and deploying the committed ASL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from releng.aws import statemachine, template
from releng.aws import steps as S

ROOT = Path(__file__).resolve().parents[1]


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    return {suffix: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None}


_CfnLoader.add_multi_constructor("!", _tag)


def _load() -> dict:
    return yaml.load((ROOT / template.TEMPLATE_FILE).read_text(), Loader=_CfnLoader)


def test_committed_template_is_the_generated_one() -> None:
    committed = (ROOT / template.TEMPLATE_FILE).read_text(encoding="utf-8")
    assert committed == template.dumps(ROOT), "run `invoke generate-aws` and commit aws/"


def test_cfn_lint_passes() -> None:
    exe = shutil.which("cfn-lint")
    assert exe, "cfn-lint is missing: pip install -e '.[test]'"
    proc = subprocess.run(
        [exe, str(ROOT / template.TEMPLATE_FILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_state_machine_is_the_committed_definition_with_every_placeholder_mapped() -> None:
    props = _load()["Resources"]["StateMachine"]["Properties"]
    assert props["DefinitionString"] == (ROOT / statemachine.DEFINITION_FILE).read_text()
    assert sorted(props["DefinitionSubstitutions"]) == statemachine.placeholders()


def test_least_privilege_builders_never_write_downloads() -> None:
    res = _load()["Resources"]
    builder = json.dumps(res["BuilderRole"]["Properties"]["Policies"])
    publisher = json.dumps(res["PublisherRole"]["Properties"]["Policies"])
    assert "DownloadsBucket" not in builder
    assert "DownloadsBucket" in publisher
    assert "CreateInvalidation" not in json.dumps(res["ParseInputFunctionRole"]["Properties"])
    for queue in S.WORKER_QUEUES:
        data = res[f"{queue.capitalize()}LaunchTemplate"]["Properties"]["LaunchTemplateData"]
        assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert res["PublishQueue"]["Properties"]["FifoQueue"] is True
    for name, resource in res.items():
        if resource["Type"] == "AWS::SQS::Queue" and not name.endswith("Dlq"):
            assert "RedrivePolicy" in resource["Properties"], name
    assert (
        res["ScratchBucket"]["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]
        is True
    )


def test_lambda_zip_imports_on_its_own(tmp_path) -> None:
    """The Lambda code is self-contained: the entry point imports from the zip alone."""
    import io
    import os
    import sys
    import zipfile

    from releng.aws import deploy
    from releng.aws.catalog import Catalog
    from releng.project import Project

    data = deploy.lambda_zip(ROOT, Catalog.from_project(Project.load(ROOT)))
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    code = (
        "import handlers, releng, releng.publish; "
        "print(releng.__file__); print(sorted(handlers._CATALOG.distros))"
    )
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1", "RELENG_STACK": "t"}
    # boto3 from site-packages, releng only from the zip (not this checkout's src/).
    paths = [p for p in sys.path[1:] if p and not p.startswith(str(ROOT))]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path[1:1] = {paths!r}; {code}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, distros = proc.stdout.splitlines()
    assert first.startswith(str(tmp_path))
    assert "debian-12-bookworm" in distros
