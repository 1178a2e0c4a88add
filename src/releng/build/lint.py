"""lintian on a finished build, when the plan says so: its report joins the output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from releng.build.plan import BuildFailed, BuildPlan, Owner
from releng.digest import file_sha256
from releng.engine import Engine


def lint(
    engine: Engine,
    plan: BuildPlan,
    out_tmp: Path,
    files: list[str],
    digests: dict[str, str],
    *,
    owner: Owner,
    record: Callable[[str], None],
    log_path: Path,
) -> list[str]:
    """When the plan says so, lintian on the build's .changes; its report joins the output
    (``files`` and ``digests``)."""
    from releng.lintian import REPORT, ensure_lintian_image, run_lintian

    if plan.lintian_fail_on is None:
        return files
    changes = next(f for f in files if f.endswith(".changes"))  # smoke.finish checked
    record(f"releng: lintian {changes}")
    image = ensure_lintian_image(
        engine, name=plan.project.name, distro_id=plan.distro.id, builder_id=plan.builder.id
    )
    report = run_lintian(engine, image, out_tmp, changes, user=owner.build_user)
    (out_tmp / REPORT).write_text(report.text, encoding="utf-8")
    digests[REPORT] = file_sha256(out_tmp / REPORT)
    record(f"releng: {report.summary()}; report: {REPORT}")
    fatal = report.fatal(plan.lintian_fail_on)
    if fatal:
        for line in report.text.splitlines():
            record(line)
        raise BuildFailed(
            f"lintian found {', '.join(fatal)} in the {plan.distro.id} build, which "
            f"[lintian] fail_on lists; the report is in the full log: {log_path}",
            log_path,
        )
    return sorted([*files, REPORT])
