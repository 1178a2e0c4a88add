"""The execution input: validated once in the invoke task and again in ParseInput.

Pure logic, no AWS calls: :func:`normalise` turns what a user asked for
(versions, distros, architectures, steps, optional timeouts) into the plan the
state machine maps over (a build per version, distro and architecture), or
raises :class:`InputError` with one line naming the bad value and the valid ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from releng.aws import steps as S
from releng.aws.catalog import Catalog
from releng.errors import AwsError, VersionError
from releng.version import Version

_CONFIG_KEYS = ("timeouts", "heartbeat_seconds", "fake_ec2")


class InputError(AwsError):
    """The execution input names an unknown version, distro or step."""


def _strings(raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"input {key!r} must be a list of strings, not {value!r}")
    return [v.strip() for v in value if v.strip()]


def _positive_int(value: object, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{what} must be a positive number of seconds, not {value!r}")
    return value


def normalise(
    raw: Mapping[str, Any], catalog: Catalog, *, today: dt.date | None = None
) -> dict[str, Any]:
    """The plan for ``raw``: ``{"versions": [...], "steps": [...], "config": {...}}``."""
    if not isinstance(raw, Mapping):
        raise InputError(f"the execution input must be a JSON object, not {type(raw).__name__}")
    allowed = ("versions", "releases", "distros", "architectures", "steps", "config")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise InputError(f"unknown input keys: {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    try:
        # "releases": releases even when shaped like a date (--release)
        versions = [Version.parse(v) for v in _strings(raw, "versions")]
        versions += [Version.parse(v, release=True) for v in _strings(raw, "releases")]
        versions = versions or [Version.nightly(today)]
    except VersionError as exc:
        raise InputError(str(exc)) from None
    distros = _strings(raw, "distros")
    bad = [d for d in distros if d not in catalog.distros]
    if bad:
        raise InputError(
            f"unknown distro {', '.join(repr(b) for b in bad)}; valid distros: "
            + ", ".join(sorted(catalog.distros))
        )
    arches = _architectures(_strings(raw, "architectures"), catalog)
    steps = _strings(raw, "steps")
    bad = [s for s in steps if s not in S.STEPS]
    if bad:
        raise InputError(
            f"unknown step {', '.join(repr(b) for b in bad)}; valid steps: {', '.join(S.STEPS)}"
        )
    config = _config(raw.get("config") or {})
    selected = [s for s in S.STEPS if s in steps] if steps else list(S.STEPS)
    plans = []
    for v in dict.fromkeys(versions):
        chosen = distros_for_version(v, distros, catalog)
        plans.append(
            {
                **version_record(v),
                "distros": chosen,
                # the Distros Map's items: one build per distro and architecture
                "matrix": [{"distro": d, "arch": a} for d in chosen for a in arches],
                "steps": selected,
            }
        )
    # [verify] rebuild, from the deployed product.toml (the workers' checkout reads the same):
    # the state machine's distro branch runs VerifyRebuild unless it is "off".
    config["verify_rebuild"] = catalog.verify_rebuild
    return {
        "versions": plans,
        "steps": selected,
        "config": config,
    }


def version_record(version: Version) -> dict[str, str]:
    """How a version is written into the execution's state: its text and its kind, so a
    release shaped like a date stays a release at every hop (:func:`version_of` reads it)."""
    return {"version": version.text, "kind": version.kind.value}


def version_of(record: Mapping[str, Any]) -> Version:
    """The typed version of a state record written by :func:`version_record`."""
    kind = record.get("kind")
    if kind not in ("release", "nightly"):
        raise InputError(f"version record {dict(record)!r} has no kind 'release' or 'nightly'")
    try:
        return Version.parse(str(record.get("version", "")), release=kind == "release")
    except VersionError as exc:
        raise InputError(str(exc)) from None


def distros_for_version(version: Version, requested: Sequence[str], catalog: Catalog) -> list[str]:
    """The distros built for ``version``: those requested, else the default targets."""
    del version  # every version builds the same targets today; the hook is here for branches
    return list(dict.fromkeys(requested)) if requested else list(catalog.targets)


def _architectures(requested: list[str], catalog: Catalog) -> list[str]:
    """The architectures built: those requested, else product.toml's (the catalog's), in
    product.toml's order (the first is the primary: source and ``Architecture: all``)."""
    bad = [a for a in requested if a not in catalog.architectures]
    if bad:
        raise InputError(
            f"architecture {', '.join(repr(b) for b in bad)} is not in [repositories] "
            f"architectures of product.toml ({', '.join(catalog.architectures)})"
        )
    chosen = [a for a in catalog.architectures if not requested or a in requested]
    no_builders = [a for a in chosen if a not in S.BUILD_QUEUE_OF_ARCH]
    if no_builders:
        raise InputError(
            f"no AWS builders for architecture {', '.join(no_builders)}; "
            f"AWS builds {', '.join(S.BUILD_QUEUE_OF_ARCH)}"
        )
    return chosen


def _config(raw: object) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InputError(f"input 'config' must be an object, not {raw!r}")
    unknown = sorted(set(raw) - set(_CONFIG_KEYS))
    if unknown:
        raise InputError(
            f"unknown config keys: {', '.join(unknown)}; allowed: {', '.join(_CONFIG_KEYS)}"
        )
    timeouts = dict(S.DEFAULT_TIMEOUTS)
    given = raw.get("timeouts") or {}
    if not isinstance(given, Mapping):
        raise InputError(f"config 'timeouts' must be an object, not {given!r}")
    for queue, value in given.items():
        if queue not in timeouts:
            raise InputError(f"unknown timeout {queue!r}; allowed: {', '.join(S.DEFAULT_TIMEOUTS)}")
        timeouts[queue] = _positive_int(value, what=f"timeout {queue!r}")
    heartbeat = _positive_int(
        raw.get("heartbeat_seconds", S.DEFAULT_HEARTBEAT), what="heartbeat_seconds"
    )
    return {
        "timeouts": timeouts,
        "heartbeat_seconds": heartbeat,
        "fake_ec2": bool(raw.get("fake_ec2")),
    }
