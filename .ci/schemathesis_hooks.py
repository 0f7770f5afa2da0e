"""schemathesis hooks for .ci/contract.sh (loaded through SCHEMATHESIS_HOOKS).

A policy version's body is a zip (`application/zip`), which schemathesis has no serializer for: it is sent
as the raw bytes schemathesis generates for a binary body, as for `application/octet-stream`.

schemathesis 4.32.5 now and then sends, as a schema-valid request, a path parameter that the parameter's own
pattern refuses (seen: an enrollment id holding U+FFFD, which no enrollment id pattern admits). The server's
400 is then the right answer, not a contract break. This hook drops exactly that failure: a "schema-valid
request rejected" whose case has a path parameter outside its declared pattern. Every other failure stands.
"""

import re
from urllib.parse import unquote

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData


def _declared_patterns(operation):
    """Path parameter name -> its schema's pattern, as the served document declares them."""
    paths = operation.schema.raw_schema.get("paths", {})
    item = paths.get(operation.path, {})
    parameters = list(item.get("parameters", [])) + list(item.get(operation.method.lower(), {}).get("parameters", []))
    return {
        p["name"]: p["schema"]["pattern"]
        for p in parameters
        if p.get("in") == "path" and "pattern" in p.get("schema", {})
    }


def _admits(pattern, value):
    """Whether the pattern admits the value as the server reads it: percent-decoded, as UTF-8."""
    if not isinstance(value, str):
        return False
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        return False
    return re.search(pattern, decoded) is not None


def outside_pattern(operation, path_parameters):
    """The names of the path parameters (as sent, percent-encoded) whose value the declared pattern refuses."""
    patterns = _declared_patterns(operation)
    return [
        name
        for name, value in (path_parameters or {}).items()
        if name in patterns and not _admits(patterns[name], value)
    ]


schemathesis.serializer.alias("application/zip", "application/octet-stream")


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if isinstance(failure, RejectedPositiveData) and outside_pattern(case.operation, case.path_parameters):
        return False
    return True
