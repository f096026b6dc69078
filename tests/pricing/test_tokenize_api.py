"""POST /api/v1/tokenize: the count-before-the-call of F-063."""
import pytest

from apps.pricing.counting import count_tokens

pytestmark = pytest.mark.django_db


def tokenize(client, key, payload):
    return client.post("/api/v1/tokenize", payload, format="json", HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.parametrize("key_fixture", ["ingest_key", "read_key"])
def test_tokenize_text_with_either_key(api_client, request, key_fixture):
    key = request.getfixturevalue(key_fixture)
    response = tokenize(api_client, key, {"model": "gpt-4o", "text": "Hello, world! How are you today?"})
    assert response.status_code == 200
    expected = count_tokens("gpt-4o", text="Hello, world! How are you today?")
    assert response.json() == {"tokens": expected.tokens, "tokenizer": expected.tokenizer}
    assert response.json()["tokenizer"] == "tiktoken:o200k_base"


def test_tokenize_messages(api_client, ingest_key):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise the report."}]
    response = tokenize(api_client, ingest_key, {"model": "gpt-4o-mini", "messages": messages})
    assert response.status_code == 200
    assert response.json()["tokens"] == count_tokens("gpt-4o-mini", messages=messages).tokens > 10


@pytest.mark.parametrize(
    "payload",
    [{"model": "gpt-4o"}, {"text": "hi"}, {"model": "gpt-4o", "text": "a", "messages": []}, {"model": "x" * 201, "text": "a"},
     {"model": "gpt-4o", "messages": "not a list"}, {"model": "gpt-4o", "messages": [1, 2]}],
)  # fmt: skip
def test_bad_tokenize_requests_are_400(api_client, ingest_key, payload):
    response = tokenize(api_client, ingest_key, payload)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_tokenize_without_key_is_401_and_oversized_is_413(api_client, ingest_key):
    assert api_client.post("/api/v1/tokenize", {"model": "gpt-4o", "text": "a"}, format="json").status_code == 401
    response = tokenize(api_client, ingest_key, {"model": "gpt-4o", "text": "a" * (1024 * 1024 + 10)})
    assert response.status_code == 413


def test_tokenize_malformed_json_is_400(api_client, ingest_key):
    response = api_client.generic("POST", "/api/v1/tokenize", b"{nope", content_type="application/json",
                                  HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
