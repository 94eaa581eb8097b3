"""Fixtures of the server attack tests."""

import pytest
from live_server import KEY, running, small_model


@pytest.fixture(scope="module")
def server_url():
    """The server with an API key; the model's context is long enough for multi-second generations."""
    from openglm.serve import create_app

    with running(create_app(*small_model(2048), name="small", max_tokens=16, api_key=KEY)) as url:
        yield url
