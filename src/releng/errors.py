"""The one error hierarchy: every expected failure is a RelengError.

A RelengError's message is what the user sees after ``error:``: what failed,
the likely cause and what to do next, on one line. Anything else that escapes
to the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class RelengError(Exception):
    """An expected failure, explained to the user in one line."""


class ConfigError(RelengError):
    """product.toml (or another configuration file) is invalid."""


class DistroError(RelengError):
    """A distro directory is missing, misnamed or incomplete."""


class VersionError(RelengError):
    """A version string is neither a nightly nor a release version."""


class SourceError(RelengError):
    """The source tarball cannot be made (missing tag, download failed, ...)."""


class SigningError(RelengError):
    """gpg could not sign or verify (missing key, wrong passphrase, ...)."""


class EngineError(RelengError):
    """No Docker engine answers, or the engine refused a request."""


class ImageError(RelengError):
    """A base or builder image can be neither found, pulled nor bootstrapped."""


class BuildError(RelengError):
    """A package build failed."""


class RepoError(RelengError):
    """An apt repository operation failed or was refused."""


class BadPackageError(RepoError):
    """An input file is not a usable Debian package or source."""


class PublishError(RelengError):
    """Publishing to S3 or CloudFront failed or was refused."""


class LockError(RelengError):
    """A lock is held by someone else past the waiting time."""


class AwsError(RelengError):
    """An AWS orchestration step failed or was refused."""


class ReleaseSourceError(RelengError):
    """A release's source cannot go public (embargo, missing or conflicting git refs)."""
