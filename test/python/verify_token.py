"""Verifies a Writ-issued token with PyJWT from nothing but the OIDC discovery URL.

usage: verify_token.py DISCOVERY_URL TOKEN AUDIENCE
prints `OK <claims as JSON>` or `REJECTED <PyJWT exception name>`.
"""
import json
import sys
import urllib.request

import jwt

disco_url, token, audience = sys.argv[1], sys.argv[2], sys.argv[3]
disco = json.load(urllib.request.urlopen(disco_url))
key = jwt.PyJWKClient(disco["jwks_uri"]).get_signing_key_from_jwt(token)
try:
    claims = jwt.decode(
        token,
        key.key,
        algorithms=disco["id_token_signing_alg_values_supported"],
        audience=audience,
        issuer=disco["issuer"],
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    print("OK", json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
except jwt.InvalidTokenError as e:
    print("REJECTED", type(e).__name__)
