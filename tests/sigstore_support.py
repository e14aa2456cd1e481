"""Sigstore inputs for the tests that run the real client offline: an unsigned identity token and
the shipped public-good trust root as a client trust config."""
from __future__ import annotations

import json
import time

from sentry.signing.sigstore import PRODUCTION_TUF, _embedded


def fake_token(**claims) -> str:
    import jwt

    now = int(time.time())
    body = {"aud": "sigstore", "sub": "me@example.com", "iss": "https://issuer.example.com",
            "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, "unused-key-not-verified-by-the-client", algorithm="HS256")


def trust_config_file(tmp_path, *, service_url=None) -> str:
    """The shipped public-good trust root as a client trust config; services moved if asked."""
    signing = json.loads(_embedded(PRODUCTION_TUF, "signing_config.v0.2.json"))
    if service_url:
        for key in ("caUrls", "oidcUrls", "rekorTlogUrls", "tsaUrls"):
            for service in signing.get(key, []):
                service["url"] = service_url
    path = tmp_path / "trust_config.json"
    path.write_text(json.dumps({"mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                                "trustedRoot": json.loads(_embedded(PRODUCTION_TUF, "trusted_root.json")),
                                "signingConfig": signing}))
    return str(path)
