"""Sigstore: offline verification (no network, no writes) and keyless signing up to the network.

Live signing needs an OIDC identity and Fulcio/Rekor, which tests do not have; everything before
that boundary runs the real sigstore-python client: token parsing, trust configs, the TUF
refresh (refused here), key generation and the request to Fulcio (at an address that refuses).
"""
from __future__ import annotations

import json
import socket
import time

import pytest
from support import shared_interop

import sentry
from sentry.errors import SentryError, VerificationError
from sentry.signing import make_statement

pytest.importorskip("sigstore")
from sigstore_support import fake_token, trust_config_file

from sentry.signing.sigstore import NO_IDENTITY, SigstoreSigner, SigstoreVerifier

INTEROP = shared_interop()
needs_interop = pytest.mark.skipif(INTEROP is None, reason="shared interop data absent")
IBM = ("stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2")
AMBIENT = ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
           "GOOGLE_SERVICE_ACCOUNT_NAME", "BUILDKITE", "GITLAB_CI", "CIRCLECI")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No sockets, no ambient CI identity, and a fresh empty HOME to catch stray writes."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    home = tmp_path / "home"
    home.mkdir()
    for var in AMBIENT + ("XDG_CACHE_HOME", "XDG_DATA_HOME", "SENTRY_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


# ------------------------------------------------------------------------------ verifying


@needs_interop
def test_verify_is_offline_and_writes_nothing(offline, tmp_path):
    for verifier in (SigstoreVerifier(*IBM), SigstoreVerifier(*IBM, trust_config=trust_config_file(tmp_path))):
        report = sentry.verify_model(INTEROP / "v1.0.1-sigstore", public_key=verifier, ignore=["ignore-me"],
                                     signature=INTEROP / "v1.0.1-sigstore" / "model.sig")
        assert report.ok
    assert list(offline.iterdir()) == []


@needs_interop
def test_staging_root_does_not_trust_public_good_bundles(offline):
    with pytest.raises(VerificationError, match="the Sigstore signature does not verify"):
        sentry.verify_model(INTEROP / "v1.0.1-sigstore", public_key=SigstoreVerifier(*IBM, staging=True),
                            ignore=["ignore-me"], signature=INTEROP / "v1.0.1-sigstore" / "model.sig")


@needs_interop
def test_hostile_sigstore_bundles_fail_in_one_sentence(offline, tmp_path):
    raw = json.loads((INTEROP / "v1.0.1-sigstore" / "model.sig").read_text())
    raw["verificationMaterial"]["certificate"]["rawBytes"] = "AAAA"
    sig = tmp_path / "bad.sig"
    sig.write_text(json.dumps(raw))
    with pytest.raises(VerificationError) as err:
        sentry.verify_model(INTEROP / "v1.0.1-sigstore", public_key=SigstoreVerifier(*IBM), signature=sig,
                            ignore=["ignore-me"])
    assert str(err.value).startswith("the Sigstore bundle is invalid") and "\n" not in str(err.value)


def test_verifier_options_and_trust_configs_are_checked(tmp_path):
    with pytest.raises(SentryError, match="needs both the signer's identity and its OIDC issuer"):
        SigstoreVerifier("me@example.com", "")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mediaType": "nope"}')
    with pytest.raises(SentryError, match="is not a Sigstore client trust config"):
        SigstoreVerifier(*IBM, trust_config=bad)
    with pytest.raises(SentryError, match="cannot read trust config"):
        SigstoreVerifier(*IBM, trust_config=tmp_path / "missing.json")


# ------------------------------------------------------------------------------ signing


def test_signer_needs_an_identity_and_checks_the_token_first(offline):
    with pytest.raises(SentryError) as err:
        SigstoreSigner(interactive=False)
    assert err.value.message == NO_IDENTITY and err.value.remedy.setting == "identity_token"
    with pytest.raises(SentryError, match="no usable Sigstore identity: Identity token is malformed"):
        SigstoreSigner(identity_token="not-a-jwt")
    with pytest.raises(SentryError, match="no usable Sigstore identity"):  # expired
        SigstoreSigner(identity_token=fake_token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))


def test_trust_root_refresh_writes_only_to_the_cache_dir(offline, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(SentryError, match="cannot refresh Sigstore's trust root from https://tuf-repo-cdn"):
        SigstoreSigner(identity_token=fake_token(), cache_dir=cache)
    assert (cache / "tuf").is_dir() and list(offline.iterdir()) == []


def test_signing_runs_the_real_client_up_to_fulcio(offline, tmp_path):
    signer = SigstoreSigner(identity_token=fake_token(), trust_config=trust_config_file(tmp_path,
                                                                                service_url="http://127.0.0.1:9"))
    with pytest.raises(SentryError, match="^Sigstore signing failed: ") as err:
        signer.sign(make_statement("model", "ab" * 32, {"items": []}))
    assert "\n" not in str(err.value)
