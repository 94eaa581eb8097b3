"""Real uvicorn servers on 127.0.0.1 for the server tests, and a small random-weight model that rarely
emits a stop token, so a generation runs as long as it is allowed to."""

import contextlib
import socket
import threading
import time

import torch
import uvicorn

KEY = "sk-test-key-4d2c"


@contextlib.contextmanager
def running(app):
    """`app` in a real uvicorn server on a free port of 127.0.0.1 -> its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def small_model(max_seq_len: int):
    from openglm.model import GLM, GLMConfig
    from openglm.tokenizer import default_tokenizer

    torch.manual_seed(0)
    return GLM(GLMConfig.from_preset("nano", max_seq_len=max_seq_len)).eval(), default_tokenizer()


