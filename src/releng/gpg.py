"""The gpg seam: signing and verification through python-gnupg, always in batch mode.

gpg never prompts: it runs with ``--batch --pinentry-mode loopback`` and gets
the passphrase from the configured environment variable or file. Every
signature is verified right after it is made.

With no key configured, a clearly labelled development key is made once under
``.releng/dev-gnupg`` so that the quickstart signs; releases refuse it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from releng.errors import SigningError

if TYPE_CHECKING:
    from releng.project import Project

log = logging.getLogger(__name__)

DEV_KEY_DIR = "dev-gnupg"
DEV_KEY_UID = "releng DEVELOPMENT key - NOT FOR RELEASES <releng-dev@invalid>"
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


_GPG_BY_HOME: dict[str, Any] = {}  # python-gnupg runs `gpg --version` for every new GPG()
_GPG_LOCK = threading.Lock()


def _gpg(gnupghome: Path | None) -> Any:
    """The python-gnupg handle for ``gnupghome`` (made once per process and home)."""
    import gnupg

    if gnupghome is not None:
        gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = str(gnupghome.resolve()) if gnupghome is not None else ""
    with _GPG_LOCK:
        gpg = _GPG_BY_HOME.get(key)
        if gpg is None:
            if gnupghome is None:
                gpg = gnupg.GPG(options=list(_BATCH))
            else:
                gpg = gnupg.GPG(gnupghome=str(_short_home(Path(key))), options=list(_BATCH))
            _GPG_BY_HOME[key] = gpg
    return gpg


def _failure(result: Any) -> str:
    stderr = str(getattr(result, "stderr", "") or "")
    if "BAD_PASSPHRASE" in stderr or "bad passphrase" in stderr.lower():
        return "wrong passphrase"
    if "MISSING_PASSPHRASE" in stderr or "NEED_PASSPHRASE" in stderr:
        return "no passphrase given, and the key needs one"
    lines = [ln for ln in stderr.splitlines() if ln and not ln.startswith("[GNUPG:]")]
    return lines[-1] if lines else (getattr(result, "status", None) or "gpg failed")


class Verified(NamedTuple):
    fingerprint: str
    username: str


class Signer:
    """Signs with one secret key from one GNUPGHOME."""

    def __init__(
        self,
        *,
        gnupghome: Path | None,
        key: str,
        passphrase: str | None,
        development: bool = False,
    ) -> None:
        self.gnupghome = gnupghome
        self.development = development
        self._passphrase = passphrase
        self._gpg = _gpg(gnupghome)
        keys = self._gpg.list_keys(secret=True, keys=[key]) if key else []
        if not keys:
            home = gnupghome or Path(os.environ.get("GNUPGHOME", "~/.gnupg"))
            raise SigningError(
                f"signing key {key!r} is not in the keyring at {home}; import it with "
                f"`gpg --homedir {home} --import KEYFILE` or set [signing] key/gnupghome in product.toml"
            )
        self.fingerprint: str = keys[0]["fingerprint"]
        self.uid: str = (keys[0].get("uids") or [""])[0]

    def __repr__(self) -> str:  # never shows the passphrase
        return f"Signer(fingerprint={self.fingerprint!r}, development={self.development})"

    def _sign(self, data: bytes, *, clearsign: bool, detach: bool) -> bytes:
        result = self._gpg.sign(
            data,
            keyid=self.fingerprint,
            passphrase=self._passphrase,
            clearsign=clearsign,
            detach=detach,
            binary=False,
            extra_args=["--digest-algo", "SHA512"],
        )
        if not result.data:
            raise SigningError(
                f"gpg could not sign with key {self.fingerprint}: {_failure(result)}; "
                "check the passphrase source in [signing] of product.toml"
            )
        return bytes(result.data)

    def detached_signature(self, data: bytes) -> bytes:
        """An ASCII-armored detached signature of ``data``, verified before it is returned."""
        sig = self._sign(data, clearsign=False, detach=True)
        self.verify_detached(data, sig)
        return sig

    def clearsign(self, data: bytes) -> bytes:
        """``data`` clearsigned (InRelease), verified before it is returned."""
        signed = self._sign(data, clearsign=True, detach=False)
        checked = self._gpgv([], signed)
        if isinstance(checked, str):
            raise SigningError(f"gpg made a clearsigned text that does not verify: {checked}")
        if checked is None:
            verified = self._gpg.verify(signed)
            if not verified.valid or verified.pubkey_fingerprint != self.fingerprint:
                raise SigningError(
                    f"gpg made a clearsigned text that does not verify: {_failure(verified)}"
                )
        return signed

    def sign_file(self, path: Path) -> Path:
        """Write ``<path>.asc``, a detached armored signature, and verify it."""
        sig = self.detached_signature(path.read_bytes())
        out = path.with_name(path.name + ".asc")
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(sig)
        tmp.replace(out)
        return out

    def verify_detached(self, data: bytes, signature: bytes) -> Verified:
        with tempfile.NamedTemporaryFile(suffix=".asc") as sig:
            sig.write(signature)
            sig.flush()
            checked = self._gpgv([sig.name, "-"], data)
            if isinstance(checked, Verified):
                return checked
            if isinstance(checked, str):
                raise SigningError(
                    f"signature does not verify against {self.fingerprint}: {checked}"
                )
            result = self._gpg.verify_data(sig.name, data)
        if not result.valid or result.pubkey_fingerprint != self.fingerprint:
            raise SigningError(
                f"signature does not verify against {self.fingerprint}: {_failure(result)}"
            )
        return Verified(result.pubkey_fingerprint, result.username or "")

    def _gpgv(self, args: list[str], stdin: bytes) -> Verified | str | None:
        """Verify with one ``gpgv`` run against this keyring's public keys.

        gpgv starts in a few milliseconds and needs no agent or trust database (a
        ``gpg --verify`` through python-gnupg takes about twice as long), and it is what apt
        verifies with. Returns the signer, or why the signature is not good, or None when gpgv
        or the keyring file is not there (the caller then verifies through python-gnupg).
        """
        home = self._gpg.gnupghome or os.environ.get("GNUPGHOME") or "~/.gnupg"
        keyring = Path(home).expanduser() / "pubring.kbx"
        exe = shutil.which("gpgv")
        if exe is None or not keyring.is_file():
            return None
        cmd = [exe, "--status-fd", "1", "--keyring", str(keyring), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
        status = proc.stdout.decode("utf-8", "replace").splitlines()
        good = [ln.split(None, 3) for ln in status if ln.startswith("[GNUPG:] GOODSIG ")]
        valid = [ln.split() for ln in status if ln.startswith("[GNUPG:] VALIDSIG ")]
        primary = [v[11] if len(v) > 11 else v[2] for v in valid]
        if proc.returncode == 0 and len(good) == 1 and primary == [self.fingerprint]:
            return Verified(self.fingerprint, good[0][3] if len(good[0]) > 3 else "")
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        if primary and primary != [self.fingerprint]:
            return f"signed by {', '.join(primary)}, not by {self.fingerprint}"
        return lines[-1] if lines else f"gpgv exited with {proc.returncode}"

    def export_public(self, *, armor: bool) -> bytes:
        exported = self._gpg.export_keys([self.fingerprint], armor=armor)
        data = exported.encode() if isinstance(exported, str) else bytes(exported)
        if not data:
            raise SigningError(f"gpg could not export public key {self.fingerprint}")
        return data


def ensure_dev_key(state_dir: Path) -> tuple[Path, str]:
    """Make the development key once under ``state_dir``; its GNUPGHOME and fingerprint."""
    home = state_dir / DEV_KEY_DIR
    gpg = _gpg(home)
    keys = gpg.list_keys(secret=True)
    if keys:
        if keys[0].get("algo") not in RSA_ALGORITHMS:
            log.warning(
                "the development key under %s is not RSA: xenial's apt cannot verify what it "
                "signs; remove that directory to make an RSA %d key",
                home,
                DEV_KEY_BITS,
            )
        return home, str(keys[0]["fingerprint"])
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
        raise SigningError(f"could not make the development key under {home}: {_failure(result)}")
    return home, str(result.fingerprint)


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
    """The configured signer; the development key when none is configured (not for releases)."""
    cfg = project.config.signing
    if not cfg.key:
        if release:
            raise SigningError(
                "a release cannot be signed with the development key; set [signing] key "
                "(and gnupghome, passphrase_env or passphrase_file) in product.toml"
            )
        home, fpr = ensure_dev_key(project.state_dir)
        return Signer(gnupghome=home, key=fpr, passphrase=None, development=True)
    keyring_home: Path | None = None
    if cfg.gnupghome:
        keyring_home = (project.root / cfg.gnupghome).expanduser()
    elif env.get("GNUPGHOME"):
        keyring_home = Path(env["GNUPGHOME"])
    passphrase = passphrase_from(cfg.passphrase_env, cfg.passphrase_file, env, project.root)
    return Signer(gnupghome=keyring_home, key=cfg.key, passphrase=passphrase)
