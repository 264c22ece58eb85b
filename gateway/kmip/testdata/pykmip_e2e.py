#!/usr/bin/env python3
"""End-to-end check of Krypton's KMIP front end with PyKMIP, a real external
KMIP client (Debian package python3-pykmip).

Run by TestPyKMIP (pykmip_test.go):

    pykmip_e2e.py HOST PORT CERT KEY CA VERSION NAME

VERSION is 1.2, 1.4 or 2.0. The script prints one "step: result" line per
step and "done" at the end; the Go test checks them. Any failure raises and
ends the script with a non-zero status.

KMIP 1.2 (and 1.3) have no Authenticated Encryption Additional Data or Tag
fields, and PyKMIP writes and reads none in those versions: the gateway then
appends the GCM tag to Data and takes it from there (docs/kmip.md), and the
GCM steps run without additional data.
"""

import os
import sys

from kmip.core import enums
from kmip.core import exceptions as core_exceptions
from kmip.core import objects as core_objects
from kmip.core.attributes import CryptographicParameters
from kmip.core.factories import attributes as attribute_factories
from kmip.core.messages import payloads
from kmip.pie import client as pie_client
from kmip.pie import exceptions as pie_exceptions
from kmip.pie import objects as pie_objects


def main():
    host, port, cert, key, ca, version, name = sys.argv[1:8]
    kmip_version = {
        "1.2": enums.KMIPVersion.KMIP_1_2,
        "1.4": enums.KMIPVersion.KMIP_1_4,
        "2.0": enums.KMIPVersion.KMIP_2_0,
    }[version]

    client = pie_client.ProxyKmipClient(
        hostname=host,
        port=int(port),
        cert=cert,
        key=key,
        ca=ca,
        # PyKMIP's default, PROTOCOL_SSLv23, negotiates the highest version
        # both ends support: TLS 1.3 with Krypton. Named here to be explicit.
        ssl_version="PROTOCOL_SSLv23",
        # No configuration file: every setting is given here.
        config_file=os.devnull,
        kmip_version=kmip_version,
    )
    factory = attribute_factories.AttributeFactory()
    # Whether the version has the tag and additional data fields (1.4 on).
    tag_field = kmip_version >= enums.KMIPVersion.KMIP_1_4
    with client:
        # Discover Versions and Query through PyKMIP's lower-level client.
        dv = client.proxy.discover_versions()
        assert dv.result_status.value == enums.ResultStatus.SUCCESS, dv
        print("discover-versions:", ",".join(
            "%d.%d" % (v.major, v.minor) for v in dv.protocol_versions))
        q = client.proxy.query(query_functions=[
            enums.QueryFunction.QUERY_OPERATIONS,
            enums.QueryFunction.QUERY_OBJECTS])
        assert q.result_status.value == enums.ResultStatus.SUCCESS, q
        ops = set(getattr(o, "value", o) for o in q.operations)
        for op in (enums.Operation.CREATE, enums.Operation.ENCRYPT,
                   enums.Operation.CHECK, enums.Operation.MODIFY_ATTRIBUTE,
                   enums.Operation.DELETE_ATTRIBUTE,
                   enums.Operation.GET_ATTRIBUTE_LIST):
            assert op.value in ops, (op, ops)
        print("query: ok")

        uid = client.create(enums.CryptographicAlgorithm.AES, 256, name=name)
        print("create:", uid)

        client.activate(uid)
        print("activate: ok")

        # CBC with PKCS#5 padding and a server-chosen IV, through the
        # high-level client (whose Encrypt has no place for a GCM tag).
        data = b"The quick brown fox jumps over the lazy dog"
        cbc = {
            "block_cipher_mode": enums.BlockCipherMode.CBC,
            "padding_method": enums.PaddingMethod.PKCS5,
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        }
        ciphertext, iv = client.encrypt(
            data, uid=uid,
            cryptographic_parameters=dict(cbc, random_iv=True))
        assert ciphertext != data and len(ciphertext) == 48, len(ciphertext)
        assert iv is not None and len(iv) == 16
        plaintext = client.decrypt(
            ciphertext, uid=uid, cryptographic_parameters=cbc,
            iv_counter_nonce=iv)
        assert plaintext == data
        print("encrypt-decrypt-cbc: ok")

        # AES-GCM with additional data, through PyKMIP's lower-level proxy,
        # whose payloads carry the Authenticated Encryption Tag (KMIP 1.4+).
        gcm = CryptographicParameters(
            block_cipher_mode=enums.BlockCipherMode.GCM,
            cryptographic_algorithm=enums.CryptographicAlgorithm.AES)
        aad = b"customer=42" if tag_field else None
        enc = client.proxy.send_request_payload(
            enums.Operation.ENCRYPT,
            payloads.EncryptRequestPayload(
                unique_identifier=uid, cryptographic_parameters=gcm,
                data=data, auth_additional_data=aad))
        assert len(enc.iv_counter_nonce) == 12
        if tag_field:
            assert len(enc.auth_tag) == 16 and len(enc.data) == len(data)
        else:
            assert enc.auth_tag is None and len(enc.data) == len(data) + 16
        dec = client.proxy.send_request_payload(
            enums.Operation.DECRYPT,
            payloads.DecryptRequestPayload(
                unique_identifier=uid, cryptographic_parameters=gcm,
                data=enc.data, iv_counter_nonce=enc.iv_counter_nonce,
                auth_additional_data=aad, auth_tag=enc.auth_tag))
        assert dec.data == data
        try:
            # The wrong additional data (1.4 on), or a flipped tag bit (1.2).
            sealed = enc.data if tag_field else \
                enc.data[:-1] + bytes([enc.data[-1] ^ 1])
            client.proxy.send_request_payload(
                enums.Operation.DECRYPT,
                payloads.DecryptRequestPayload(
                    unique_identifier=uid, cryptographic_parameters=gcm,
                    data=sealed, iv_counter_nonce=enc.iv_counter_nonce,
                    auth_additional_data=b"customer=43" if tag_field else None,
                    auth_tag=enc.auth_tag))
            raise AssertionError("GCM decrypt of a forgery succeeded")
        except core_exceptions.OperationFailure as e:
            assert e.reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE, e
        print("encrypt-decrypt-gcm: ok")

        # Without parameters the gateway uses GCM; from 1.4 PyKMIP's
        # high-level encrypt drops the tag field, so its decrypt is refused,
        # not misread. In 1.2 the tag travels in Data and the pair works.
        ciphertext, iv = client.encrypt(data, uid=uid)
        assert len(iv) == 12
        assert len(ciphertext) == len(data) + (0 if tag_field else 16)
        try:
            assert client.decrypt(
                ciphertext, uid=uid, iv_counter_nonce=iv) == data
            if tag_field:
                raise AssertionError("GCM decrypt without a tag succeeded")
            print("decrypt-default-without-tag: ok")
        except pie_exceptions.KmipOperationFailure as e:
            print("decrypt-default-without-tag:", e.reason.name)

        _, attrs = client.get_attributes(
            uid, ["State", "Cryptographic Algorithm", "Cryptographic Length",
                  "Name"])
        got = {}
        for a in attrs:
            value = a.attribute_value
            if a.attribute_name.value == "Name":
                value = value.name_value.value
            else:
                value = value.value
            got[a.attribute_name.value] = value
        print("get-attributes: state=%s algorithm=%s length=%s name=%s" % (
            got["State"].name, got["Cryptographic Algorithm"].name,
            got["Cryptographic Length"], got["Name"]))

        names = client.get_attribute_list(uid)
        assert "Cryptographic Algorithm" in names, names
        print("get-attribute-list: %d" % len(names))

        located = client.locate(
            attributes=[factory.create_attribute(enums.AttributeType.NAME,
                                                 name)])
        print("locate:", ",".join(located))

        key_object = client.get(uid)
        assert len(key_object.value) == 32
        print("get: %d bytes" % len(key_object.value))

        # Re-key: a new key under a new identifier, the name moved to it.
        new_uid = client.rekey(uid=uid)
        assert new_uid != uid
        rekeyed = client.get(new_uid)
        assert len(rekeyed.value) == 32 and rekeyed.value != key_object.value
        located = client.locate(
            attributes=[factory.create_attribute(enums.AttributeType.NAME,
                                                 name)])
        assert located == [new_uid], located
        print("rekey: ok")

        # Register a key the client made; Get returns the same bytes, and
        # the gateway encrypts with it.
        own = os.urandom(32)
        reg_uid = client.register(pie_objects.SymmetricKey(
            enums.CryptographicAlgorithm.AES, 256, own,
            masks=[enums.CryptographicUsageMask.ENCRYPT,
                   enums.CryptographicUsageMask.DECRYPT]))
        assert client.get(reg_uid).value == own
        client.activate(reg_uid)
        ciphertext, iv = client.encrypt(
            data, uid=reg_uid,
            cryptographic_parameters=dict(cbc, random_iv=True))
        assert client.decrypt(ciphertext, uid=reg_uid,
                              cryptographic_parameters=cbc,
                              iv_counter_nonce=iv) == data
        print("register: ok")

        # AES-GCM with the client's own 96-bit nonce and IV Length 12 (in
        # bytes, as KMIP auto-unseal clients send it): the gateway encrypts
        # under a one-message key, so a repeated nonce costs nothing.
        gcm12 = CryptographicParameters(
            block_cipher_mode=enums.BlockCipherMode.GCM,
            cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
            iv_length=12, tag_length=16)
        nonce = os.urandom(12)
        sealed = []
        for _ in range(2):
            enc = client.proxy.send_request_payload(
                enums.Operation.ENCRYPT,
                payloads.EncryptRequestPayload(
                    unique_identifier=reg_uid, cryptographic_parameters=gcm12,
                    data=data, iv_counter_nonce=nonce,
                    auth_additional_data=aad))
            assert enc.iv_counter_nonce is None
            if tag_field:
                assert len(enc.auth_tag) == 16
                assert len(enc.data) == 32 + len(data)  # salt, ciphertext
            else:
                assert enc.auth_tag is None
                assert len(enc.data) == 32 + len(data) + 16  # and the tag
            dec = client.proxy.send_request_payload(
                enums.Operation.DECRYPT,
                payloads.DecryptRequestPayload(
                    unique_identifier=reg_uid,
                    cryptographic_parameters=gcm12, data=enc.data,
                    iv_counter_nonce=nonce, auth_additional_data=aad,
                    auth_tag=enc.auth_tag))
            assert dec.data == data
            sealed.append(enc.data)
        assert sealed[0] != sealed[1]
        print("encrypt-decrypt-gcm-client-nonce: ok")

        # Check: the key may encrypt, not sign.
        assert client.check(
            uid=reg_uid,
            cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                      enums.CryptographicUsageMask.DECRYPT]
        ) == reg_uid
        print("check: ok")
        try:
            client.check(
                uid=reg_uid,
                cryptographic_usage_mask=[enums.CryptographicUsageMask.SIGN])
            raise AssertionError("check of a usage the key lacks succeeded")
        except pie_exceptions.KmipOperationFailure as e:
            print("check-sign:", e.reason.name)

        # Modify and Delete Attribute on the re-keyed key's Name.
        renamed = name + "-renamed"
        values = client.attribute_value_factory
        if kmip_version == enums.KMIPVersion.KMIP_2_0:
            client.modify_attribute(
                unique_identifier=new_uid,
                current_attribute=core_objects.CurrentAttribute(
                    attribute=values.create_attribute_value(
                        enums.AttributeType.NAME, name)),
                new_attribute=core_objects.NewAttribute(
                    attribute=values.create_attribute_value(
                        enums.AttributeType.NAME, renamed)))
        else:
            client.modify_attribute(
                unique_identifier=new_uid,
                attribute=factory.create_attribute(
                    enums.AttributeType.NAME, renamed, index=0))
        located = client.locate(
            attributes=[factory.create_attribute(enums.AttributeType.NAME,
                                                 renamed)])
        assert located == [new_uid], located
        if kmip_version == enums.KMIPVersion.KMIP_2_0:
            client.delete_attribute(
                unique_identifier=new_uid,
                attribute_reference=core_objects.AttributeReference(
                    vendor_identification="", attribute_name="Name"))
        else:
            _, deleted = client.delete_attribute(
                unique_identifier=new_uid, attribute_name="Name",
                attribute_index=0)
            assert deleted.attribute_value.name_value.value == renamed
        _, attrs = client.get_attributes(new_uid, ["Name"])
        assert attrs == [], attrs
        print("modify-delete-attribute: ok")

        client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        print("revoke: ok")
        try:
            client.encrypt(data, uid=uid,
                           cryptographic_parameters=dict(cbc, random_iv=True))
            raise AssertionError("encrypt with a revoked key succeeded")
        except pie_exceptions.KmipOperationFailure as e:
            print("encrypt-after-revoke:", e.reason.name)

        client.destroy(uid)
        _, attrs = client.get_attributes(uid, ["State"])
        print("destroy: state=%s" % attrs[0].attribute_value.value.name)
    print("done")


if __name__ == "__main__":
    main()
