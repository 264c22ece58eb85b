#!/usr/bin/env python3
"""Opens every vector in vectors.json following docs/format.md, with Python's
hmac/hashlib and the `cryptography` package only: a second implementation,
written from the specification. Run: python3 wrap/testdata/unwrap.py"""
import hashlib, hmac, json, os, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def derive(kdf, key, label, salt):
    if kdf == 2:  # SP 800-108 counter mode, HMAC-SHA256
        msg = struct.pack(">I", 1) + label + b"\x00" + salt + struct.pack(">I", 256)
        return hmac.new(key, msg, hashlib.sha256).digest()
    if kdf in (1, 3):  # HKDF-SHA256 (RFC 5869), one block of expand
        prk = hmac.new(salt, key, hashlib.sha256).digest()
        return hmac.new(prk, label + b"\x01", hashlib.sha256).digest()
    raise ValueError("unknown KDF id %d" % kdf)


def parse(blob):
    assert blob[0] == 0x4B and blob[1] == 1, "magic/version"
    kind, kdf, p = blob[2], blob[3], 4
    names = []
    def name():
        nonlocal p
        n = blob[p]; s = blob[p + 1:p + 1 + n].decode(); p += 1 + n
        return s
    def u32():
        nonlocal p
        v = struct.unpack(">I", blob[p:p + 4])[0]; p += 4
        return v
    tenant, service, version = name(), name(), u32()
    if kind == 1:
        names = [name(), u32()]
    salt, nonce = blob[p:p + 32], blob[p + 32:p + 44]
    p += 44
    assert len(blob) - p == 48, "ciphertext length"
    return kind, kdf, (tenant, service, version, names), salt, nonce, blob[:p], blob[p:]


def main():
    path = os.path.join(os.path.dirname(__file__), "vectors.json")
    labels = {1: b"krypton/wrap/v1 seal service key", 2: b"krypton/wrap/v1 wrap data key"}
    for v in json.load(open(path))["vectors"]:
        blob = bytes.fromhex(v["blob"])
        kind, kdf, ids, salt, nonce, header, ct = parse(blob)
        key = derive(kdf, bytes.fromhex(v["parent_key"]), labels[kind], salt)
        ctx = bytes.fromhex(v["context"])
        # Suite 3 (random-nonce GCM): the header in the AAD stops before the nonce.
        authenticated = header[:-12] if kdf == 3 else header
        aad = authenticated + struct.pack(">I", len(ctx)) + ctx
        pt = AESGCM(key).decrypt(nonce, ct, aad)
        ok = pt.hex() == v["plaintext"]
        print(("ok  " if ok else "FAIL"), v["name"], ids)
        if not ok:
            sys.exit(1)


main()
