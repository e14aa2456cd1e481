"""Sigstore keyless signing and offline verification, through sigstore-python (paired, like
model_signing's ``sign_sigstore``).

Signing: an OIDC identity token (given, ambient in CI, or from the browser flow on a terminal)
gets a short-lived Fulcio certificate; the DSSE envelope is logged in Rekor. This needs the
network. The trust root comes from a given client trust config, or from a TUF refresh of the
public (or staging) instance whose files go to a cache directory the caller chooses.

Verification never touches the network and writes nothing: the trusted root is the one
sigstore-python ships for the public (or staging) instance, or a given client trust config.
The certificate must name the expected identity and OIDC issuer.
"""
from __future__ import annotations

import importlib.resources
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

from sentry._optional import require
from sentry.errors import BadSignature, InvalidBundle, Remedy, SentryError, reason
from sentry.signing.base import Signer, Verifier
from sentry.signing.bundle import Bundle, parse_bundle, require_method
from sentry.signing.dsse import PAYLOAD_TYPE

__all__ = [
    "CACHE_ENV",
    "FIXED_TRUST",
    "GIVE_TOKEN",
    "MAX_TRUST_CONFIG_BYTES",
    "NO_IDENTITY",
    "PRODUCTION_TUF",
    "STAGING_TUF",
    "TRUST_CONFIG_TYPE",
    "SigstoreSigner",
    "SigstoreVerifier",
    "client_trust_config",
    "default_cache_dir",
]

PRODUCTION_TUF = "https://tuf-repo-cdn.sigstore.dev"
STAGING_TUF = "https://tuf-repo-cdn.sigstage.dev"
CACHE_ENV = "SENTRY_CACHE_DIR"
TRUST_CONFIG_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
MAX_TRUST_CONFIG_BYTES = 8 << 20
NO_IDENTITY = (
    "Sigstore signing needs an OIDC identity: run in CI with ambient credentials (GitHub Actions: "
    "permissions id-token: write) or on a terminal to log in"
)
GIVE_TOKEN = Remedy("identity_token", "TOKEN", "to use a token you have")
FIXED_TRUST = Remedy("trust_config", "FILE", "for a fixed trust configuration")


def _require_sigstore() -> None:
    require("sigstore", "sigstore", "Sigstore signing or verification")


def default_cache_dir() -> Path:
    """$SENTRY_CACHE_DIR, else $XDG_CACHE_HOME/sentry, else ~/.cache/sentry."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sentry"


def _embedded(url: str, name: str) -> str:
    """A trust file that sigstore-python ships for the public and staging instances."""
    try:
        return (importlib.resources.files("sigstore") / "_store" / quote(url, safe="") / name).read_text("utf-8")
    except OSError:
        raise SentryError(f"the installed sigstore-python ships no {name}", remedy=FIXED_TRUST) from None


def _config(trusted_root: str, signing_config: str):
    from sigstore.models import ClientTrustConfig

    return ClientTrustConfig.from_json(json.dumps({
        "mediaType": TRUST_CONFIG_TYPE,
        "trustedRoot": json.loads(trusted_root),
        "signingConfig": json.loads(signing_config),
    }))


def client_trust_config(trust_config=None, *, staging: bool = False):
    """The ClientTrustConfig from ``trust_config`` (a file), else the shipped one; offline."""
    _require_sigstore()
    if trust_config is None:
        url = STAGING_TUF if staging else PRODUCTION_TUF
        return _config(_embedded(url, "trusted_root.json"), _embedded(url, "signing_config.v0.2.json"))
    from sigstore.models import ClientTrustConfig

    path = Path(trust_config)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TRUST_CONFIG_BYTES + 1)
    except OSError as exc:
        raise SentryError(f"cannot read trust config {path}: {exc.strerror or reason(exc)}") from None
    if len(data) > MAX_TRUST_CONFIG_BYTES:
        raise SentryError(f"trust config {path} is too large")
    try:
        return ClientTrustConfig.from_json(data.decode("utf-8"))
    except Exception as exc:  # pydantic, JSON and key errors: all mean "not a trust config"
        raise SentryError(f"{path} is not a Sigstore client trust config ({reason(exc)})") from None


def _refreshed_trust_config(url: str, cache_dir: Path):
    """The public instance's current trust config, by TUF, cached under ``cache_dir`` only."""
    from tuf.ngclient import Updater

    base = Path(cache_dir) / "tuf" / quote(url, safe="")
    try:
        for d in (base / "metadata", base / "targets"):
            d.mkdir(parents=True, exist_ok=True)
        updater = Updater(metadata_dir=str(base / "metadata"), metadata_base_url=url,
                          target_dir=str(base / "targets"), target_base_url=f"{url}/targets/",
                          bootstrap=_embedded(url, "root.json").encode())
        updater.refresh()
        docs = []
        for name in ("trusted_root.json", "signing_config.v0.2.json"):
            info = updater.get_targetinfo(name)
            if info is None:
                raise SentryError(f"Sigstore's TUF repository {url} has no {name}")
            docs.append(Path(updater.find_cached_target(info) or updater.download_target(info)).read_text("utf-8"))
    except SentryError:
        raise
    except Exception as exc:  # network, TUF and file errors alike
        raise SentryError(f"cannot refresh Sigstore's trust root from {url} ({reason(exc)})", remedy=FIXED_TRUST) from None
    return _config(*docs)


def _sigstore_identity(step):
    """Run an OIDC step; its failures (IdentityError, NetworkError, IssuerError) as one sentence."""
    try:
        return step()
    except Exception as exc:
        raise SentryError(f"no usable Sigstore identity: {reason(exc)}") from None


def _token(raw: str | None):
    """The given token, else an ambient CI credential, as an IdentityToken; None if neither."""
    from sigstore.oidc import IdentityToken, detect_credential

    def step():
        found = raw if raw is not None else detect_credential()
        return None if found is None else IdentityToken(found)

    return _sigstore_identity(step)


class SigstoreSigner(Signer):
    """Keyless signing. The identity token and trust root are settled here, before any hashing."""

    def __init__(self, *, identity_token: str | None = None, staging: bool = False, trust_config=None,
                 cache_dir=None, interactive: bool | None = None):
        _require_sigstore()
        if interactive is None:
            interactive = sys.stdin is not None and sys.stdin.isatty()
        self._token = _token(identity_token)  # parsed offline: a bad token fails before anything else
        if self._token is None and not interactive:
            raise SentryError(NO_IDENTITY, remedy=GIVE_TOKEN)
        if trust_config is not None:
            self._trust = client_trust_config(trust_config)
        else:
            url = STAGING_TUF if staging else PRODUCTION_TUF
            self._trust = _refreshed_trust_config(url, cache_dir or default_cache_dir())
        if self._token is None:  # the browser (or copy-the-code) login of the instance's issuer
            from sigstore.oidc import Issuer

            self._token = _sigstore_identity(lambda: Issuer(self._trust.signing_config.get_oidc_url()).identity_token())

    @property
    def identity(self) -> tuple:
        """(identity, OIDC issuer) that the certificate will name: what a verifier must expect."""
        return self._token.identity, self._token.federated_issuer

    def sign(self, payload: bytes) -> Bundle:
        from sigstore import dsse
        from sigstore.sign import SigningContext

        try:
            context = SigningContext.from_trust_config(self._trust)
            with context.signer(self._token) as signer:
                bundle = signer.sign_dsse(dsse.Statement(bytes(payload)))
        except Exception as exc:  # network and service errors from Fulcio, Rekor, a TSA
            raise SentryError(f"Sigstore signing failed: {reason(exc)}") from None
        return parse_bundle(json.loads(bundle.to_json()))


class SigstoreVerifier(Verifier):
    """Verifies Sigstore bundles offline, for one identity from one OIDC issuer."""

    def __init__(self, identity: str, issuer: str, *, trust_config=None, staging: bool = False):
        if not identity or not issuer:
            raise SentryError("Sigstore verification needs both the signer's identity and its OIDC issuer")
        _require_sigstore()
        from sigstore.verify import Verifier as _Verifier
        from sigstore.verify import policy

        self._verifier = _Verifier(trusted_root=client_trust_config(trust_config, staging=staging).trusted_root)
        self._policy = policy.Identity(identity=identity, issuer=issuer)

    def verify(self, bundle: Bundle) -> bytes:
        from sigstore.models import Bundle as SigstoreBundle

        require_method(bundle, "sigstore")
        try:
            parsed = SigstoreBundle.from_json(json.dumps(bundle.raw))
        except Exception as exc:  # hostile input: any parse failure is one sentence
            raise InvalidBundle(f"the Sigstore bundle is invalid: {reason(exc)}") from None
        try:
            payload_type, payload = self._verifier.verify_dsse(parsed, self._policy)
        except Exception as exc:
            raise BadSignature(f"the Sigstore signature does not verify: {reason(exc)}") from None
        if payload_type != PAYLOAD_TYPE:
            raise InvalidBundle(f"the bundle's payload type is {payload_type[:60]!r}, expected {PAYLOAD_TYPE!r}")
        return payload
