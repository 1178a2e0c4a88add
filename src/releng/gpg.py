"""The gpg seam: signing, verification and the keys, always in batch mode.

Every gpg run goes through this module: signing, key listings and exports run gpg itself
(:func:`_run_gpg`, one process each), verification runs gpgv as apt does (:func:`verify`),
and python-gnupg makes the development key.

gpg never prompts: it runs with ``--batch --pinentry-mode loopback`` and gets
the passphrase from the configured environment variable or file. Every
signature is verified right after it is made.

With no key configured, a clearly labelled development key is made once under
``.releng/dev-gnupg`` so that the quickstart signs; releases refuse it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from releng.deb822 import parse_date, release_field
from releng.errors import SigningError

if TYPE_CHECKING:
    from releng.project import Project

log = logging.getLogger(__name__)

DEV_KEY_DIR = "dev-gnupg"
DEV_KEY_BITS = 4096  # RSA: every target's apt verifies it (see the README's signing keys)
RSA_ALGORITHMS = frozenset({"1", "2", "3"})  # OpenPGP public-key algorithm ids of RSA
_BATCH = ["--pinentry-mode", "loopback", "--no-auto-key-locate", "--no-auto-key-retrieve"]


def _short_home(home: Path) -> Path:
    """gpg-agent's socket lives in GNUPGHOME, and a Unix socket path must fit in 108 bytes.

    A deep home (a checkout in a long path, a pytest tmp dir) gets a short symlink in the
    temp directory instead; gpg then talks to an agent it can actually start.
    """
    if len(str(home)) + len("/S.gpg-agent.browser") < 100:
        return home
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    link = Path(tempfile.gettempdir()) / f"releng-gnupg-{digest}"
    if not (link.is_symlink() and link.readlink() == home):
        # A name of its own per thread: several threads may make the same link at once.
        tmp = link.with_name(f"{link.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(home)
        tmp.replace(link)
    return link


def _home(gnupghome: Path | None) -> str:
    """``gnupghome`` made (0700) and as gpg is given it: resolved, and short enough for the
    agent's socket; "" for gpg's default home."""
    if gnupghome is None:
        return ""
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(_short_home(gnupghome.resolve()))


def _run_gpg(
    home: str, args: Sequence[str], data: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """One gpg run in ``home`` (as :func:`_home` gives it) in batch mode, status lines on stderr.

    The signing path runs gpg itself: python-gnupg's import and its ``gpg --version`` per
    handle (12 ms) were a tenth of adding one package to a large suite. python-gnupg makes
    the development key.
    """
    cmd = ["gpg", *(["--homedir", home] if home else []), "--batch", *_BATCH, "--status-fd", "2"]
    return subprocess.run([*cmd, *args], input=data, capture_output=True, check=False)


def _secret_keys(home: str, name: str = "") -> list[KeyInfo]:
    """The keys ``name`` selects (every key for "") whose secret part ``home`` holds, as
    listed by one gpg run (a signer is made at the start of every command that signs)."""
    args = ["--with-colons", "--with-secret", "--with-sig-list", "--list-keys"]
    args += ["--", name] if name else []
    proc = _run_gpg(home, args)
    return [key for key in parse_colons(proc.stdout.decode("utf-8", "replace")) if key.secret]


def _failure(stderr: str) -> str:
    """Why gpg failed, in a few words, from its stderr (with status lines)."""
    if "BAD_PASSPHRASE" in stderr or "bad passphrase" in stderr.lower():
        return "wrong passphrase"
    if "MISSING_PASSPHRASE" in stderr or "NEED_PASSPHRASE" in stderr:
        return "no passphrase given, and the key needs one"
    lines = [ln for ln in stderr.splitlines() if ln and not ln.startswith("[GNUPG:]")]
    return lines[-1] if lines else "gpg failed"


# -- verification: the one gpgv run and the one parse of its status lines ----------------------

_OPENING = {  # status keywords that begin one signature's lines, and what they mean
    "GOODSIG": "good",
    "BADSIG": "bad",
    "EXPSIG": "expired-signature",
    "EXPKEYSIG": "expired-key",
    "REVKEYSIG": "revoked-key",
    "ERRSIG": "error",
}


@dataclass(frozen=True, kw_only=True)
class Signature:
    """One signature gpgv looked at."""

    status: str  # good, bad, expired-signature, expired-key, revoked-key, error, no-public-key
    key_id: str  # the (sub)key id or fingerprint gpgv names it by
    fingerprint: str = ""  # the primary key's fingerprint (VALIDSIG), when the key is known
    algorithm: str = ""  # the OpenPGP public-key algorithm id (1 RSA, 22 EdDSA, ...)
    uid: str = ""
    created: str = ""  # when the signature was made (VALIDSIG's timestamp, seconds since epoch)


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What gpgv said about one signed text: valid as apt judges it, and by whom.

    Valid: at least one good signature by a key in the keyring and no bad one; signatures by
    keys the keyring does not hold are ignored, as apt does (a Release signed by an old and a
    new key verifies with either alone).
    """

    valid: bool
    signatures: tuple[Signature, ...]
    content: bytes  # the signed text (a clearsigned input's body; the data for a detached one)
    reason: str  # one line: why it is not valid ("" when valid)

    @property
    def signers(self) -> tuple[str, ...]:
        """The primary fingerprints of the good signatures, in signing order."""
        return tuple(s.fingerprint for s in self.signatures if s.status == "good")

    @property
    def missing(self) -> tuple[str, ...]:
        """Key ids of signatures by keys the keyring does not hold."""
        return tuple(s.key_id for s in self.signatures if s.status == "no-public-key")

    @property
    def expired(self) -> tuple[str, ...]:
        return tuple(s.key_id for s in self.signatures if s.status == "expired-key")

    @property
    def revoked(self) -> tuple[str, ...]:
        return tuple(s.key_id for s in self.signatures if s.status == "revoked-key")


def parse_status(status: str) -> list[Signature]:
    """The signatures in gpgv's ``--status-fd`` output, one per signature it checked."""
    sigs: list[dict[str, str]] = []
    for line in status.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "[GNUPG:]":
            continue
        keyword, args = words[1], words[2:]
        if keyword in _OPENING:
            sigs.append({"status": _OPENING[keyword], "key_id": args[0]})
            if keyword == "ERRSIG" and len(args) > 1:
                sigs[-1]["algorithm"] = args[1]
            elif len(args) > 1:
                sigs[-1]["uid"] = line.split(None, 3)[3]
        elif keyword == "NO_PUBKEY" and sigs:
            sigs[-1]["status"] = "no-public-key"
        elif keyword == "VALIDSIG" and sigs:
            primary = args[9] if len(args) > 9 else args[0]
            sigs[-1].update(
                fingerprint=primary,
                algorithm=args[6] if len(args) > 6 else "",
                created=args[2] if len(args) > 2 else "",
            )
    return [Signature(**s) for s in sigs]


def _reason(sigs: list[Signature], signed: bytes, stderr: str, returncode: int) -> str:
    if any(s.status == "bad" for s in sigs):
        bad = ", ".join(s.key_id for s in sigs if s.status == "bad")
        return f"bad signature by {bad}: the text was changed after it was signed"
    for status, what in (
        ("expired-key", "has expired"),
        ("revoked-key", "is revoked"),
        ("expired-signature", "made a signature that has expired"),
    ):
        keys = [s.key_id for s in sigs if s.status == status]
        if keys:
            return f"signed by key {', '.join(keys)}, which {what}"
    missing = [s.key_id for s in sigs if s.status == "no-public-key"]
    if missing:
        return f"signed by key {', '.join(missing)}, which is not in the keyring"
    if not sigs:
        if b"-----BEGIN PGP SIGNED MESSAGE-----" not in signed and b"-----BEGIN PGP" not in signed:
            return "not signed"
        return "no signature found"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"gpgv exited with {returncode}"


def verify(
    keyring: Path | bytes | Sequence[Path | bytes],
    data: bytes,
    signature: bytes | None = None,
) -> Verification:
    """Verify ``data`` (clearsigned, or with a detached ``signature``) with ``gpgv`` against
    ``keyring`` (keyring files, or exported public keys as bytes).

    gpgv is what apt verifies with; it needs no agent or trust database and starts in a few
    milliseconds. Raises SigningError only when gpgv is not installed.
    """
    exe = shutil.which("gpgv")
    if exe is None:
        raise SigningError("gpgv is not installed; run ./scripts/setup")
    rings = [keyring] if isinstance(keyring, (Path, bytes)) else list(keyring)
    with tempfile.TemporaryDirectory(prefix="releng-gpgv-") as tmp:
        home = Path(tmp)
        cmd = [exe, "--homedir", tmp, "--status-fd", "1"]
        for n, ring in enumerate(rings):
            if isinstance(ring, bytes):
                path = home / f"keyring-{n}.gpg"
                path.write_bytes(ring)
            else:
                path = ring.resolve()
            cmd += ["--keyring", str(path)]
        (home / "data").write_bytes(data)
        if signature is None:
            cmd += ["--output", str(home / "content"), str(home / "data")]
        else:
            (home / "data.sig").write_bytes(signature)
            cmd += [str(home / "data.sig"), str(home / "data")]
        log.debug("%s", shlex.join(cmd))
        proc = subprocess.run(cmd, capture_output=True, check=False)
        content_path = home / "content"
        content = (
            content_path.read_bytes() if signature is None and content_path.is_file() else data
        )
    sigs = parse_status(proc.stdout.decode("utf-8", "replace"))
    good = [s for s in sigs if s.status == "good" and s.fingerprint]
    valid = bool(good) and not any(s.status == "bad" for s in sigs)
    reason = (
        ""
        if valid
        else _reason(
            sigs, signature or data, proc.stderr.decode("utf-8", "replace"), proc.returncode
        )
    )
    return Verification(
        valid=valid, signatures=tuple(sigs), content=content if valid else b"", reason=reason
    )


# -- the signing keys ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KeyInfo:
    """One public key as gpg lists it."""

    fingerprint: str
    uid: str  # the first user id gpg lists: the primary one
    algorithm: str  # OpenPGP public-key algorithm id
    created: dt.datetime
    expires: dt.datetime | None  # None: never
    revoked: bool = False
    secret: bool = False  # the listing home holds its secret part (a --with-secret listing)
    # The newest signature the key made on itself (a user id's, a subkey's binding, a
    # revocation): when it last changed, e.g. its expiry extended. Listed with --with-sig-list.
    signed: dt.datetime | None = None
    uids: tuple[str, ...] = ()  # every user id, as gpg lists them (the primary first)

    def expired(self, now: dt.datetime) -> bool:
        return self.revoked or (self.expires is not None and self.expires <= now)

    def describe_expiry(self, now: dt.datetime) -> str:
        if self.revoked:
            return "revoked"
        if self.expires is None:
            return "never expires"
        days = (self.expires - now).total_seconds() / 86_400
        when = self.expires.strftime("%Y-%m-%d %H:%M UTC")
        return f"expired {when}" if days <= 0 else f"expires {when} (in {days:.0f} days)"


def _when(stamp: str) -> dt.datetime | None:
    if not stamp:
        return None
    if "T" in stamp:  # gpg's ISO form 20261206T112233
        return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC)


def parse_colons(text: str) -> list[KeyInfo]:
    """The primary keys in gpg's ``--with-colons`` key listing (subkeys' lines skipped)."""
    keys: list[KeyInfo] = []
    current: dict[str, Any] = {}
    primary = False  # within a primary key's lines (not a subkey's)
    keyid = ""  # the primary key's: its signatures on itself count as its changes
    for line in [*text.splitlines(), "pub:end"]:
        f = line.split(":")
        if f[0] in ("pub", "sec"):
            if current.get("fingerprint"):
                uids = tuple(current.pop("uids"))
                keys.append(KeyInfo(**current, uid=uids[0] if uids else "", uids=uids))
            current, primary = {}, len(f) > 6
            keyid = f[4] if primary else ""
            if primary:
                current = {
                    "fingerprint": "",
                    "uids": [],
                    "algorithm": f[3],
                    "created": _when(f[5]) or dt.datetime.fromtimestamp(0, tz=dt.UTC),
                    "expires": _when(f[6]),
                    "revoked": f[1] == "r",
                    "secret": len(f) > 14 and f[14].startswith("+"),
                }
        elif f[0] in ("sub", "ssb"):
            primary = False
        elif primary and f[0] == "fpr" and not current["fingerprint"]:
            current["fingerprint"] = f[9]
        elif current and f[0] == "uid":
            current["uids"].append(f[9])
        elif current and f[0] in ("sig", "rev") and len(f) > 5 and f[4] == keyid:
            when = _when(f[5])
            if when is not None and (current.get("signed") is None or when > current["signed"]):
                current["signed"] = when
    return keys


def keyring_keys(keyring: Path | bytes) -> list[KeyInfo]:
    """The keys in a keyring file (or exported keys), with their expiry, without importing them."""
    data = keyring if isinstance(keyring, bytes) else keyring.read_bytes()
    with tempfile.TemporaryDirectory(prefix="releng-keys-") as tmp:
        cmd = ["gpg", "--homedir", tmp, "--batch", "--with-colons", "--with-sig-list"]
        cmd += ["--show-keys", "-"]
        proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SigningError(
            f"gpg cannot read the keyring {keyring if isinstance(keyring, Path) else '(exported)'}: "
            f"{proc.stderr.decode(errors='replace').strip().splitlines()[-1:]}; export it again"
        )
    return parse_colons(proc.stdout.decode("utf-8", "replace"))


def expiry_warnings(
    keys: Sequence[KeyInfo], *, warn_days: int = 60, now: dt.datetime | None = None
) -> list[str]:
    """One line for each signing key that has expired or expires within ``warn_days``."""
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for key in keys:
        if key.expired(now):
            out.append(
                f"signing key {key.fingerprint} has {key.describe_expiry(now)}: clients refuse "
                "what it signs; extend it (gpg --quick-set-expire) or rotate "
                "(invoke rotate-keys --add NEWFPR)"
            )
        elif key.expires is not None and key.expires - now <= dt.timedelta(days=warn_days):
            out.append(
                f"signing key {key.fingerprint} {key.describe_expiry(now)}, within "
                f"[signing] warn_days = {warn_days}: extend it (gpg --quick-set-expire) or "
                "rotate (invoke rotate-keys --add NEWFPR; see docs/key-rotation.md)"
            )
    return out


class Signer:
    """Signs with the configured secret keys from one GNUPGHOME.

    Every key signs an apt ``Release`` (:meth:`clearsign`, :meth:`detached_signature`: one
    signature each, as Debian's archive is signed); the first (:attr:`fingerprint`) signs
    everything else (:meth:`sign_file`: tarballs, checksums, attestations).
    """

    def __init__(
        self,
        *,
        gnupghome: Path | None,
        key: str | Sequence[str],
        passphrase: str | None,
        development: bool = False,
        warn_days: int = 60,
        listed: Sequence[KeyInfo] = (),
    ) -> None:
        self.gnupghome = gnupghome
        self._home = _home(gnupghome)  # made and resolved once, for every gpg run
        self.development = development
        self.warn_days = warn_days
        # "" is no passphrase: with --passphrase-fd 0, gpg would take the first line of the
        # data to sign as the passphrase.
        self._passphrase = passphrase or None
        wanted = [key] if isinstance(key, str) else list(key)
        infos: list[KeyInfo] = []
        for one in wanted:
            # ``listed``: this home's secret keys as a listing just gave them (dev_signer's);
            # a key named by its fingerprint is taken from there, not listed again.
            info = next((k for k in listed if one and k.fingerprint == one), None)
            if info is None and one:
                info = next(iter(_secret_keys(self._home, one)), None)
            if info is None:
                home = gnupghome or "gpg's default home (GNUPGHOME or ~/.gnupg)"
                raise SigningError(
                    f"signing key {one!r} is not in the keyring at {home}; import it with "
                    f"`gpg --homedir {gnupghome or '~/.gnupg'} --import KEYFILE` or set "
                    "[signing] key/gnupghome in product.toml"
                )
            infos.append(info)
        if len({k.fingerprint for k in infos}) != len(infos):
            raise SigningError(
                f"[signing] key names one key twice ({', '.join(wanted)}); list each key once"
            )
        self.keys: tuple[KeyInfo, ...] = tuple(infos)
        self.fingerprint: str = infos[0].fingerprint
        self.uid: str = infos[0].uid
        self._public: bytes | None = None
        self._public_lock = threading.Lock()
        self._warned = False  # the expiry warnings are logged once per signer

    def __repr__(self) -> str:  # never shows the passphrase
        return f"Signer(fingerprints={self.fingerprints!r}, development={self.development})"

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """Every signing key's fingerprint, the first one first."""
        return tuple(k.fingerprint for k in self.keys)

    def check_expiry(self, *, valid_until: dt.datetime | None = None) -> None:
        """Warn of keys expiring within ``warn_days``; refuse an expired key, and a key expiring
        before ``valid_until`` (the Release's Valid-Until)."""
        now = dt.datetime.now(dt.UTC)
        for key in self.keys:
            if key.expired(now):
                raise SigningError(
                    f"signing key {key.fingerprint} has {key.describe_expiry(now)}: apt refuses "
                    f"what it signs; extend it (gpg --quick-set-expire {key.fingerprint} 1y) or "
                    "rotate to a new key (invoke rotate-keys --add NEWFPR; docs/key-rotation.md)"
                )
            if valid_until is not None and key.expires is not None and key.expires < valid_until:
                raise SigningError(
                    f"signing key {key.fingerprint} {key.describe_expiry(now)}, before the "
                    f"Release's Valid-Until {valid_until:%Y-%m-%d %H:%M UTC}: clients would "
                    f"refuse it early; extend it (gpg --quick-set-expire {key.fingerprint} 1y) "
                    "or lower [repositories] valid_for_days"
                )
        if not self._warned:
            self._warned = True
            for line in expiry_warnings(self.keys, warn_days=self.warn_days, now=now):
                log.warning("%s", line)

    def _sign(self, data: bytes, *, clearsign: bool, every: bool) -> bytes:
        users = self.fingerprints if every else (self.fingerprint,)
        args = [arg for fpr in users for arg in ("--local-user", fpr)]
        args += ["--digest-algo", "SHA512"]
        args += ["--clearsign"] if clearsign else ["--detach-sign", "--armor"]
        if self._passphrase is not None:  # its line first on stdin, then the data
            args += ["--passphrase-fd", "0"]
            data = self._passphrase.encode() + b"\n" + data
        proc = _run_gpg(self._home, args, data)
        if proc.returncode != 0 or not proc.stdout:
            why = _failure(proc.stderr.decode("utf-8", "replace"))
            raise SigningError(
                f"gpg could not sign with key {', '.join(users)}: {why}; "
                "check the passphrase source in [signing] of product.toml"
            )
        return proc.stdout

    def _check(self, check: Verification, users: Sequence[str], what: str) -> Verification:
        if not check.valid or sorted(check.signers) != sorted(users):
            why = check.reason or f"signed by {', '.join(check.signers)}, not {', '.join(users)}"
            raise SigningError(f"gpg made {what} that does not verify: {why}")
        return check

    def public_keys(self) -> bytes:
        """Every signing key's public key (binary), exported once: the keyring beside a
        repository and in the keyring package (:func:`armored` for the ``.asc``)."""
        with self._public_lock:
            if self._public is None:
                self._public = self._export_public()
            return self._public

    def detached_signature(self, data: bytes) -> bytes:
        """An ASCII-armored detached signature of ``data`` by every key (Release.gpg),
        verified before it is returned."""
        self.check_expiry(valid_until=_valid_until(data))
        sig = self._sign(data, clearsign=False, every=True)
        self._check(verify(self.public_keys(), data, sig), self.fingerprints, "a signature")
        return sig

    def clearsign(self, data: bytes) -> bytes:
        """``data`` clearsigned by every key (InRelease), verified before it is returned."""
        self.check_expiry(valid_until=_valid_until(data))
        signed = self._sign(data, clearsign=True, every=True)
        self._check(verify(self.public_keys(), signed), self.fingerprints, "a clearsigned text")
        return signed

    def sign_file(self, path: Path) -> Path:
        """Write ``<path>.asc``, a detached armored signature by the first key, and verify it."""
        data = path.read_bytes()
        sig = self._sign(data, clearsign=False, every=False)
        self.verify_detached(data, sig)
        out = path.with_name(path.name + ".asc")
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(sig)
        tmp.replace(out)
        return out

    def verify_detached(self, data: bytes, signature: bytes) -> Verification:
        """Verify a signature by the first key, or SigningError saying why not."""
        check = verify(self.public_keys(), data, signature)
        if not check.valid or self.fingerprint not in check.signers:
            why = check.reason or f"signed by {', '.join(check.signers)}"
            raise SigningError(f"signature does not verify against {self.fingerprint}: {why}")
        return check

    def _export_public(self) -> bytes:
        proc = _run_gpg(self._home, ["--export", *self.fingerprints])
        data = proc.stdout if proc.returncode == 0 else b""
        if not data:
            raise SigningError(f"gpg could not export public keys {', '.join(self.fingerprints)}")
        return data


def armored(keys: bytes) -> bytes:
    """Public ``keys`` (binary) ASCII-armored, byte for byte as ``gpg --armor --export``
    writes them (RFC 4880, 6.2: base64 in lines of 64, then the CRC-24): no second gpg run."""
    import base64

    text = base64.b64encode(keys).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    crc = base64.b64encode(_crc24(keys).to_bytes(3, "big")).decode()
    body = "\n".join([*lines, f"={crc}"])
    return f"{_ARMOR_BEGIN}\n\n{body}\n{_ARMOR_END}\n".encode()


def dearmored(data: bytes) -> bytes:
    """Binary keys from an ASCII-armored export (gpgv reads binary keyrings); binary ones as
    they are. ValueError when the base64 is broken."""
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return data
    import base64

    body, started = [], False
    for line in data.decode("ascii", "replace").splitlines()[1:]:
        if not started:
            started = not line.strip()  # the armor headers end with an empty line
            continue
        if line.startswith(("=", "-----END")):
            break
        body.append(line.strip())
    return base64.b64decode("".join(body), validate=True)


_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"


@functools.cache
def _crc24_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB  # the generator of RFC 4880, 6.1
        table.append(crc & 0xFFFFFF)
    return table


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    table = _crc24_table()
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[((crc >> 16) ^ byte) & 0xFF]
    return crc


def _valid_until(release: bytes) -> dt.datetime | None:
    """A Release text's Valid-Until (None when it has none, or for other data)."""
    value = release_field(release, "Valid-Until")
    return None if value is None else parse_date(value)


def dev_signer(state_dir: Path) -> Signer:
    """The development key's signer: the key made once under ``state_dir`` (refused for
    releases by :func:`signer_for`); gpg lists the home's keys once."""
    home = state_dir / DEV_KEY_DIR
    gpg_home = _home(home)
    keys = _secret_keys(gpg_home)
    if keys:
        if keys[0].algorithm not in RSA_ALGORITHMS:
            log.warning(
                "the development key under %s is not RSA: xenial's apt cannot verify what it "
                "signs; remove that directory to make an RSA %d key",
                home,
                DEV_KEY_BITS,
            )
        fingerprint = keys[0].fingerprint
    else:
        fingerprint = _make_dev_key(home, gpg_home)
    return Signer(gnupghome=home, key=fingerprint, passphrase=None, development=True, listed=keys)


def _make_dev_key(home: Path, gpg_home: str) -> str:
    import gnupg

    gpg = gnupg.GPG(gnupghome=gpg_home, options=list(_BATCH))
    (home / "gpg-agent.conf").write_text("default-cache-ttl 0\nmax-cache-ttl 0\n")
    log.warning("making a development signing key under %s (refused for releases)", home)
    params = gpg.gen_key_input(
        # RSA, not ed25519: xenial's apt verifies with gpgv 1.4, which knows no EdDSA.
        key_type="RSA",
        key_length=DEV_KEY_BITS,
        key_usage="sign",
        name_real="releng DEVELOPMENT key - NOT FOR RELEASES",
        name_email="releng-dev@invalid",
        expire_date=0,
        no_protection=True,
    )
    result = gpg.gen_key(params)
    if not result.fingerprint:
        why = _failure(str(result.stderr or "") or str(result.status or ""))
        raise SigningError(f"could not make the development key under {home}: {why}")
    return str(result.fingerprint)


def passphrase_from(
    signing_env: str, signing_file: str, env: Mapping[str, str], root: Path
) -> str | None:
    """The passphrase from the configured environment variable, else file, else None."""
    if signing_env and env.get(signing_env):
        return env[signing_env]
    if signing_file:
        path = (root / signing_file).expanduser()
        try:
            return path.read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise SigningError(
                f"cannot read the signing passphrase file {path}: {exc.strerror}; "
                "fix [signing] passphrase_file in product.toml"
            ) from None
    return None


def signer_for(project: Project, env: Mapping[str, str], *, release: bool) -> Signer:
    """The configured signer; the development key when none is configured (not for releases).

    Warns of a key expiring within ``[signing] warn_days`` and refuses an expired one.
    """
    cfg = project.config.signing
    if not cfg.keys:
        if release:
            raise SigningError(
                "a release cannot be signed with the development key; set [signing] key "
                "(and gnupghome, passphrase_env or passphrase_file) in product.toml"
            )
        return dev_signer(project.state_dir)
    passphrase = passphrase_from(cfg.passphrase_env, cfg.passphrase_file, env, project.root)
    signer = Signer(
        gnupghome=gnupghome_for(project, env),
        key=cfg.keys,
        passphrase=passphrase,
        warn_days=cfg.warn_days,
    )
    signer.check_expiry()
    return signer


def gnupghome_for(project: Project, env: Mapping[str, str]) -> Path | None:
    """``[signing] gnupghome``, else ``GNUPGHOME`` from ``env``, else None (gpg's default)."""
    cfg = project.config.signing
    if cfg.gnupghome:
        return (project.root / cfg.gnupghome).expanduser()
    if env.get("GNUPGHOME"):
        return Path(env["GNUPGHOME"])
    return None
