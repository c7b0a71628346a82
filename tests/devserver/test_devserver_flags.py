"""Feature flags on the dev server: definitions, /flags, remote config and the flags read API."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

import posthog
from posthog.flags.local import FlagDefinitions
from posthog_integrations.devserver import DevServer, FlagsFileError
from posthog_integrations.devserver.flags import etag_matches

AUTH = {"Authorization": "Bearer phs_test"}
DEFINITIONS = "/flags/definitions?token=phc_test&send_cohorts"

SIMPLE = {
    "id": 1, "key": "simple-flag", "active": True, "version": 3,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 50}],
                "payloads": {"true": '{"color": "blue"}'}},
}
MULTIVARIATE = {
    "id": 2, "key": "multivariate-flag", "active": True, "version": 1, "has_experiment": True,
    "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "multivariate": {"variants": [
            {"key": "first-variant", "rollout_percentage": 50},
            {"key": "second-variant", "rollout_percentage": 20},
            {"key": "third-variant", "rollout_percentage": 20},
            {"key": "fourth-variant", "rollout_percentage": 5},
            {"key": "fifth-variant", "rollout_percentage": 5},
        ]},
        "payloads": {"first-variant": '{"n": 1}', "second-variant": '"second"'},
    },
}
PERSON = {
    "id": 3, "key": "pro-only", "active": True,
    "filters": {"groups": [{"properties": [
        {"key": "plan", "value": ["pro"], "operator": "exact", "type": "person"}
    ]}]},
}
COMPANY = {
    "id": 4, "key": "enterprise-companies", "active": True,
    "filters": {"aggregation_group_type_index": 0, "groups": [{"properties": [
        {"key": "tier", "value": "enterprise", "type": "group", "group_type_index": 0}
    ]}]},
}
MIXED = {  # a person flag with a condition on the company: needs the injected $group_key
    "id": 5, "key": "acme-people", "active": True,
    "filters": {"groups": [{"aggregation_group_type_index": 0, "properties": [
        {"key": "$group_key", "value": "acme", "type": "group", "group_type_index": 0}
    ]}]},
}
CONTINUITY = {
    "id": 6, "key": "sticky", "active": True, "ensure_experience_continuity": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}
INACTIVE = {"id": 7, "key": "switched-off", "active": False,
            "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}
COHORT = {  # a static cohort (not in "cohorts"): only PostHog knows its members
    "id": 8, "key": "static-cohort", "active": True,
    "filters": {"groups": [{"properties": [{"key": "id", "value": 99, "type": "cohort"}]}]},
}


def _definitions(*flags: dict[str, Any]) -> dict[str, Any]:
    return {"flags": list(flags), "group_type_mapping": {"0": "company"}, "cohorts": {}}


ALL = _definitions(SIMPLE, MULTIVARIATE, PERSON, COMPANY, MIXED, CONTINUITY, INACTIVE, COHORT)


@pytest.fixture
def flagged(server: DevServer) -> DevServer:
    server.set_flags(ALL)
    return server


def _flags(server: DevServer, http: requests.Session, body: Any, query: str = "?v=4",
           path: str = "/flags/") -> requests.Response:
    return http.post(server.url + path + query, json=body, timeout=5)


def _ask(server: DevServer, http: requests.Session, distinct_id: str,
         **fields: Any) -> dict[str, Any]:
    response = _flags(server, http, {"api_key": "phc_test", "distinct_id": distinct_id, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# -- definitions ------------------------------------------------------------------------


def test_definitions_etag_and_304(flagged: DevServer, http: requests.Session) -> None:
    response = http.get(flagged.url + DEFINITIONS, headers=AUTH, timeout=5)
    assert response.status_code == 200
    assert response.json() == ALL
    etag = response.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)

    again = http.get(flagged.url + DEFINITIONS, headers={**AUTH, "If-None-Match": etag},
                     timeout=5)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    assert "Content-Length" not in again.headers

    # The keep-alive connection is still usable after the bodiless 304.
    legacy = http.get(flagged.url + "/api/feature_flag/local_evaluation?token=t", headers=AUTH,
                      timeout=5)
    assert legacy.json() == ALL
    assert legacy.headers["ETag"] == etag

    flagged.set_flags([SIMPLE])
    changed = http.get(flagged.url + DEFINITIONS, headers={**AUTH, "If-None-Match": etag},
                       timeout=5)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.json() == {"flags": [SIMPLE], "group_type_mapping": {}, "cohorts": {}}
    assert [r["status"] for r in flagged.requests] == [200, 304, 200, 200]


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer "},
                                     {"Authorization": "Bearer   "},
                                     {"Authorization": "Basic abc"}])
def test_definitions_and_remote_config_need_a_bearer(
    flagged: DevServer, http: requests.Session, headers: dict[str, str]
) -> None:
    for path in (DEFINITIONS, "/api/projects/@current/feature_flags/simple-flag/remote_config"):
        response = http.get(flagged.url + path, headers=headers, timeout=5)
        assert response.status_code == 401, path
        assert response.json()["type"] == "authentication_error"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_flags_without_file_or_set_flags(server: DevServer, http: requests.Session) -> None:
    response = http.get(server.url + DEFINITIONS, headers=AUTH, timeout=5)
    assert response.json() == {"flags": [], "group_type_mapping": {}, "cohorts": {}}
    assert _ask(server, http, "u")["flags"] == {}
    assert server.flags_path is None


def test_set_flags_validates(server: DevServer) -> None:
    bad: Any
    for bad in ("nope", {"flags": "x"}, [{"no": "key"}], {"flags": [], "cohorts": []},
                {"flags": [], "property_matching_version": "2"}):
        with pytest.raises(FlagsFileError):
            server.set_flags(bad)
    data: dict[str, Any] = {
        "flags": [SIMPLE], "property_matching_version": 2, "minimal_flag_called_events": True,
    }
    server.set_flags(data)
    data["flags"].clear()  # the server keeps its own copy
    assert server.flag_definitions == {
        "flags": [SIMPLE], "group_type_mapping": {}, "cohorts": {},
        "property_matching_version": 2, "minimal_flag_called_events": True,
    }


def test_etag_matching() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches('"b", "a"', '"a"')
    assert etag_matches("*", '"a"')
    assert not etag_matches('"b"', '"a"')
    assert not etag_matches(None, '"a"')


# -- /flags ------------------------------------------------------------------------------


def test_rollout_vector(flagged: DevServer, http: requests.Session) -> None:
    inside = _ask(flagged, http, "some-distinct-id")["flags"]["simple-flag"]
    assert inside == {
        "key": "simple-flag", "enabled": True, "variant": None, "value": True, "failed": False,
        "reason": {"code": "condition_match", "condition_index": 0,
                   "description": "Matched condition set 1"},
        "metadata": {"id": 1, "version": 3, "payload": '{"color": "blue"}', "description": "",
                     "has_experiment": False},
    }
    outside = _ask(flagged, http, "test-id-1")["flags"]["simple-flag"]
    assert outside["enabled"] is False
    assert outside["value"] is False
    assert outside["reason"]["code"] == "no_condition_match"
    assert outside["metadata"]["payload"] is None


def test_answer_envelope_and_aliases(flagged: DevServer, http: requests.Session) -> None:
    before = int(time.time() * 1000)
    answer = _ask(flagged, http, "some-distinct-id")
    assert set(answer) >= {"flags", "errorsWhileComputingFlags", "quotaLimited", "requestId",
                           "evaluatedAt"}
    assert answer["errorsWhileComputingFlags"] is False
    assert answer["quotaLimited"] == []
    assert re.fullmatch(r"[0-9a-f-]{36}", answer["requestId"])
    assert before <= answer["evaluatedAt"] <= int(time.time() * 1000)
    assert set(answer["flags"]) == {f["key"] for f in ALL["flags"]}
    body = {"api_key": "k", "distinct_id": "some-distinct-id"}
    for path, query in (("/flags", "?v=2"), ("/decide/", "?v=3"), ("/flags/", "")):
        response = _flags(flagged, http, body, query=query, path=path)
        assert response.status_code == 200, path
        assert response.json()["flags"]["simple-flag"]["enabled"] is True
    gz = http.post(flagged.url + "/flags/?v=4", data=gzip.compress(json.dumps(body).encode()),
                   headers={"Content-Encoding": "gzip"}, timeout=5)
    assert gz.json()["flags"]["simple-flag"]["enabled"] is True
    recorded = [(r["method"], r["path"], r["query"]) for r in flagged.requests]
    assert recorded[-1] == ("POST", "/flags/", "v=4")


@pytest.mark.parametrize(("distinct_id", "variant", "payload"), [
    ("test_id", "second-variant", '"second"'),
    ("distinct_id_1", "second-variant", '"second"'),
    ("some-distinct-id", "first-variant", '{"n": 1}'),
    ("user_123", "first-variant", '{"n": 1}'),
])
def test_multivariate_vectors_and_payloads(
    flagged: DevServer, http: requests.Session, distinct_id: str, variant: str, payload: str
) -> None:
    record = _ask(flagged, http, distinct_id)["flags"]["multivariate-flag"]
    assert record["enabled"] is True
    assert record["variant"] == record["value"] == variant
    assert record["metadata"]["payload"] == payload
    assert record["metadata"]["has_experiment"] is True


def test_person_property_flag(flagged: DevServer, http: requests.Session) -> None:
    def pro_only(**fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = _ask(flagged, http, "u", **fields)["flags"]["pro-only"]
        return record

    assert pro_only(person_properties={"plan": "PRO"})["enabled"] is True
    miss = pro_only(person_properties={"plan": "free"})
    assert miss["enabled"] is False
    assert miss["reason"] == {"code": "no_condition_match", "condition_index": None,
                              "description": "No matching condition set"}
    absent = pro_only()
    assert absent["enabled"] is False
    assert absent["failed"] is False
    assert absent["reason"]["code"] == "no_condition_match"
    assert "'plan' was not provided" in absent["reason"]["description"]
    assert "stores no person" in absent["reason"]["description"]


def test_unmatchable_without_posthogs_data_is_false_not_an_error(
    flagged: DevServer, http: requests.Session
) -> None:
    answer = _ask(flagged, http, "u")
    assert answer["errorsWhileComputingFlags"] is False
    record = answer["flags"]["static-cohort"]
    assert record["enabled"] is False
    assert record["failed"] is False
    assert "static cohorts" in record["reason"]["description"]


def test_group_flags(flagged: DevServer, http: requests.Session) -> None:
    def flags(**fields: Any) -> dict[str, Any]:
        found: dict[str, Any] = _ask(flagged, http, "u", **fields)["flags"]
        return found

    enterprise = flags(groups={"company": "acme"},
                       group_properties={"company": {"tier": "enterprise"}})
    assert enterprise["enterprise-companies"]["enabled"] is True
    small = flags(groups={"company": "acme"}, group_properties={"company": {"tier": "free"}})
    assert small["enterprise-companies"]["enabled"] is False
    no_group = flags()["enterprise-companies"]
    assert no_group["enabled"] is False
    assert no_group["reason"]["code"] == "no_group_type"

    # $group_key is injected into every passed group's properties, as the SDK does.
    assert flags(groups={"company": "acme"})["acme-people"]["enabled"] is True
    assert flags(groups={"company": "other"})["acme-people"]["enabled"] is False
    assert flags()["acme-people"]["enabled"] is False


def test_flag_keys_to_evaluate(flagged: DevServer, http: requests.Session) -> None:
    answer = _ask(flagged, http, "some-distinct-id",
                  flag_keys_to_evaluate=["simple-flag", "unknown", "simple-flag"])
    assert list(answer["flags"]) == ["simple-flag"]
    assert _ask(flagged, http, "u", flag_keys_to_evaluate=[])["flags"] == {}


def test_experience_continuity_and_inactive(flagged: DevServer, http: requests.Session) -> None:
    flags = _ask(flagged, http, "u")["flags"]
    assert flags["sticky"]["enabled"] is True
    assert flags["sticky"]["reason"]["code"] == "condition_match"
    assert flags["switched-off"]["enabled"] is False
    assert flags["switched-off"]["reason"]["code"] == "disabled"


def test_evaluation_exception_is_a_failed_flag(
    flagged: DevServer, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FlagDefinitions.evaluate

    def explode(self: FlagDefinitions, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == "pro-only":
            raise RuntimeError("boom")
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(FlagDefinitions, "evaluate", explode)
    answer = _ask(flagged, http, "some-distinct-id")
    assert answer["errorsWhileComputingFlags"] is True
    assert answer["flags"]["pro-only"]["failed"] is True
    assert answer["flags"]["pro-only"]["enabled"] is False
    assert answer["flags"]["simple-flag"]["enabled"] is True


@pytest.mark.parametrize(("body", "status"), [
    ({"distinct_id": "u"}, 401),
    ({"api_key": "", "distinct_id": "u"}, 401),
    ({"api_key": "k"}, 400),
    ({"api_key": "k", "distinct_id": "u", "groups": ["company"]}, 400),
    ({"api_key": "k", "distinct_id": "u", "person_properties": "x"}, 400),
    ({"api_key": "k", "distinct_id": "u", "group_properties": {"company": 1}}, 400),
    ({"api_key": "k", "distinct_id": "u", "flag_keys_to_evaluate": "simple-flag"}, 400),
    (["api_key"], 400),
])
def test_bad_requests(flagged: DevServer, http: requests.Session, body: Any,
                      status: int) -> None:
    response = _flags(flagged, http, body)
    assert response.status_code == status
    assert response.json()["type"] == (
        "authentication_error" if status == 401 else "validation_error"
    )


def test_bad_json_is_400(flagged: DevServer, http: requests.Session) -> None:
    for data in (b"{not json", b""):
        response = http.post(flagged.url + "/flags/?v=4", data=data, timeout=5)
        assert response.status_code == 400
        assert "Malformed request data" in response.json()["detail"]
    assert [r["status"] for r in flagged.requests] == [400, 400]


# -- the flags file ----------------------------------------------------------------------


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def test_file_is_reread_when_it_changes(tmp_path: Path, http: requests.Session) -> None:
    path = tmp_path / "flags.json"
    off = {**SIMPLE, "filters": {"groups": [{"properties": [], "rollout_percentage": 0}]}}
    _write(path, [off])  # a bare list: no group types, no cohorts
    with DevServer(flags_path=path) as server:
        assert server.flags_path == str(path)
        assert _ask(server, http, "test-id-1")["flags"]["simple-flag"]["enabled"] is False

        full = {**SIMPLE, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}
        _write(path, _definitions(full, MULTIVARIATE))
        flags = _ask(server, http, "test-id-1")["flags"]
        assert flags["simple-flag"]["enabled"] is True
        assert flags["multivariate-flag"]["enabled"] is True

        replacement = tmp_path / "flags.json.tmp"  # an editor's atomic save
        _write(replacement, [PERSON])
        os.replace(replacement, path)
        assert list(_ask(server, http, "u")["flags"]) == ["pro-only"]

        path.unlink()
        assert _ask(server, http, "u")["flags"] == {}
        _write(path, [SIMPLE])
        assert list(_ask(server, http, "u")["flags"]) == ["simple-flag"]


def test_broken_file_keeps_previous_definitions(
    tmp_path: Path, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "flags.json"
    _write(path, ALL)
    with DevServer(flags_path=path) as server:
        etag = http.get(server.url + DEFINITIONS, headers=AUTH, timeout=5).headers["ETag"]
        with caplog.at_level(logging.ERROR, logger="posthog_integrations.devserver"):
            path.write_text('{"flags": [')  # half-written
            response = http.get(server.url + DEFINITIONS, headers=AUTH, timeout=5)
            assert response.json() == ALL
            assert response.headers["ETag"] == etag
            assert _ask(server, http, "some-distinct-id")["flags"]["simple-flag"]["enabled"]
            path.write_text('{"flags": "not a list"}')
            assert server.flag_definitions == ALL
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2  # once per broken version, not once per request
        assert all(str(path) in e and "keeping the previous" in e for e in errors)

        _write(path, [SIMPLE])
        assert server.flag_definitions["flags"] == [SIMPLE]


def test_set_flags_wins_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    _write(path, [SIMPLE])
    server = DevServer(flags_path=path)  # flags work before start() too
    server.set_flags([PERSON])
    assert server.flag_definitions["flags"] == [PERSON]
    _write(path, [SIMPLE, MULTIVARIATE])
    assert [f["key"] for f in server.flag_definitions["flags"]] == [
        "simple-flag", "multivariate-flag"
    ]


def test_missing_file_means_no_flags(tmp_path: Path, http: requests.Session) -> None:
    with DevServer(flags_path=tmp_path / "absent.json") as server:
        assert _ask(server, http, "u")["flags"] == {}


# -- remote config and the read API ------------------------------------------------------


def test_remote_config(flagged: DevServer, http: requests.Session) -> None:
    def config(key: str) -> requests.Response:
        return http.get(
            f"{flagged.url}/api/projects/@current/feature_flags/{key}/remote_config?token=t",
            headers=AUTH, timeout=5,
        )

    assert config("simple-flag").json() == {"color": "blue"}
    flagged.set_flags([{"key": "a/b c", "active": True,
                        "filters": {"payloads": {"true": "not json"}}},
                       {"key": "raw", "active": True, "filters": {"payloads": {"true": [1]}}}])
    assert config("a%2Fb%20c").json() == "not json"
    assert config("raw").json() == [1]
    flagged.set_flags(ALL)
    for missing in ("nope", "pro-only"):
        response = config(missing)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert flagged.requests[-1]["path"].endswith("/pro-only/remote_config")


def test_read_api(flagged: DevServer, http: requests.Session) -> None:
    assert http.get(flagged.url + "/api/flags", timeout=5).json() == {"definitions": ALL}
    response = http.post(flagged.url + "/api/flags/evaluate", timeout=5, json={
        "distinct_id": "some-distinct-id", "person_properties": {"plan": "pro"},
        "groups": {"company": "acme"}, "group_properties": {"company": {"tier": "free"}},
    })
    results = response.json()["results"]
    assert set(results) == {f["key"] for f in ALL["flags"]}
    assert results["simple-flag"] == {"value": True, "payload": '{"color": "blue"}',
                                      "condition_index": 0,
                                      "reason": "Matched condition set 1", "inconclusive": None}
    assert results["pro-only"]["value"] is True
    assert results["enterprise-companies"]["value"] is False
    assert results["acme-people"]["value"] is True
    # The raw local evaluation shows why the SDK would ask PostHog.
    assert results["sticky"]["value"] is None
    assert results["sticky"]["inconclusive"] == "experience_continuity"
    assert results["static-cohort"]["inconclusive"] == "unsupported_definition"
    plain = http.post(flagged.url + "/api/flags/evaluate", json={"distinct_id": "u"}, timeout=5)
    assert plain.json()["results"]["pro-only"]["inconclusive"] == "missing_context"
    assert http.post(flagged.url + "/api/flags/evaluate", json={}, timeout=5).status_code == 400
    assert flagged.requests == []  # the read API is not recorded


# -- the SDK against the dev server ------------------------------------------------------


def test_sdk_evaluates_locally_from_the_dev_server(flagged: DevServer) -> None:
    client = posthog.Client("phc_x", host=flagged.url, secret_key="phs_x")
    try:
        result = client.get_feature_flag_result("simple-flag", "some-distinct-id")
        assert result is not None
        assert result.get_value() is True
        assert result.payload == {"color": "blue"}
        [definitions] = flagged.requests
        assert (definitions["method"], definitions["path"]) == ("GET", "/flags/definitions")
        assert definitions["query"] == "token=phc_x&send_cohorts"
        assert definitions["headers"]["authorization"] == "Bearer phs_x"

        sticky = client.get_feature_flag_result("sticky", "u")
        assert sticky is not None
        assert sticky.get_value() is True
        posts = [r for r in flagged.requests if r["method"] == "POST"]
        assert [(r["path"], r["query"]) for r in posts] == [("/flags/", "v=4")]

        missing = client.get_feature_flag_result("pro-only", "u")  # inconclusive locally
        assert missing is not None
        assert missing.get_value() is False
        assert missing.reason is not None and "'plan' was not provided" in missing.reason

        assert client.get_remote_config_payload("simple-flag") == {"color": "blue"}
    finally:
        client.shutdown()
    called = flagged.wait_for_events(3, "$feature_flag_called")
    local = {e["properties"]["$feature_flag"]: e["properties"]["locally_evaluated"]
             for e in called}
    assert local == {"simple-flag": True, "sticky": False, "pro-only": False}


def test_cli_serves_a_flags_file(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    _write(path, ALL)
    env = {**os.environ, "POSTHOG_DEVSERVER_FLAGS": str(path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthog_integrations.devserver", "--port", "0",
         "--db", str(tmp_path / "events.sqlite3")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"flags: {path}" in banner
        match = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert match is not None, banner
        response = requests.get(match.group(0) + DEFINITIONS, headers=AUTH, timeout=5)
        assert response.json() == ALL
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
