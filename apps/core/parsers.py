"""A JSON parser with a body size limit that answers 413 instead of Django's generic 400."""
from rest_framework.parsers import JSONParser

from apps.core.errors import PayloadTooLarge

MAX_JSON_BODY_BYTES = 1024 * 1024


class LimitedJSONParser(JSONParser):
    max_bytes = MAX_JSON_BODY_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {self.max_bytes} bytes.")
        return super().parse(stream, media_type, parser_context)
