"""The ``python`` tool: a stateful Jupyter kernel per session, jailed (see ``sandbox``).

The kernel talks to us over ZeroMQ IPC sockets (files in a runtime directory)
because it has no network at all.  Each call runs one cell: stdout/stderr,
results, the traceback tail of an error and matplotlib figures (PNG files,
their paths in the observation) come back as one observation.  A cell that
runs past the time limit is interrupted; a kernel that does not stop, dies or
is left without free process slots is restarted (variables are lost, files in
``/mnt/data`` stay).

The socket directory is writable from the jail, so the host keeps its own
files (connection file, kernel log) elsewhere, connects to the sockets once,
after checking them, and never reconnects to a path the code could have
swapped.  Images and files the code makes are bounded (``SandboxLimits``).
"""

from __future__ import annotations

import base64
import binascii
import os
import queue
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .base import Observation, Tool, clip
from .sandbox import (
    MOUNT_POINT,
    SandboxLimits,
    count_tasks,
    kernel_command,
    prepare_dirs,
    remove_changed_since,
    sandbox_uid,
    storage_use,
)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK_LINES = 25
START_TIMEOUT_S = 60.0
INTERRUPT_GRACE_S = 3.0
SEND_TIMEOUT_S = 2.0
STORAGE_CHECK_S = 1.0  # how often a running cell's disk use is measured
LOG_TAIL_BYTES = 8192
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = ("shell", "iopub", "control")  # no stdin (input() is refused), no heartbeat (it reconnects)


class PythonTool(Tool):
    """Run model-written Python in a sandboxed, stateful IPython kernel.

    ``workdir`` is the session's directory, seen by the code as ``/mnt/data``;
    ``outputs_dir`` receives the PNG figures (default: ``workdir/../outputs``).
    ``sandbox=False`` runs the kernel without the jail (limits still apply, and
    ``/mnt/data`` in the code is rewritten to ``workdir``): only for machines
    without bubblewrap, and only for code you trust.
    """

    name = "python"
    timeout_s = None  # enforced per execution, with interrupt and restart

    def __init__(self, workdir: str | Path, outputs_dir: str | Path | None = None,
                 limits: SandboxLimits | None = None, sandbox: bool = True):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.outputs_dir = Path(outputs_dir).resolve() if outputs_dir else self.workdir.parent / "outputs"
        if self.outputs_dir == self.workdir or self.workdir in self.outputs_dir.parents:
            raise ValueError(f"outputs_dir {self.outputs_dir} must be outside the sandbox's working directory")
        self.limits = limits or SandboxLimits()
        self.sandbox = sandbox
        self._proc: subprocess.Popen | None = None
        self._client = None
        self._context = None
        self._runtime: Path | None = None  # the kernel's sockets: writable from the jail
        self._host_dir: Path | None = None  # our connection file: never mounted into the jail
        self._log = _LogTail()
        self._starts = 0
        self._figures = 0
        self.image_bytes_stored = 0

    def spec(self) -> dict:
        return {"type": "python"}

    # -- kernel lifecycle ---------------------------------------------------

    def start(self) -> None:
        """Start the kernel (done lazily by the first call)."""
        import zmq
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        self._stop_kernel()
        self._starts += 1
        self._host_dir = Path(tempfile.mkdtemp(prefix="openglm-py-host-"))
        self._runtime = Path(tempfile.mkdtemp(prefix="openglm-py-"))
        connection_file = self._host_dir / "kernel.json"
        # IPC transport: socket files work across the jail's empty network namespace.
        _, info = write_connection_file(str(connection_file), ip=str(self._runtime / "k"), transport="ipc")
        os.chmod(connection_file, 0o644)  # the jail's user reads it through a read-only mount
        prepare_dirs(self.workdir, self._runtime, self.sandbox)
        cmd = kernel_command(self.workdir, self._runtime, connection_file, self.limits, self.sandbox)
        env = None if self.sandbox else _unsandboxed_env()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        self._log = _LogTail(self._proc.stdout)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            self._wait_for_sockets(info, deadline)
            # Connect once; never reconnect, since the code can replace a socket file with a link.
            self._context = zmq.Context()
            self._context.setsockopt(zmq.RECONNECT_IVL, -1)
            # with no peer left a send would block forever: time out instead
            self._context.setsockopt(zmq.SNDTIMEO, int(SEND_TIMEOUT_S * 1000))
            client = BlockingKernelClient(context=self._context)
            client.load_connection_info(info)
            client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
            self._client = client
            while True:
                try:
                    client.wait_for_ready(timeout=1)
                    break
                except RuntimeError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("no answer from the kernel") from None
        except RuntimeError as e:
            detail = self._log_tail()
            self._stop_kernel()
            raise RuntimeError(f"python kernel failed to start: {e}; {detail}") from None

    def _wait_for_sockets(self, info: dict, deadline: float) -> None:
        """Wait until the kernel listens on its sockets (before any code of the model's runs)."""
        for channel in CHANNELS:
            path = f"{info['ip']}-{info[channel + '_port']}"
            while True:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the kernel did not open its {channel} socket")
                try:
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        with socket.socket(socket.AF_UNIX) as probe:
                            probe.connect(path)
                        break
                except OSError:
                    pass
                time.sleep(0.05)

    def restart(self) -> None:
        self.start()

    def close(self) -> None:
        self._stop_kernel()

    def _stop_kernel(self) -> None:
        if self._client is not None:
            # not stop_channels(): it opens (connects) the stdin and heartbeat channels in order to stop them
            for channel in CHANNELS:
                getattr(self._client, f"{channel}_channel").stop()
            self._client = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if self._proc is not None:
            if self._proc.poll() is None:
                # bwrap's children die with it (--die-with-parent, PID namespace)
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._proc.wait()
            self._proc = None
            # the jail's processes die with it, but asynchronously: its output pipe closes when the last is gone
            self._log.wait_closed(INTERRUPT_GRACE_S)
        for attr in ("_runtime", "_host_dir"):
            if getattr(self, attr) is not None:
                shutil.rmtree(getattr(self, attr), ignore_errors=True)  # fd-based: links are removed, not followed
                setattr(self, attr, None)

    def _log_tail(self) -> str:
        """The end of the kernel's own output (a pipe to us: no file the jail could swap)."""
        text = self._log.text()
        return clip(text, 1500) or f"exit code {self._proc.poll() if self._proc else '?'}"

    # -- execution ----------------------------------------------------------

    def run(self, arguments) -> Observation:
        code = arguments if isinstance(arguments, str) else str(arguments)
        if not self.sandbox:
            code = code.replace(MOUNT_POINT, str(self.workdir))
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        try:
            obs = self._execute(code)
        except zmq_again():
            self.restart()
            return Observation("Error: the kernel stopped answering and was restarted (variables are lost, "
                               "files in /mnt/data are kept)", is_error=True)
        note = self._check_health()
        if note:
            obs.content += f"\n[{note}]"
        return obs

    def _execute(self, code: str) -> Observation:
        client = self._client
        msg_id = client.execute(code, store_history=True, allow_stdin=False)
        out = _Output(self.limits, self.save_image)
        started = time.time() - 0.05  # file change times come from a coarser clock
        deadline = time.monotonic() + self.limits.timeout_s
        interrupted_at = None
        next_storage_check = time.monotonic() + STORAGE_CHECK_S
        while True:
            now = time.monotonic()
            if now > next_storage_check:
                next_storage_check = now + STORAGE_CHECK_S
                over = self._enforce_storage(started)
                if over:
                    return out.observation(over)
            if interrupted_at is None and (now > deadline or out.flooded):
                self._interrupt()
                interrupted_at = now
            if interrupted_at is not None and now > interrupted_at + INTERRUPT_GRACE_S:
                reason = out.stop_reason(self.limits, timed_out=not out.flooded)
                self.restart()
                return out.observation(f"{reason}; the kernel did not stop and was restarted "
                                       "(variables are lost, files in /mnt/data are kept)")
            try:
                msg = client.get_iopub_msg(timeout=0.25)
            except queue.Empty:
                status = self._proc.poll()
                if status is not None:
                    detail = self._log_tail()
                    self._stop_kernel()
                    return out.observation(f"the kernel died ({_death(status, self.limits)}); "
                                           f"it restarts on the next call. {detail}")
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                break
            out.add(kind, content)
        self._drain_shell()
        over = self._enforce_storage(started)
        if over:
            return out.observation(over)
        if interrupted_at is not None:
            return out.observation(out.stop_reason(self.limits, timed_out=not out.flooded) + "; execution interrupted")
        return out.observation()

    def _interrupt(self) -> None:
        """Interrupt via the control channel: the kernel raises KeyboardInterrupt in the running cell."""
        client = self._client
        try:
            client.control_channel.send(client.session.msg("interrupt_request", content={}))
        except zmq_again():
            pass  # nobody listens: the grace period runs out and the kernel is restarted

    def _drain_shell(self) -> None:
        try:
            while True:
                self._client.get_shell_msg(timeout=0.05)
        except queue.Empty:
            pass

    def _check_health(self) -> str | None:
        """Restart a kernel whose leftover processes use up the process limit (e.g. after a fork bomb)."""
        uid = sandbox_uid(self.workdir) if self.sandbox else None
        if uid is None or self._proc is None:
            return None
        if count_tasks(uid) >= self.limits.max_processes - 2:
            self.restart()
            return ("processes left behind by the code used up the process limit "
                    f"({self.limits.max_processes}); the kernel was restarted, variables are lost")
        return None

    def _enforce_storage(self, since: float) -> str | None:
        """Stop a kernel whose files outgrow the disk or file-count limit, and delete what this call wrote."""
        limits = self.limits
        dirs = [self.workdir] + ([self._runtime] if self._runtime else [])
        used, entries = storage_use(dirs, limits.max_files)
        if used <= limits.disk_bytes and entries <= limits.max_files:
            return None
        self._stop_kernel()
        removed, freed = remove_changed_since(self.workdir, since)
        return (f"storage limit exceeded ({used / 2**20:,.0f} MiB in {entries:,} files; limits "
                f"{limits.disk_bytes / 2**20:,.0f} MiB, {limits.max_files:,} files): the kernel was stopped and the "
                f"{removed:,} files this call wrote were deleted ({freed / 2**20:,.0f} MiB)")

    def save_image(self, png: bytes) -> Path:
        """Store one PNG the code displayed, within the session's limit; ValueError says why not."""
        if self.image_bytes_stored + len(png) > self.limits.session_image_bytes:
            raise ValueError(f"the session's image limit ({self.limits.session_image_bytes:,} bytes) is used up")
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self._figures += 1
        path = self.outputs_dir / f"python-{os.getpid()}-{self._starts}-{self._figures}.png"
        # O_EXCL | O_NOFOLLOW: never write through a file or link that is already there
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        self.image_bytes_stored += len(png)
        return path


class _LogTail:
    """Keeps the last bytes a pipe delivers (the kernel's stdout and stderr), read by a daemon thread."""

    def __init__(self, pipe=None):
        self._tail = b""
        self._reader = threading.Thread(target=self._read, args=(pipe,), daemon=True) if pipe else None
        if self._reader:
            self._reader.start()

    def wait_closed(self, timeout: float) -> None:
        if self._reader:
            self._reader.join(timeout)

    def _read(self, pipe) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(4096), b""):
                self._tail = (self._tail + chunk)[-LOG_TAIL_BYTES:]

    def text(self) -> str:
        return self._tail.decode(errors="replace").strip()


class _Output:
    """Collects one execution's messages into an observation, within the output limits."""

    def __init__(self, limits: SandboxLimits, save_image):
        self.limits, self.save_image = limits, save_image
        self.parts: list[str] = []
        self.received = 0
        self.error: str | None = None
        self.files: list[str] = []
        self.flooded = False

    def add(self, kind: str, content: dict) -> None:
        if kind == "stream":
            self._text(content.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            data = content.get("data", {})
            if "image/png" in data:
                self._image(data["image/png"])
            elif "text/plain" in data:
                self._text(data["text/plain"] + "\n")
        elif kind == "error":
            tb = ANSI.sub("", "\n".join(content.get("traceback", []))).strip().splitlines()
            tail = "\n".join(tb[-TRACEBACK_LINES:]) or f"{content.get('ename')}: {content.get('evalue')}"
            self.error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
            self.parts.append(tail + "\n")

    def _image(self, encoded) -> None:
        """Store a displayed PNG if it is one and fits the limits; otherwise say why in the output."""
        limits = self.limits
        try:
            if len(self.files) >= limits.images_per_call:
                raise ValueError(f"more than {limits.images_per_call} images in one call")
            if not isinstance(encoded, str) or len(encoded) > (limits.image_bytes + 2) // 3 * 4 + 4:
                raise ValueError(f"larger than the {limits.image_bytes:,}-byte limit")
            png = base64.b64decode(encoded, validate=True)
            if not _is_png(png):
                raise ValueError("not a PNG image")
            path = self.save_image(png)
        except (ValueError, binascii.Error) as e:
            self._count(len(encoded) if isinstance(encoded, str) else 0)  # refused images count as flood
            self.parts.append(f"[image not saved: {e}]\n")
            return
        self.files.append(str(path))
        self.parts.append(f"[image saved to {path}]\n")

    def _count(self, size: int) -> None:
        self.received += size
        if self.received > self.limits.output_stop_bytes:
            self.flooded = True

    def _text(self, text: str) -> None:
        self._count(len(text))
        kept = sum(map(len, self.parts))
        # keep a little more than the observation shows, so clip() can show head and tail
        room = 2 * self.limits.output_chars - kept
        if room > 0:
            self.parts.append(text[:room])

    def stop_reason(self, limits: SandboxLimits, timed_out: bool) -> str:
        if timed_out:
            return f"execution timed out after {limits.timeout_s:g} s"
        return f"output limit exceeded ({self.received:,} characters, limit {limits.output_stop_bytes:,})"

    def observation(self, failure: str | None = None) -> Observation:
        text = clip("".join(self.parts), self.limits.output_chars).rstrip()
        if self.received > 2 * self.limits.output_chars and not failure:
            text += f"\n[output truncated: {self.received:,} characters printed]"
        if failure:
            return Observation(f"{text}\nError: {failure}".strip(), is_error=True, files=self.files)
        if self.error:
            return Observation(text, is_error=True, files=self.files)
        return Observation(text or "[executed, no output]", files=self.files)


def zmq_again() -> type[Exception]:
    """ZeroMQ's send-timeout error (imported late: zmq loads with the kernel client)."""
    import zmq

    return zmq.Again


def _is_png(blob: bytes) -> bool:
    """A PNG signature followed by a well-formed IHDR chunk with a sane size."""
    if len(blob) < 33 or not blob.startswith(PNG_SIGNATURE) or blob[12:16] != b"IHDR":
        return False
    length, width, height = struct.unpack(">I4xII", blob[8:24])
    return length == 13 and 0 < width <= 1 << 16 and 0 < height <= 1 << 16


def _death(code: int, limits: SandboxLimits) -> str:
    """Why the kernel process ended; bwrap reports a child killed by signal N as exit code 128+N."""
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        return f"killed by {signal.Signals(sig).name}: CPU time limit of {limits.cpu_s} s, or out of memory"
    if sig:
        return f"killed by signal {sig}"
    return f"exit code {code}"


def _unsandboxed_env() -> dict[str, str]:
    from .sandbox import kernel_env

    return kernel_env(tempfile.gettempdir())
