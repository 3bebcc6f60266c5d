"""schemathesis hooks: what schemathesis cannot know about POST /send and POST /messages.

openapi.yaml describes them in words (src/http/routes/schema/); here generated bodies that break one
of them are left out, so that schemathesis does not report the relay for refusing them. So is a
template body by name: it is only for a template declared in the callers file, and the relay under
test declares only the one of the document's example (tests/api/templates.rs checks the rest). Nothing else is filtered: every other rule is
in the schema and checked both ways.

One rule the document states only in words: a known field set to `null` counts as absent (the
contract's "Validation" section; clients generated from the document send `null` for unset
fields). The schema leaves `null` out of the optional fields' types, because a type `[T, 'null']`
on an optional field makes generators emit `Option<Option<T>>` (Rust) or `NullableString` (Go). So
a body made "invalid" only by such a `null` is one the relay rightly accepts: a negative body that,
with its `null` fields removed, is valid under the schema is left out. A `null` in a required field
still makes the body invalid once removed, so that refusal is still checked.

And each generated request gets an Idempotency-Key of its own: schemathesis assumes requests are
independent, but two different bodies under one key are rightly refused (422
idempotency_key_reused). Invalid keys are left as generated, so the relay still meets them.
"""

import datetime
import pathlib
import re
import uuid

import jsonschema
import referencing
import schemathesis
import yaml
from schemathesis.core.parameters import ParameterLocation

VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# The one template the relay under test declares (tests/external/run.sh).
DECLARED_TEMPLATE = "delivery_slot"

_DOCUMENT = yaml.safe_load((pathlib.Path(__file__).parents[2] / "openapi.yaml").read_text(encoding="utf-8"))
_REGISTRY = referencing.Registry().with_resource(
    "urn:openapi", referencing.Resource.from_contents(_DOCUMENT, referencing.jsonschema.DRAFT202012)
)
# The body schema of each operation that takes a message.
_MESSAGE_SCHEMAS = {
    path: jsonschema.Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{name}"}, registry=_REGISTRY)
    for path, name in (("/send", "SendRequest"), ("/messages", "QueueRequest"))
}
# POST /messages: `send_at` at most 35 days ahead, `valid_until` later than it and than now.
MAX_AHEAD = datetime.timedelta(days=35)


def _without_nulls(value):
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _valid_once_nulls_are_absent(case) -> bool:
    schema = _MESSAGE_SCHEMAS.get(case.operation.path)
    if schema is None or not case.meta or not case.meta.is_negative_at(ParameterLocation.BODY):
        return False
    body = case.body
    stripped = _without_nulls(body)
    return stripped != body and schema.is_valid(stripped)


def _time(value):
    """An RFC 3339 time as an aware datetime, or None when Python cannot read it (a leap second)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def _breaks_a_time_rule(case) -> bool:
    """POST /messages: a `send_at` more than 35 days ahead, or a `valid_until` not later than it
    and than now, is refused rightly: JSON Schema cannot say "after now"."""
    body = case.body
    if case.operation.path != "/messages" or not isinstance(body, dict):
        return False
    # A body meant to be invalid is refused anyway: its times need not be judged.
    if case.meta and case.meta.is_negative_at(ParameterLocation.BODY):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    times = {}
    for field in ("send_at", "valid_until"):
        if body.get(field) is None:
            continue
        at = _time(body[field])
        # A schema-valid time Python cannot read is left out rather than judged.
        if at is None:
            return True
        times[field] = at
    send_at = times.get("send_at")
    if send_at is not None and send_at > now + MAX_AHEAD - datetime.timedelta(minutes=1):
        return True
    until = times.get("valid_until")
    if until is not None and until <= max(now, send_at or now) + datetime.timedelta(minutes=1):
        return True
    return False


def _breaks_a_cross_field_rule(body) -> bool:
    template = body.get("template") if isinstance(body, dict) else None
    if isinstance(template, dict):
        named = template.get("body")
        # A body by name is for a template declared in the callers file. The relay under test
        # declares one, for the document's named-body example (tests/external/run.sh); any other
        # body by name, or that template's name with parts that do not fit it, is refused, rightly.
        if template.get("name") == DECLARED_TEMPLATE:
            return not (
                template.get("language") == "en"
                and isinstance(named, dict)
                and set(named) == {"name", "order", "day"}
                and not any(key in template for key in ("header", "buttons", "components"))
            )
        if isinstance(named, dict):
            return True
    interactive = body.get("interactive") if isinstance(body, dict) else None
    if not isinstance(interactive, dict):
        return False
    header = interactive.get("header")
    if isinstance(header, dict) and header.get("type") == "text":
        text = header.get("text")
        # A text header holds 1 to 60 characters.
        if not (isinstance(text, str) and 1 <= len(text) <= 60):
            return True
    action = interactive.get("action")
    if not isinstance(action, dict):
        return False
    buttons = action.get("buttons")
    if isinstance(buttons, list):
        ids = [b["reply"].get("id") for b in buttons if isinstance(b, dict) and isinstance(b.get("reply"), dict)]
        # Button ids are unique.
        if len(ids) != len(set(map(str, ids))):
            return True
    sections = action.get("sections")
    if isinstance(sections, list):
        sections = [s for s in sections if isinstance(s, dict)]
        rows = sum(len(s["rows"]) for s in sections if isinstance(s.get("rows"), list))
        # 1 to 10 rows in all; every section has a title when there are several.
        if not 1 <= rows <= 10:
            return True
        if len(sections) > 1 and not all(isinstance(s.get("title"), str) and s["title"] for s in sections):
            return True
    return False


@schemathesis.hook
def filter_case(ctx, case):
    # filter_case, not filter_body: it is the one the coverage phase applies too.
    return (
        not _breaks_a_cross_field_rule(case.body)
        and not _breaks_a_time_rule(case)
        and not _valid_once_nulls_are_absent(case)
    )


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # Runs before every request, in every phase (map_headers does not reach the coverage phase).
    for headers in (kwargs.get("headers"), case.headers):
        key = (headers or {}).get("Idempotency-Key")
        if isinstance(key, str) and VALID_KEY.match(key):
            headers["Idempotency-Key"] = f"schemathesis-{uuid.uuid4()}"
