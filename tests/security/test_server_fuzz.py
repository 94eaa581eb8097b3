"""Fuzz `openglm serve` from its own OpenAPI schema with schemathesis: no 5xx and no hang, whatever
the body. A real uvicorn server on 127.0.0.1, a small random-weight model with a short context (so
that every generation, however many tokens a case asks for, ends quickly)."""

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from live_server import KEY, running, small_model
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

EXAMPLES = 100  # per operation and mode (valid, invalid): about half a minute on 2 cores


@pytest.fixture(scope="module")
def fuzzed_schema():
    from openglm.serve import create_app

    with running(create_app(*small_model(96), name="fuzz", max_tokens=8, api_key=KEY)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})


def test_no_input_makes_the_server_fail_or_hang(fuzzed_schema):
    operations = [result.ok() for result in fuzzed_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/health"}
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for operation, mode in itertools.product(operations, modes):
        if mode is GenerationMode.NEGATIVE and operation.method.lower() != "post":
            continue  # a GET without parameters has no invalid form

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
            assert response.status_code < 500, (case.path, response.status_code, response.text[:300])

        call()
