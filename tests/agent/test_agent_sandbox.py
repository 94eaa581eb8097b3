"""The python tool's sandbox: each escape or abuse fails inside the kernel, and the agent keeps going."""

import httpx
import pytest

from openglm.agent import Agent, FinalEvent, Limits, ObservationEvent, ReplayBackend
from openglm.agent.tools import PythonTool, SandboxLimits
from openglm.agent.tools.sandbox import kernel_command


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("OPENGLM_API_KEY", "sk-test-secret-value")


def test_every_abuse_becomes_an_error_observation_and_the_kernel_survives(tmp_path, http_server, secret_env):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    outside = tmp_path / "outside.txt"
    cells = {
        "read outside": f"print(open({str(secret)!r}).read())",
        "read /etc": "print(open('/etc/passwd').read())",
        "write outside": f"open({str(outside)!r}, 'w').write('x')",
        "write system": "open('/usr/lib/evil.txt', 'w').write('x')",
        "socket loopback": f"import socket\nsocket.create_connection(('127.0.0.1', {http_server.port}), timeout=2)",
        "socket internet": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "8 GB": "x = bytearray(8 * 1024 ** 3)",
        "endless loop": "while True:\n    pass",
        "100 MB": "print('x' * 100_000_000)",
        "fill /tmp": "open('/tmp/big', 'wb').write(b'0' * (16 << 20))",
    }
    expected = {
        "read outside": "FileNotFoundError", "read /etc": "FileNotFoundError", "write outside": "FileNotFoundError",
        "write system": "Read-only file system",
        # an empty network namespace: its own loopback is down, no route anywhere
        "socket loopback": "ConnectionRefusedError", "socket internet": "Network is unreachable",
        "fork bomb": "BlockingIOError", "8 GB": "MemoryError", "endless loop": "timed out after 3 s",
        "100 MB": "output limit exceeded", "fill /tmp": "No space left on device",
    }
    script = [f"python\n{code}" for code in cells.values()]
    script += ["python\nimport os\nprint(6 * 7, sorted(k for k in os.environ if 'KEY' in k))", "\nAll done."]
    limits = SandboxLimits(timeout_s=3, output_stop_bytes=1_000_000, tmp_bytes=8 << 20)
    agent = Agent(ReplayBackend(script), [PythonTool(tmp_path / "data", limits=limits)], limits=Limits(max_steps=20))
    try:
        events = list(agent.run("try to break out"))
    finally:
        agent.close()

    observations = [e for e in events if isinstance(e, ObservationEvent)]
    assert len(observations) == len(cells) + 1
    for (label, obs) in zip(cells, observations):
        assert obs.is_error, f"{label}: {obs.content}"
        assert expected[label] in obs.content, f"{label}: {obs.content[-600:]}"
    assert "top secret" not in observations[0].content
    assert not outside.exists() and not (tmp_path / "data" / "evil.txt").exists()
    assert not http_server.requests  # nothing reached the host's loopback server
    assert len(observations[9].content) < 50_000  # the 100 MB were not passed on
    last = observations[-1]
    assert not last.is_error and last.content == "42 []"  # alive, and no API key leaked into the kernel
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.reason == "answer" and final.content == "All done."


def test_kernel_command_jails_the_kernel(tmp_path):
    """The jail's shape: no network, own PID namespace, read-only root, only the working dir writable."""
    cmd = kernel_command(tmp_path / "w", tmp_path / "rt", tmp_path / "rt" / "k.json", SandboxLimits())
    assert cmd[0].endswith("bwrap")
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv", "--new-session"):
        assert flag in cmd
    writable = [cmd[i + 1:i + 3] for i, a in enumerate(cmd) if a == "--bind"]
    assert writable == [[str(tmp_path / "rt")] * 2, [str(tmp_path / "w"), "/mnt/data"]]
    assert cmd[cmd.index("--remount-ro") + 1] == "/"
    assert not any("KEY" in a for a in cmd)


def test_unsandboxed_mode_maps_mnt_data(tmp_path):
    """sandbox=False (machines without bubblewrap) still maps /mnt/data to the working directory."""
    with PythonTool(tmp_path / "data", sandbox=False) as py:
        obs = py.run("open('/mnt/data/a.txt', 'w').write('hi')\nimport os\nprint(os.listdir('/mnt/data'))")
    assert obs.content == "['a.txt']"
    assert (tmp_path / "data" / "a.txt").read_text() == "hi"


def test_loopback_is_reachable_from_the_host_side(http_server):
    """Control for the socket case above: the server itself is up and reachable outside the jail."""
    http_server.route("GET", "/", lambda r: (200, {}, "up"))
    assert httpx.get(f"{http_server.url}/", trust_env=False).text == "up"
