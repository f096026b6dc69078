"""OpenAPI fragments for the ingest endpoint, generated from the msgspec types that enforce it."""
from apps.ingestion.schema import event_batch_json_schema

_batch = event_batch_json_schema()

# drf-spectacular takes raw JSON Schema dicts; the event types are inlined so the document is
# self-contained (their $refs point into the generated components).
INGEST_REQUEST_SCHEMA = {
    **_batch["components"]["EventBatchDocument"],
    "properties": {
        "events": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "oneOf": [_batch["components"]["UsageEvent"], _batch["components"]["ThrottleEvent"]],
                "discriminator": {"propertyName": "type"},
            },
        }
    },
}

INGEST_RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer", "description": "Events stored by this request."},
        "duplicates": {"type": "integer", "description": "Events whose event_id was already stored."},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer", "description": "Position of the event in the batch, from 0."},
                    "event_id": {"type": ["string", "null"], "description": "Its event_id, when one could be read."},
                    "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                },
                "required": ["index", "event_id", "errors"],
            },
        },
    },
    "required": ["accepted", "duplicates", "rejected"],
}
