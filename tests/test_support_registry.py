"""The test registry itself works in each mode the suite relies on."""

import requests


def test_plain_registry_answers_v2(registry):
    r = requests.get(f"{registry.url}/v2/", timeout=5)
    assert r.status_code == 200


def test_tls_htpasswd_registry(tls_registry):
    ca = str(tls_registry.tls_cert_ca)
    assert requests.get(f"{tls_registry.url}/v2/", verify=ca, timeout=5).status_code == 401
    ok = requests.get(f"{tls_registry.url}/v2/", verify=ca, auth=("alice", "wonderland"), timeout=5)
    assert ok.status_code == 200
