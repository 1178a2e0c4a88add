"""Independent rebuild verification (docs/rebuild.md).

- :mod:`.buildinfo`: what a first build recorded (its ``.buildinfo``);
- :mod:`.container`: the rebuilder image, the varied build, diffoscope;
- :mod:`.compare`: byte-for-byte comparison, the first differing file;
- :mod:`.run`: ``verify-rebuild`` (plan, rebuild, compare, attest);
- :mod:`.attest`: in-toto/SLSA attestations, signed, and put beside a repository;
- :mod:`.check`: ``verify-package``, what a user runs against a repository;
- :mod:`.policy`: ``[verify] rebuild``, for the publishing steps.
"""

from __future__ import annotations

from releng.rebuild.attest import rebuilder_signer, write_attestations
from releng.rebuild.buildinfo import RebuildError
from releng.rebuild.run import RebuildMismatch, RebuildResult, plan_rebuild, verify_rebuild

__all__ = [
    "RebuildError",
    "RebuildMismatch",
    "RebuildResult",
    "plan_rebuild",
    "rebuilder_signer",
    "verify_rebuild",
    "write_attestations",
]
