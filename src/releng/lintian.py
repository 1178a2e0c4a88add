"""lintian after a build: ``make-package --lintian`` or ``[lintian] run = true``.

lintian runs in the builder image (plus lintian itself, installed once into an image
``releng-lintian-<name>:<distro>-<builder id>`` kept beside it), with no network, as the
build user, on the build's ``.changes``. Its report is kept beside the build as
``lintian.log``; a summary line goes to the build log. The build fails only on the tags
``[lintian] fail_on`` lists: lintian's own opinion of what is an error varies between
releases and distros, and is the packager's to weigh.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from releng.engine import ContainerSpec, Engine, EngineRefused, Mount
from releng.errors import BuildError

log = logging.getLogger(__name__)

REPORT = "lintian.log"
IMAGE_REPOSITORY = "releng-lintian-{name}"
_MOUNT = "/var/lintian"
_SEVERITIES = {"E": "error", "W": "warning", "I": "info", "P": "pedantic", "X": "experimental"}
# "E: tally-nightly: binary-without-manpage usr/bin/x", "W: tally source: some-tag detail"
_LINE = re.compile(r"^(?P<severity>[A-Z]): (?P<package>[^:]+): (?P<tag>[a-z0-9][a-z0-9+._-]*)")
_INSTALL = (
    "apt-get update -q && "
    "apt-get install -y -q --no-install-recommends lintian && "
    "rm -rf /var/lib/apt/lists/* && lintian --version"
)


@dataclass(frozen=True, kw_only=True)
class LintianReport:
    text: str
    tags: dict[str, int] = field(default_factory=dict)  # tag -> how many times
    severities: dict[str, int] = field(default_factory=dict)  # "error" -> how many

    @classmethod
    def parse(cls, text: str) -> LintianReport:
        tags: collections.Counter[str] = collections.Counter()
        severities: collections.Counter[str] = collections.Counter()
        for line in text.splitlines():
            m = _LINE.match(line)
            if m and m["severity"] in _SEVERITIES:
                tags[m["tag"]] += 1
                severities[_SEVERITIES[m["severity"]]] += 1
        return cls(text=text, tags=dict(tags), severities=dict(severities))

    def summary(self) -> str:
        counts = [
            f"{self.severities[s]} {s}(s)" for s in _SEVERITIES.values() if s in self.severities
        ]
        return "lintian: " + (", ".join(counts) if counts else "no tags")

    def fatal(self, fail_on: Sequence[str]) -> list[str]:
        """The listed tags that the report has."""
        return sorted(t for t in set(fail_on) if t in self.tags)


def ensure_lintian_image(engine: Engine, *, name: str, distro_id: str, builder_id: str) -> str:
    """The builder image with lintian installed (made once per builder image; older ones of
    the distro are removed)."""
    repository = IMAGE_REPOSITORY.format(name=name)
    tag = f"{distro_id}-{builder_id.rsplit(':', maxsplit=1)[-1][:16]}"
    reference = f"{repository}:{tag}"
    if engine.image_id(reference) is not None:
        return reference
    log.info("installing lintian into %s", reference)
    spec = ContainerSpec(
        image=builder_id,
        command=["sh", "-c", _INSTALL],
        environment={"DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"},
        user="0:0",
    )
    with engine.container(spec) as container:
        container.start()
        container.stream(lambda line: log.debug("lintian setup: %s", line))
        code = container.wait()
        if code != 0:
            tail = container.output().strip().splitlines()[-1:] or ["?"]
            raise BuildError(
                f"installing lintian into the {distro_id} builder image failed (exit {code}): "
                f"{tail[0]}; check the network and the image's apt sources, or build "
                "without --lintian"
            )
        container.commit(repository, tag, changes=['CMD ["bash"]'])
    for image in engine.images(repository):
        for other in image.tags:
            if other != reference and other.split(":", 1)[-1].startswith(f"{distro_id}-"):
                with contextlib.suppress(EngineRefused):  # in use: kept, no harm
                    engine.remove_image(other)
    return reference


def run_lintian(
    engine: Engine, image: str, out_dir: Path, changes: str, *, user: str
) -> LintianReport:
    """lintian on ``out_dir/changes`` (read-only, no network); its report."""
    spec = ContainerSpec(
        image=image,
        # Not a terminal: lintian shows every tag (no display limit).
        command=["lintian", f"{_MOUNT}/{changes}"],
        mounts=[Mount(out_dir, _MOUNT)],
        # The builder image's /build (mode 1777) is lintian's scratch space.
        environment={"HOME": "/build", "LANG": "C.UTF-8", "TMPDIR": "/build"},
        network="none",
        user=user,
        workdir="/build",
    )
    result = engine.run_spec(spec)
    report = LintianReport.parse(result.output)
    # lintian's exit code for "tags emitted" differs between releases (1 or 2); what it
    # emitted decides here. Non-zero with no tag at all: it could not run.
    if result.exit_code != 0 and not report.tags:
        raise BuildError(
            f"lintian could not check {changes} (exit {result.exit_code}): "
            f"{(result.output.strip().splitlines() or ['no output'])[-1]}"
        )
    return report
