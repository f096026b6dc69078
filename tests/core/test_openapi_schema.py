"""What /api/schema/ says matches what the API does (issue 12, item 8)."""
from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.core.errors import ApplicationError, ErrorCode
from tests.conftest import post_events, throttle_event, usage_event
from tests.dashboards.conftest import ingest

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("post", "/api/v1/events"): "events_ingest",
    ("get", "/api/v1/sessions"): "sessions_list",
    ("get", "/api/v1/sessions/{session_id}/metadata"): "session_metadata",
    ("get", "/api/v1/usage"): "usage",
    ("post", "/api/v1/tokenize"): "tokenize",
    ("get", "/api/v1/budgets"): "budgets_list",
}


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def operation(schema: dict, method: str, path: str) -> dict:
    return schema["paths"][path][method]


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def reply_schema(schema: dict, method: str, path: str, status: str) -> dict:
    content = operation(schema, method, path)["responses"][status]["content"]
    return resolve(schema, content["application/json"]["schema"])


def test_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", validate=True, fail_on_warn=True, file=str(tmp_path / "schema.yaml"))


def test_every_operation_is_in_the_schema(schema):
    documented = {
        (method, path): op["operationId"] for path, ops in schema["paths"].items() for method, op in ops.items()
    }
    assert documented == OPERATIONS


def test_session_list_is_documented_as_the_paginated_object_it_returns(schema, api_client, ingest_key, read_key):
    post_events(api_client, ingest_key, [usage_event()])
    page = reply_schema(schema, "get", "/api/v1/sessions", "200")
    assert page["type"] == "object"
    assert set(page["required"]) == {"count", "next", "previous", "results"}
    assert page["properties"]["results"]["type"] == "array"
    item = resolve(schema, page["properties"]["results"]["items"])
    assert {"session_id", "total_tokens", "cost_usd", "burst_tokens_per_second"} <= set(item["properties"])
    body = api_client.get("/api/v1/sessions", HTTP_AUTHORIZATION=f"Bearer {read_key}").json()
    assert set(body) == set(page["properties"])
    parameters = {p["name"]: p for p in operation(schema, "get", "/api/v1/sessions")["parameters"]}
    assert {"from", "to", "step", "model", "search", "page", "page_size"} <= set(parameters)
    assert parameters["page_size"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}


def test_tokenize_reply_has_its_own_schema(schema):
    reply = reply_schema(schema, "post", "/api/v1/tokenize", "200")
    assert set(reply["properties"]) == {"tokens", "tokenizer"}
    ref = operation(schema, "post", "/api/v1/tokenize")["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/TokenCount"}
    names = list(schema["components"]["schemas"])
    assert "Output" not in names and len(names) == len(set(names))


def test_tokenize_request_takes_exactly_one_of_text_and_messages(schema):
    body = operation(schema, "post", "/api/v1/tokenize")["requestBody"]
    assert body["required"] is True
    request = resolve(schema, body["content"]["application/json"]["schema"])
    assert request["required"] == ["model"]
    assert [branch["required"] for branch in request["oneOf"]] == [["text"], ["messages"]]


@pytest.mark.parametrize(("method", "path"), list(OPERATIONS))
def test_every_operation_documents_its_errors(schema, method, path):
    responses = operation(schema, method, path)["responses"]
    expected = {"400", "401", "403", "429", "503"}
    if method == "post":
        expected |= {"413", "415"}
    if path.startswith("/api/v1/sessions"):
        expected |= {"404"}
    assert expected <= set(responses)
    for status in expected:
        error = reply_schema(schema, method, path, status)
        assert error["required"] == ["error"]
        assert set(resolve(schema, error["properties"]["error"])["required"]) == {"code", "message"}


@pytest.mark.parametrize(("method", "path"), list(OPERATIONS))
def test_every_operation_requires_the_api_key_as_a_bearer_token(schema, method, path):
    assert schema["components"]["securitySchemes"]["ApiKey"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert operation(schema, method, path)["security"] == [{"ApiKey": []}]


def test_events_body_is_required(schema):
    body = operation(schema, "post", "/api/v1/events")["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"]["required"] == ["events"]


def test_a_documented_error_is_what_the_api_sends(api_client, read_key):
    response = api_client.get("/api/v1/sessions", {"page_size": "0"}, HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"page_size": ["Ensure this value is greater than or equal to 1."]}
    response = api_client.post("/api/v1/tokenize", {"model": 0, "text": "hi"}, format="json",
                               HTTP_AUTHORIZATION=f"Bearer {read_key}")  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"model": ["Not a valid string."]}


def test_error_code_is_documented_as_the_enum_of_every_code(schema):
    assert resolve(schema, {"$ref": "#/components/schemas/ErrorCode"})["enum"] == [code.value for code in ErrorCode]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert detail["properties"]["code"]["allOf"] == [{"$ref": "#/components/schemas/ErrorCode"}]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("get", "/api/v1/sessions", None, {}, 401, ErrorCode.UNAUTHORIZED),
        ("get", "/api/v1/sessions", None, {"HTTP_AUTHORIZATION": "Basic x"}, 401,
         ErrorCode.INVALID_AUTHORIZATION_HEADER),
        ("get", "/api/v1/sessions", None, {"HTTP_AUTHORIZATION": "Bearer nope"}, 401, ErrorCode.INVALID_API_KEY),
        ("get", "/api/v1/sessions/missing/metadata", None, "read", 404, ErrorCode.SESSION_NOT_FOUND),
        ("get", "/api/v1/sessions/%00/metadata", None, "read", 400, ErrorCode.MALFORMED_URL),
        ("get", "/api/v1/usage?group_by=week", None, "read", 400, ErrorCode.INVALID),
        ("post", "/api/v1/events", b"{", "ingest", 400, ErrorCode.MALFORMED_JSON),
        ("post", "/api/v1/events", b'{"events": []}', "ingest", 400, ErrorCode.INVALID_BATCH_SIZE),
        ("post", "/api/v1/events", b"{}", "read", 403, ErrorCode.INSUFFICIENT_SCOPE),
        ("delete", "/api/v1/events", None, "ingest", 405, ErrorCode.METHOD_NOT_ALLOWED),
        ("get", "/api/v1/nothing-here", None, {}, 404, ErrorCode.NOT_FOUND),
    ],
)  # fmt: skip
def test_an_error_reply_carries_a_member_of_the_error_code_enum(api_client, ingest_key, read_key, method, path, body,
                                                                headers, status, code):  # fmt: skip
    if isinstance(headers, str):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {ingest_key if headers == 'ingest' else read_key}"}
    response = api_client.generic(method.upper(), path, body or b"", content_type="application/json", **headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert ErrorCode(response.json()["error"]["code"]) is code


def assert_fully_typed(schema: dict, node: dict, reply, where: str = "reply") -> None:
    """Every object in the reply is described property by property (no free-form object), every
    documented property it must have is there, and it has no key the schema does not name."""
    node = resolve(schema, node)
    if "oneOf" in node:  # a nullable object: the object's schema or null
        branches = [b for b in node["oneOf"] if b.get("type") != "null"]
        assert len(branches) == 1, where
        if reply is not None:
            assert_fully_typed(schema, branches[0], reply, where)
        return
    if "allOf" in node:
        node = resolve(schema, node["allOf"][0])
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        assert node.get("properties"), f"{where} is a free-form object"
        assert "additionalProperties" not in node, f"{where} is a free-form object"
        assert set(node["required"]) <= set(reply), where
        assert set(reply) <= set(node["properties"]), f"{where} has keys the schema does not name"
        for key, value in reply.items():
            assert_fully_typed(schema, node["properties"][key], value, f"{where}.{key}")
    elif kind == "array":
        assert "items" in node, where
        for index, item in enumerate(reply):
            assert_fully_typed(schema, node["items"], item, f"{where}[{index}]")
    else:
        assert kind or "enum" in node, f"{where} has no type"


def test_session_metadata_reply_is_fully_typed(schema, api_client, project, read_key):
    ingest(project, [usage_event(attributes={"user": "ada", "source": "claude-code"}), throttle_event()])
    body = api_client.get("/api/v1/sessions/session-1/metadata", HTTP_AUTHORIZATION=f"Bearer {read_key}").json()
    document = reply_schema(schema, "get", "/api/v1/sessions/{session_id}/metadata", "200")
    assert set(document["required"]) == set(body) == set(document["properties"])
    assert body["developer"] == "ada" and body["source"] == {"name": "claude-code", "version": None}
    assert_fully_typed(schema, document, body)
    assert resolve(schema, document["properties"]["bursts"])["required"] == ["10s", "1s", "60s"]


@pytest.mark.parametrize("group_by", ["model", "step", "user", "day", "hour"])
def test_usage_reply_is_fully_typed(schema, api_client, project, read_key, group_by):
    ingest(project, [usage_event(), throttle_event()])
    body = api_client.get("/api/v1/usage", {"group_by": group_by}, HTTP_AUTHORIZATION=f"Bearer {read_key}").json()
    usage = reply_schema(schema, "get", "/api/v1/usage", "200")
    assert set(usage["required"]) == {"group_by", "results"}
    assert body["results"]
    assert_fully_typed(schema, usage, body)


def test_every_application_error_takes_its_default_code_from_the_enum():
    pending, classes = [ApplicationError], []
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    assert len(classes) > 10
    wrong = [cls for cls in classes if not isinstance(cls.code, ErrorCode)]
    assert not wrong, wrong


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_schema_answers_other_methods_with_a_405_in_its_own_format(api_client, method):
    # The default renderer is YAML, which could not write the error code's enum: these were 500s.
    response = getattr(api_client, method)("/api/schema/")
    assert response.status_code == 405
    assert b"method_not_allowed" in response.content


def test_schema_in_an_unknown_format_is_a_404(api_client):
    response = api_client.get("/api/schema/?format=csv")
    assert response.status_code == 404
    assert b"not_found" in response.content


@pytest.mark.parametrize("method", ["options", "post", "delete"])
def test_api_docs_page_answers_other_methods_than_get_with_a_405(client, method):
    # OPTIONS was answered with DRF's metadata through the page's template renderer: a 500.
    response = getattr(client, method)("/api/docs/")
    assert response.status_code == 405
