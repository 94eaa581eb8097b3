"""The jail the python tool's kernel runs in: bubblewrap namespaces plus resource limits.

What the kernel sees: the Python installation and system libraries read-only,
its working directory read-write at ``/mnt/data``, a small private ``/tmp`` and
``/dev/shm``, and nothing else of the file system; no network (a new, empty network namespace);
its own process tree (a new PID namespace, killed with its parent).  Limits
(``setrlimit``) cap CPU seconds, address space, processes+threads, file size
and open files; they are set before the kernel starts and cannot be raised
from inside.

When the agent runs as root the kernel drops to an unprivileged user id of
its own (derived from the working directory), because Linux does not enforce
the process limit for root.

Everything the jail can write is hostile to the host: the host never opens a
path inside ``/mnt/data`` or the socket directory by name except through
no-follow, descriptor-relative calls, and it bounds what the jail can make it
store (see ``storage_use`` and the output limits in ``SandboxLimits``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

MOUNT_POINT = "/mnt/data"
# Where the jail sees its (read-only) connection file; the host's copy lives outside the jail.
CONNECTION_FILE = "/run/openglm/kernel.json"
# Read-only extras some libraries look for (fonts for matplotlib, time zone data).
OPTIONAL_RO = ("/etc/fonts", "/etc/localtime", "/usr/share/fonts", "/usr/share/zoneinfo")
UID_BASE, UID_SPAN = 30_000, 30_000  # below 65536: rootless containers map no more
# Top-level system directories shared read-only (or re-created as the same symlinks).
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64")


@dataclass
class SandboxLimits:
    """Limits of one python kernel; sizes in bytes, times in seconds."""

    timeout_s: float = 60.0          # wall clock per execution, then interrupt (or restart)
    cpu_s: int = 600                 # CPU seconds over the kernel's life, then it is killed
    memory_bytes: int = 4 << 30      # address space (RLIMIT_AS)
    max_processes: int = 64          # processes and threads (RLIMIT_NPROC)
    max_file_bytes: int = 256 << 20  # largest file it may write (RLIMIT_FSIZE)
    max_open_files: int = 256
    tmp_bytes: int = 256 << 20       # size of the private /tmp and /dev/shm (each lives in RAM)
    output_chars: int = 20_000       # output kept in the observation (head and tail)
    output_stop_bytes: int = 4 << 20  # output past this interrupts the execution
    image_bytes: int = 8 << 20       # largest image one output may store on the host
    images_per_call: int = 16        # images one execution may store
    session_image_bytes: int = 128 << 20  # all images the kernel's session may store
    disk_bytes: int = 1 << 30        # /mnt/data plus the socket directory, on the host's disk
    max_files: int = 10_000          # files and directories in /mnt/data


def bwrap_path() -> str:
    """Path of the bubblewrap binary, or a clear error saying how to get it."""
    found = shutil.which("bwrap")
    if not found:
        raise RuntimeError(
            "the python tool's sandbox needs bubblewrap: install it (Debian/Ubuntu: apt-get install bubblewrap, "
            "Fedora: dnf install bubblewrap), or pass sandbox=False to run the kernel UNSANDBOXED")
    return found


def sandbox_uid(workdir: Path) -> int | None:
    """The unprivileged uid the kernel runs as when we are root (stable per working directory)."""
    if os.geteuid() != 0:
        return None
    return UID_BASE + zlib.crc32(str(workdir.resolve()).encode()) % UID_SPAN


def python_mounts() -> list[str]:
    """Directories the kernel's Python needs (interpreter, stdlib, site-packages), outermost only."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[key])
    found = sorted({q for p in paths if p and os.path.isdir(p) for q in (p, os.path.realpath(p))})
    return [p for p in found if not any(_inside(p, q) for q in found if q != p)]


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def boot_code() -> str:
    """Run inside the jail before the kernel: set limits, drop root, exec ipykernel."""
    return (
        "import json, os, resource, sys\n"
        "cfg = json.loads(sys.argv[1])\n"
        "for name, (soft, hard) in cfg['rlimits'].items():\n"
        "    resource.setrlimit(getattr(resource, name), (soft, hard))\n"
        "if cfg['uid'] is not None:\n"
        "    os.setgroups([]); os.setgid(cfg['uid']); os.setuid(cfg['uid'])\n"
        "os.chdir(cfg['cwd'])\n"
        # no SQLite history: nothing the kernel needs should live in the small /tmp
        "os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', '-f', cfg['connection_file'],\n"
        "                          '--HistoryManager.enabled=False'])\n"
    )


def rlimits(limits: SandboxLimits) -> dict[str, tuple[int, int]]:
    return {
        # soft CPU limit sends SIGXCPU (fatal); the hard one is the SIGKILL backstop
        "RLIMIT_CPU": (limits.cpu_s, limits.cpu_s + 5),
        "RLIMIT_AS": (limits.memory_bytes, limits.memory_bytes),
        "RLIMIT_NPROC": (limits.max_processes, limits.max_processes),
        "RLIMIT_FSIZE": (limits.max_file_bytes, limits.max_file_bytes),
        "RLIMIT_NOFILE": (limits.max_open_files, limits.max_open_files),
        "RLIMIT_CORE": (0, 0),
    }


def kernel_env(home: str) -> dict[str, str]:
    """The kernel's whole environment: nothing of ours (API keys!) leaks in."""
    return {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "IPYTHONDIR": f"{home}/.ipython",
        "PYTHONDONTWRITEBYTECODE": "1",
        # one thread per BLAS library, so threads do not eat the process limit
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def kernel_command(workdir: Path, runtime_dir: Path, connection_file: Path, limits: SandboxLimits,
                   sandbox: bool = True) -> list[str]:
    """argv that starts an ipykernel for ``connection_file``, jailed unless ``sandbox=False``.

    ``runtime_dir`` (the kernel's sockets) is the jail's only writable mount besides ``/mnt/data``;
    ``connection_file`` should live elsewhere: it is mounted read-only at ``CONNECTION_FILE``."""
    uid = sandbox_uid(workdir) if sandbox else None
    cfg = {"rlimits": rlimits(limits), "uid": uid, "connection_file": CONNECTION_FILE if sandbox else
           str(connection_file), "cwd": MOUNT_POINT if sandbox else str(workdir)}
    boot = [sys.executable, "-c", boot_code(), json.dumps(cfg)]
    if not sandbox:
        return boot
    cmd = [bwrap_path(), "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if uid is None:
        # not root: a user namespace makes the mounts possible (and maps us to ourselves)
        cmd += ["--unshare-user"]
    made = {"/tmp", "/proc", "/dev", "/dev/shm"}  # mounted below; --dir must not touch them

    def parents(path: str) -> list[str]:
        out = []
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p != "/" and p not in made and not os.path.islink(p):
                made.add(p)
                out += ["--perms", "0755", "--dir", p]
        return out

    system = [f"/{top}" for top in SYSTEM_DIRS]
    for host in system:
        if os.path.islink(host):
            cmd += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            cmd += ["--ro-bind", host, host]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for scratch in ("/tmp", "/dev/shm"):
        cmd += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", scratch]
    for path in python_mounts() + [p for p in OPTIONAL_RO if os.path.exists(p)]:
        if not any(_inside(path, top) for top in system):
            cmd += parents(path) + ["--ro-bind", path, path]
    cmd += parents(str(runtime_dir)) + ["--bind", str(runtime_dir), str(runtime_dir)]
    cmd += parents(CONNECTION_FILE) + ["--ro-bind", str(connection_file), CONNECTION_FILE]
    cmd += parents(MOUNT_POINT) + ["--bind", str(workdir), MOUNT_POINT]
    cmd += ["--remount-ro", "/", "--clearenv"]
    for key, value in kernel_env("/tmp").items():
        cmd += ["--setenv", key, value]
    return cmd + ["--", *boot]


def prepare_dirs(workdir: Path, runtime_dir: Path, sandbox: bool) -> None:
    """Give the kernel's user the working and runtime directories (a no-op unless we are root)."""
    uid = sandbox_uid(workdir) if sandbox else None
    if uid is None:
        return
    for d in (runtime_dir, workdir):
        os.chown(d, uid, uid)
    # descriptor-relative and no-follow: a symlink the jail left cannot redirect a chown to host files
    for _, dirs, files, dir_fd in os.fwalk(workdir, follow_symlinks=False):
        for name in dirs + files:
            os.chown(name, uid, uid, dir_fd=dir_fd, follow_symlinks=False)


def storage_use(dirs: list[Path], max_files: int) -> tuple[int, int]:
    """(bytes on disk, entries) under ``dirs``, without following links; stops counting past max_files."""
    used = entries = 0
    for top in dirs:
        for _, subdirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
            for name in subdirs + files:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                used += st.st_blocks * 512  # allocated blocks: a sparse file costs what it holds
                entries += 1
            if entries > max_files:
                return used, entries
    return used, entries


def remove_changed_since(top: Path, since: float) -> tuple[int, int]:
    """Delete files (and then-empty directories) under ``top`` changed at or after ``since``.

    Uses the change time, which code cannot set back. Returns (entries removed, bytes freed).
    Call only while nothing in the jail runs."""
    removed = freed = 0
    for _, dirs, files, dir_fd in os.fwalk(top, topdown=False, follow_symlinks=False):
        for name in files + dirs:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if st.st_ctime < since:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=dir_fd)
                else:
                    os.unlink(name, dir_fd=dir_fd)
            except OSError:
                continue  # a non-empty directory keeps older files
            removed += 1
            freed += st.st_blocks * 512
    return removed, freed


def count_tasks(uid: int) -> int:
    """Processes plus threads owned by ``uid`` (what RLIMIT_NPROC counts)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total
