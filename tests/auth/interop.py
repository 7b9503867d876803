#!/usr/bin/env python3
"""Interop fixture for tests/auth/interop.rs.

Generates its own RSA 2048 and EC P-256 keys with `cryptography`, and prints
on stdout, as one JSON object:

- "jwks": the public keys as a JWKS document made by PyJWT
  (RSAAlgorithm.to_jwk / ECAlgorithm.to_jwk, with kid, alg and use added);
- "tokens": {"RS256": ..., "ES256": ...} signed by PyJWT.

Usage: interop.py <issuer> <audience>
"""

import json
import sys
import time

try:
    import jwt
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError as e:  # pragma: no cover - reported by the Rust test
    print(f'missing Python dependency ({e}): pip install "pyjwt[crypto]"', file=sys.stderr)
    sys.exit(3)


def main() -> None:
    issuer, audience = sys.argv[1], sys.argv[2]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    keys = []
    for kid, alg, to_jwk, key in [
        ("py-rsa", "RS256", RSAAlgorithm.to_jwk, rsa_key),
        ("py-ec", "ES256", ECAlgorithm.to_jwk, ec_key),
    ]:
        jwk = json.loads(to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        keys.append(jwk)

    now = int(time.time())
    tokens = {}
    for kid, alg, key in [("py-rsa", "RS256", rsa_key), ("py-ec", "ES256", ec_key)]:
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": f"python-{alg}",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "scope": "orders:read orders:write",
        }
        tokens[alg] = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})

    json.dump(
        {"jwks": {"keys": keys}, "tokens": tokens, "pyjwt": jwt.__version__},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
