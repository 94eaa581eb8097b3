"""Attacks on the python tool's sandbox from the code it runs: host files, host disk, host paths.

Each test runs the real kernel in bubblewrap, attacks, then checks that nothing reached the host
and that the same tool still runs a normal call.
"""

import os
import socket
import threading

import pytest

from openglm.agent.tools import PythonTool, SandboxLimits

SECRET = "host-secret-7f3a9c"

# Code that finds the kernel's socket directory (the one host directory the jail may write besides
# /mnt/data) from the connection file the kernel was started with.
FIND_RUNTIME = """
import glob, json, os, signal, sys
cf = sys.argv[sys.argv.index('-f') + 1]
runtime = os.path.dirname(json.load(open(cf))['ip'])
"""


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "host-secret.txt"
    path.write_text(SECRET)
    return path


def tool(tmp_path, **limits) -> PythonTool:
    return PythonTool(tmp_path / "data", tmp_path / "outputs", SandboxLimits(**{"timeout_s": 20, **limits}))


def assert_alive(py: PythonTool) -> None:
    obs = py.run("print(6 * 7)")
    assert not obs.is_error and obs.content == "42", obs.content


@pytest.mark.parametrize("target", ["secret file", "/etc/shadow"])
def test_links_in_the_socket_directory_never_make_the_host_read_a_file(tmp_path, secret_file, monkeypatch, target):
    """The kernel replaces every file of its socket directory (and a kernel.log) with links to a host file,
    then dies: the host's report of the death must not contain it (the host's environment holds a key)."""
    monkeypatch.setenv("OPENGLM_API_KEY", SECRET)
    target = str(secret_file) if target == "secret file" else target
    code = FIND_RUNTIME + f"""
for name in set(os.listdir(runtime) + ['kernel.log', 'kernel.json', 'log']):
    path = os.path.join(runtime, name)
    try:
        os.rename(path, path + '.old')
    except OSError:
        pass
    os.symlink({target!r}, path)
os.kill(os.getpid(), signal.SIGKILL)
"""
    with tool(tmp_path) as py:
        obs = py.run(code)
        assert obs.is_error and "the kernel died" in obs.content
        assert SECRET not in obs.content and "root:" not in obs.content, obs.content
        assert_alive(py)


def test_a_swapped_socket_never_redirects_the_host(tmp_path):
    """The kernel points its socket files at a host unix socket: the host must never connect to it."""
    trap = tmp_path / "trap.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(trap))
    server.listen(8)
    server.settimeout(0.2)
    hits = []

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            hits.append(1)
            conn.close()

    stop = threading.Event()
    worker = threading.Thread(target=accept, daemon=True)
    worker.start()
    # swap the socket files for links, then close the kernel's ends so the host's connections drop
    code = FIND_RUNTIME + f"""
import gc, time, zmq
for path in glob.glob(runtime + '/k-*'):
    os.unlink(path)
    os.symlink({str(trap)!r}, path)
for obj in gc.get_objects():
    if isinstance(obj, zmq.Socket) and not obj.closed:
        obj.close(linger=0)
time.sleep(3)
"""
    try:
        with tool(tmp_path, timeout_s=5) as py:
            obs = py.run(code)  # no answer can come: the call times out and the kernel is restarted
            assert obs.is_error
            assert_alive(py)
    finally:
        stop.set()
        worker.join()
        server.close()
    assert not hits


def test_images_are_checked_and_bounded(tmp_path):
    """Large, fake and too many displayed images are refused; the host stores at most the limits."""
    code = """
import base64
from IPython.display import display
png = open('/mnt/data/real.png', 'rb').read()
for _ in range(8):
    display({'image/png': base64.b64encode(b'\\x89PNG' + b'0' * (6 << 20)).decode()}, raw=True)
display({'image/png': base64.b64encode(b'not a png at all' * 10).decode()}, raw=True)
display({'image/png': '!!! not base64 !!!'}, raw=True)
for _ in range(5):
    display({'image/png': base64.b64encode(png).decode()}, raw=True)
"""
    limits = dict(image_bytes=1 << 20, images_per_call=3, session_image_bytes=4 << 20, output_stop_bytes=100 << 20)
    with tool(tmp_path, **limits) as py:
        py.run("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
               "plt.plot([1, 2]); plt.savefig('/mnt/data/real.png')")
        obs = py.run(code)
        assert obs.content.count("larger than the 1,048,576-byte limit") == 8
        assert "not a PNG image" in obs.content
        assert obs.content.count("[image saved to") == 3
        assert "more than 3 images in one call" in obs.content
        stored = sum(p.stat().st_size for p in (tmp_path / "outputs").iterdir())
        assert stored < 1 << 20 and len(obs.files) == 3
        for path in obs.files:
            assert open(path, "rb").read(4) == b"\x89PNG"
            assert os.stat(path).st_mode & 0o777 == 0o644
        assert_alive(py)


def test_a_flood_of_large_images_stores_nothing_and_is_interrupted(tmp_path):
    """The reported attack: eight 50 MB blobs displayed as PNG (401 MB were stored on the host)."""
    code = ("import base64\nfrom IPython.display import display\nblob = base64.b64encode(b'0' * (50 << 20)).decode()\n"
            "for _ in range(8):\n    display({'image/png': blob}, raw=True)")
    with tool(tmp_path) as py:
        obs = py.run(code)
        assert obs.is_error and "output limit exceeded" in obs.content
        assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())
        assert_alive(py)


def test_the_session_image_limit_holds_across_calls(tmp_path):
    code = """
import base64
from IPython.display import display
display({'image/png': base64.b64encode(open('/mnt/data/real.png', 'rb').read()).decode()}, raw=True)
"""
    with tool(tmp_path) as py:
        py.run("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
               "plt.plot([1, 2]); plt.savefig('/mnt/data/real.png')")
        size = (tmp_path / "data" / "real.png").stat().st_size
        py.limits.session_image_bytes = 2 * size + 1
        results = [py.run(code).content for _ in range(3)]
    assert ["[image saved to" in r for r in results] == [True, True, False]
    assert "image limit" in results[2]


def test_filling_the_disk_stops_the_kernel_and_removes_what_the_call_wrote(tmp_path):
    with tool(tmp_path, disk_bytes=48 << 20, max_files=500) as py:
        py.run("open('/mnt/data/keep.txt', 'w').write('earlier work')")
        obs = py.run("import os\nfor i in range(40):\n    open(f'/mnt/data/blob{i}', 'wb').write(os.urandom(4 << 20))")
        assert obs.is_error and "storage limit exceeded" in obs.content, obs.content
        names = os.listdir(tmp_path / "data")
        assert names == ["keep.txt"]
        bomb = py.run("import os\nos.makedirs('/mnt/data/d', exist_ok=True)\n"
                      "for i in range(5000):\n    open(f'/mnt/data/d/{i}', 'w').close()")
        assert bomb.is_error and "storage limit exceeded" in bomb.content
        assert os.listdir(tmp_path / "data") == ["keep.txt"]
        assert_alive(py)


def test_files_in_the_socket_directory_count_toward_the_disk_limit(tmp_path):
    code = FIND_RUNTIME + "for i in range(20):\n    open(f'{runtime}/f{i}', 'wb').write(os.urandom(4 << 20))"
    with tool(tmp_path, disk_bytes=32 << 20) as py:
        obs = py.run(code)
        assert obs.is_error and "storage limit exceeded" in obs.content, obs.content
        assert_alive(py)


@pytest.mark.skipif(os.geteuid() != 0, reason="the jail runs as another user only when the host runs as root")
def test_links_left_in_the_working_directory_never_redirect_the_hosts_chown(tmp_path, secret_file):
    """On restart the host gives /mnt/data to the jail's user; links planted there must not pass it on."""
    os.chown(secret_file, 0, 0)
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "inner.txt").write_text("x")
    with tool(tmp_path) as py:
        py.run(f"import os\nos.symlink({str(secret_file)!r}, '/mnt/data/link')\n"
               f"os.symlink({str(host_dir)!r}, '/mnt/data/dirlink')")
        py.restart()
        assert_alive(py)
    assert os.stat(secret_file).st_uid == 0
    assert os.stat(host_dir / "inner.txt").st_uid == 0


def test_outputs_inside_the_working_directory_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the sandbox's working directory"):
        PythonTool(tmp_path / "data", tmp_path / "data" / "outputs")


def test_the_host_environment_never_reaches_the_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENGLM_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code = """
import os, glob
seen = repr(dict(os.environ))
for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):
    try:
        seen += open(path, 'rb').read().decode(errors='replace')
    except OSError:
        pass
print(len(seen), 'host-secret' in seen)
"""
    with tool(tmp_path) as py:
        obs = py.run(code)
    assert obs.content.endswith("False"), obs.content
