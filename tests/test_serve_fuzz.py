"""schemathesis fuzzes ``nnmark serve``'s app from its own OpenAPI schema: no answer is a 5xx, and
every status is one the schema documents.

In-process (ASGI, no socket), a freshly initialised digit-cnn, a bounded number of examples per
operation. The app is built when the module is collected (schemathesis reads its schema then):
a run folder in a temporary directory, removed at exit.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path
from typing import Any

import pytest

from test_http import NAME, make_run

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

from nnmark.serve import create_app  # noqa: E402

EXAMPLES = 8  # per operation and phase

_folder = tempfile.TemporaryDirectory(prefix="nnmark-fuzz-")
atexit.register(_folder.cleanup)
app = create_app(make_run(Path(_folder.name) / NAME), name=NAME, max_batch=8, max_body_bytes=2**16)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors_and_only_documented_statuses(case: Any) -> None:
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = NAME  # the served model: reach past the 404
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
