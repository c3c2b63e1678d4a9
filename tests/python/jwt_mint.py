"""Mints JSON Web Tokens for the JWT suite with PyJWT: an RS256 issuer key (its public half
written as a JWKS), a second key nodegate does not know, and tokens that are valid, expired,
for another audience or issuer, signed by the unknown key, HS256-signed with the public key's
PEM (the algorithm-confusion attack), and unsigned (alg none). Prints them as JSON."""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

out_jwks = sys.argv[1]
issuer, audience, subject = "https://issuer.test", "nodegate", "researcher"

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
public_jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
with open(out_jwks, "w") as f:
    json.dump({"keys": [public_jwk]}, f)

now = int(time.time())


def claims(**over):
    c = {"iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + 600}
    c.update(over)
    return c


def rs(c, k=key, kid="k1"):
    return jwt.encode(c, k, algorithm="RS256", headers={"kid": kid})


public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
tokens = {
    "valid": rs(claims()),
    "expired": rs(claims(iat=now - 7200, exp=now - 3600)),
    "wrong_audience": rs(claims(aud="someone-else")),
    "wrong_issuer": rs(claims(iss="https://evil.test")),
    "wrong_key": rs(claims(), k=other),
    "not_yet_valid": rs(claims(nbf=now + 3600)),
    "none": jwt.encode(claims(), None, algorithm="none"),
}
# HS256 keyed with the public key: a verifier that took the token's alg at its word would accept it.
import hmac, hashlib, base64
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
body = b64(json.dumps(claims()).encode())
sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
tokens["hs256_with_public_key"] = f"{head}.{body}.{sig}"
print(json.dumps(tokens))
