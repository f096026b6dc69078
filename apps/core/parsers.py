"""JSON request bodies: UTF-8 only, bounded in size and nesting, every failure a 4xx."""
import io

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from apps.core.errors import BadRequest, ErrorCode, PayloadTooLarge

MAX_JSON_BODY_BYTES = 1024 * 1024
_UTF8_NAMES = frozenset({"utf-8", "utf8"})


def json_charset_check(content_type: str) -> None:
    """Refuse a JSON body that declares a charset other than UTF-8 (400 `unsupported_charset`).

    JSON exchanged between systems is UTF-8 (RFC 8259, section 8.1). Decoding a declared
    latin-1 or UTF-16 body would accept text that no other client of the API could send, and
    guessing would store mojibake, so the declaration itself is the client's error.
    """
    if ";" not in content_type:
        return
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        name = name.strip().lower()
        if name not in ("charset", "charset*"):
            continue
        charset = value.strip().strip('"').lower()
        if name == "charset*" or charset not in _UTF8_NAMES:
            raise BadRequest(
                f"JSON bodies must be UTF-8 (RFC 8259); this one declares charset {value.strip()!r}. "
                "Send UTF-8 and declare charset=utf-8 or no charset.",
                code=ErrorCode.UNSUPPORTED_CHARSET,
            )


def utf8_error_message(data: bytes, exc: UnicodeDecodeError) -> str:
    return f"The body is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); JSON must be UTF-8."


class LimitedJSONParser(JSONParser):
    """DRF's JSON parser with a 413 size limit, a UTF-8 check and a 400 for nesting too deep to parse."""

    max_bytes = MAX_JSON_BODY_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {self.max_bytes} bytes.")
        json_charset_check(media_type or "")
        data = stream.read(self.max_bytes + 1) if stream is not None else b""
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"The body is over the limit of {self.max_bytes} bytes.")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(utf8_error_message(data, exc), code=ErrorCode.MALFORMED_JSON) from None
        try:
            return super().parse(io.BytesIO(data), media_type, {**(parser_context or {}), "encoding": "utf-8"})
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
