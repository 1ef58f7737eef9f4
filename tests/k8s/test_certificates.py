"""Mutual TLS in the cluster: every service has a cert-manager Certificate naming its SPIFFE
identity, issued by the overlay's `shop-ca` Issuer, mounted where its config says.

kubernetes-validate has no schemas for cert-manager's kinds (it warns and passes), so the
cert-manager objects are checked here against the fields of cert-manager.io/v1 this repository
uses, written from the CRDs' definitions (unknown fields rejected, as `--strict` does).
"""

from __future__ import annotations

import base64
import posixpath

import jsonschema
import pytest

from conftest import all_services

SERVICES = all_services()
TRUST_DOMAIN = "shop.local"
NAMESPACE = "shop"
# What cert-manager writes into a Certificate's Secret.
SECRET_FILES = {"tls.crt", "tls.key", "ca.crt"}

_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_ISSUER_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"const": "cert-manager.io"},
    },
}
_USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
]
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"}
CERTIFICATE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": {"type": "string"},
        "issuerRef": _ISSUER_REF,
        "commonName": {"type": "string", "maxLength": 64},
        "isCA": {"type": "boolean"},
        "duration": _DURATION,
        "renewBefore": _DURATION,
        "dnsNames": _STRING_LIST,
        "uris": _STRING_LIST,
        "ipAddresses": _STRING_LIST,
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
                "size": {"type": "integer"},
            },
        },
    },
}
ISSUER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "selfSigned": {"type": "object", "additionalProperties": False,
                       "properties": {"crlDistributionPoints": _STRING_LIST}},
        "ca": {"type": "object", "additionalProperties": False, "required": ["secretName"],
               "properties": {"secretName": {"type": "string"},
                              "crlDistributionPoints": _STRING_LIST,
                              "ocspServers": _STRING_LIST,
                              "issuingCertificateURLs": _STRING_LIST}},
    },
}
SPECS = {"Certificate": CERTIFICATE_SPEC, "Issuer": ISSUER_SPEC}


def _object_schema(spec: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": spec,
        },
    }


def cert_manager_objects(m) -> list[dict]:
    return [o for o in m.objects if o["apiVersion"].startswith("cert-manager.io/")]


def test_cert_manager_objects_match_their_schema(rendered, overlay):
    objects = cert_manager_objects(rendered[overlay])
    assert objects, "no cert-manager objects"
    for o in objects:
        assert o["kind"] in SPECS, f"{o['kind']}: a kind this check does not know"
        jsonschema.validate(o, _object_schema(SPECS[o["kind"]]))
        assert o["metadata"]["namespace"] == NAMESPACE


def test_the_schema_check_rejects_what_cert_manager_would():
    good = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "x", "namespace": "shop"},
            "spec": {"secretName": "x", "issuerRef": {"name": "shop-ca"}}}
    jsonschema.validate(good, _object_schema(CERTIFICATE_SPEC))
    for bad_spec in (
        {"secretName": "x"},  # no issuerRef
        {"secretName": "x", "issuerRef": {"name": "a"}, "uri": ["spiffe://x"]},  # a typo
        {"secretName": "x", "issuerRef": {"name": "a"}, "usages": ["server"]},
        {"secretName": "x", "issuerRef": {"name": "a"}, "duration": "90d"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": bad_spec}, _object_schema(CERTIFICATE_SPEC))


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_certificate_for_its_identity(rendered, overlay, service):
    m = rendered[overlay]
    cert = m.get("Certificate", f"{service}-tls")
    assert cert, f"{overlay}: no Certificate {service}-tls"
    spec = cert["spec"]
    deployment = m.get("Deployment", service)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    # The identity the policies in proto/ and the other services' clients check.
    assert spec["uris"] == [f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{account}"]
    assert account == service
    assert {"server auth", "client auth"} <= set(spec["usages"])
    assert f"{service}-headless" in spec["dnsNames"]
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    ref = spec["issuerRef"]
    assert ref["kind"] == "Issuer" and m.get("Issuer", ref["name"]), f"{overlay}: no Issuer {ref}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_certificate_secret_is_mounted_where_the_config_points(rendered, overlay, service):
    m = rendered[overlay]
    secret = m.get("Certificate", f"{service}-tls")["spec"]["secretName"]
    pod = m.get("Deployment", service)["spec"]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret]
    assert len(volumes) == 1, f"{service}: Secret {secret} not mounted"
    assert volumes[0]["secret"]["defaultMode"] & 0o007 == 0, "key readable by others"
    container = pod["containers"][0]
    mounts = [v for v in container["volumeMounts"] if v["name"] == volumes[0]["name"]]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True
    # A subPath mount would never see a renewed certificate.
    assert "subPath" not in mounts[0]
    data = m.get("ConfigMap", f"{service}-config")["data"]
    files = [data["TLS_CERT_FILE"], data["TLS_KEY_FILE"], data["TLS_CA_FILE"]]
    assert {posixpath.dirname(f) for f in files} == {mounts[0]["mountPath"]}
    assert [posixpath.basename(f) for f in files] == ["tls.crt", "tls.key", "ca.crt"]
    assert set(map(posixpath.basename, files)) == SECRET_FILES


def test_dev_issues_from_its_own_ca(rendered):
    m = rendered["dev"]
    issuer = m.get("Issuer", "shop-ca")["spec"]["ca"]
    ca = m.get("Certificate", issuer["secretName"])
    assert ca and ca["spec"]["isCA"] is True, "shop-ca signs with a CA certificate"
    root = m.get("Issuer", ca["spec"]["issuerRef"]["name"])
    assert root["spec"] == {"selfSigned": {}}


def test_only_dev_has_a_developer_certificate(rendered):
    developer = rendered["dev"].get("Certificate", "developer-tls")["spec"]
    assert developer["uris"] == [f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/developer"]
    assert developer["usages"] == ["client auth"]
    assert not rendered["prod"].get("Certificate", "developer-tls")


def test_prod_issues_from_the_platform_ca(rendered):
    m = rendered["prod"]
    issuer = m.get("Issuer", "shop-ca")["spec"]
    # A Secret the platform creates: nothing in the overlay makes or defines it.
    assert set(issuer) == {"ca"}
    secret = issuer["ca"]["secretName"]
    assert not m.get("Certificate", secret) and not m.get("Secret", secret)
    assert not [o for o in m.of("Issuer") if "selfSigned" in o["spec"]]


def test_identity_seals_its_signing_keys_with_a_key_from_a_secret(rendered, overlay):
    m = rendered[overlay]
    container = m.get("Deployment", "identity")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["SIGNING_KEY_KEK"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "SIGNING_KEY_KEK" and ref["name"].startswith("identity-signing-kek")
    if overlay == "dev":
        secret = next(s for s in m.of("Secret") if s["metadata"]["name"] == ref["name"])
        kek = base64.b64decode(base64.b64decode(secret["data"]["SIGNING_KEY_KEK"]))
        assert len(kek) == 32, "a key-encryption key is 32 bytes"
