"""The ``python`` tool: a stateful Jupyter kernel per session, jailed (see ``sandbox``).

The kernel talks to us over ZeroMQ IPC sockets (files in a runtime directory)
because it has no network at all.  Each call runs one cell: stdout/stderr,
results, the traceback tail of an error and matplotlib figures (PNG files,
their paths in the observation) come back as one observation.  A cell that
runs past the time limit is interrupted; a kernel that does not stop, dies or
is left without free process slots is restarted (variables are lost, files in
``/mnt/data`` stay).
"""

from __future__ import annotations

import base64
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .base import Observation, Tool, clip
from .sandbox import MOUNT_POINT, SandboxLimits, count_tasks, kernel_command, prepare_dirs, sandbox_uid

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK_LINES = 25
START_TIMEOUT_S = 60.0
INTERRUPT_GRACE_S = 3.0


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
        self.outputs_dir = Path(outputs_dir) if outputs_dir else self.workdir.parent / "outputs"
        self.limits = limits or SandboxLimits()
        self.sandbox = sandbox
        self._proc: subprocess.Popen | None = None
        self._client = None
        self._runtime: Path | None = None
        self._starts = 0
        self._figures = 0

    def spec(self) -> dict:
        return {"type": "python"}

    # -- kernel lifecycle ---------------------------------------------------

    def start(self) -> None:
        """Start the kernel (done lazily by the first call)."""
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        self._stop_kernel()
        self._starts += 1
        self._runtime = Path(tempfile.mkdtemp(prefix="openglm-py-"))
        connection_file = self._runtime / "kernel.json"
        # IPC transport: socket files work across the jail's empty network namespace.
        write_connection_file(str(connection_file), ip=str(self._runtime / "k"), transport="ipc")
        os.chmod(connection_file, 0o644)
        prepare_dirs(self.workdir, self._runtime, self.sandbox)
        cmd = kernel_command(self.workdir, self._runtime, connection_file, self.limits, self.sandbox)
        log = open(self._runtime / "kernel.log", "wb")  # noqa: SIM115 - owned by the process
        env = None if self.sandbox else _unsandboxed_env()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                      start_new_session=True)
        log.close()
        client = BlockingKernelClient(connection_file=str(connection_file))
        client.load_connection_file()
        client.start_channels()
        self._client = client
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.wait_for_ready(timeout=1)
                break
            except RuntimeError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    detail = self._log_tail()
                    self._stop_kernel()
                    raise RuntimeError(f"python kernel failed to start: {detail}") from None

    def restart(self) -> None:
        self.start()

    def close(self) -> None:
        self._stop_kernel()

    def _stop_kernel(self) -> None:
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        if self._proc is not None:
            if self._proc.poll() is None:
                # bwrap's children die with it (--die-with-parent, PID namespace)
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._proc.wait()
            self._proc = None
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None

    def _log_tail(self) -> str:
        try:
            text = (self._runtime / "kernel.log").read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return clip(text, 1500) or f"exit code {self._proc.poll() if self._proc else '?'}"

    # -- execution ----------------------------------------------------------

    def run(self, arguments) -> Observation:
        code = arguments if isinstance(arguments, str) else str(arguments)
        if not self.sandbox:
            code = code.replace(MOUNT_POINT, str(self.workdir))
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        obs = self._execute(code)
        note = self._check_health()
        if note:
            obs.content += f"\n[{note}]"
        return obs

    def _execute(self, code: str) -> Observation:
        client = self._client
        msg_id = client.execute(code, store_history=True, allow_stdin=False)
        out = _Output(self.limits, self.new_figure_path)
        deadline = time.monotonic() + self.limits.timeout_s
        interrupted_at = None
        while True:
            now = time.monotonic()
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
        if interrupted_at is not None:
            return out.observation(out.stop_reason(self.limits, timed_out=not out.flooded) + "; execution interrupted")
        return out.observation()

    def _interrupt(self) -> None:
        """Interrupt via the control channel: the kernel raises KeyboardInterrupt in the running cell."""
        client = self._client
        client.control_channel.send(client.session.msg("interrupt_request", content={}))

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

    def new_figure_path(self) -> Path:
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self._figures += 1
        return self.outputs_dir / f"python-{os.getpid()}-{self._starts}-{self._figures}.png"


class _Output:
    """Collects one execution's messages into an observation, within the output limits."""

    def __init__(self, limits: SandboxLimits, figure_path):
        self.limits, self.figure_path = limits, figure_path
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
                path = self.figure_path()
                path.write_bytes(base64.b64decode(data["image/png"]))
                self.files.append(str(path))
                self.parts.append(f"[image saved to {path}]\n")
            elif "text/plain" in data:
                self._text(data["text/plain"] + "\n")
        elif kind == "error":
            tb = ANSI.sub("", "\n".join(content.get("traceback", []))).strip().splitlines()
            tail = "\n".join(tb[-TRACEBACK_LINES:]) or f"{content.get('ename')}: {content.get('evalue')}"
            self.error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
            self.parts.append(tail + "\n")

    def _text(self, text: str) -> None:
        self.received += len(text)
        if self.received > self.limits.output_stop_bytes:
            self.flooded = True
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
