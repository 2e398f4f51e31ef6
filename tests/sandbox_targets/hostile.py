"""Plugins that misbehave: crash, hang, flood, leak processes, fight the sandbox."""

import ctypes
import os
import signal
import subprocess
import sys
import time


def infinite_loop():
    while True:
        pass


def sleep(seconds):
    time.sleep(seconds)
    return "slept"


def block_until(started_file, release_file):
    """Say it started, then hold its call until the test lets it go."""
    open(started_file, "w").close()
    while not os.path.exists(release_file):
        time.sleep(0.01)
    return "released"


def allocate_forever():
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))


def segfault():
    ctypes.string_at(0)


def abort():
    os.abort()


def ignore_sigterm_and_sleep(seconds):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def flood(n_bytes, stream):
    handle = sys.stdout if stream == "stdout" else sys.stderr
    chunk = ("0123456789abcdef" * 4096)[:-1] + "\n"  # 64 KiB lines
    written = 0
    while written < n_bytes:
        handle.write(chunk)
        written += len(chunk)
    handle.write("THE-END\n")
    handle.flush()
    return written


def _sleeper_argv(marker, seconds=60):
    return [
        sys.executable,
        "-c",
        "import sys, time; time.sleep(float(sys.argv[1]))",
        str(seconds),
        marker,
    ]


def spawn_sleeper(marker, setsid=False, then_sleep=0):
    """Leave a grandchild running (optionally in its own session) and return its pid."""
    proc = subprocess.Popen(_sleeper_argv(marker), start_new_session=setsid)
    if then_sleep:
        time.sleep(then_sleep)
    return proc.pid


def double_fork_daemon(marker, pid_file):
    """Classic daemonisation: fork, setsid, fork again, exec a sleeper; parent returns."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, _sleeper_argv(marker))
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.2)  # let the exec happen so the marker is visible
    return "daemonised"


def fork_bomb(n_forks, pid_file, then):
    """Fork n children that each sleep; record their pids; then return or hang."""
    pids = []
    for _ in range(n_forks):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
    with open(pid_file, "w") as handle:
        handle.write(" ".join(map(str, pids)))
    if then == "hang":
        time.sleep(60)
    return len(pids)


def close_standard_fds(marker):
    """Close 0/1/2 and every other fd, redirect 1 to a file, spawn a child, still return."""
    os.closerange(0, 1024)
    fd = os.open("redirected.txt", os.O_WRONLY | os.O_CREAT)  # lands on fd 0
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    print("into the file")
    return "still here"


def close_standard_fds_and_crash():
    os.closerange(0, 1024)
    os.abort()


def call_process_group_kill():
    """Signal its own process group: must not reach the host or the portal."""
    os.killpg(0, signal.SIGTERM)
    return "survived?"


def hang_on_exit():
    """Return normally, but make the call process's final os._exit() hang."""

    def never_exit(code):
        time.sleep(3600)

    os._exit = never_exit
    return os.getpid()


def fill_disk(n_files, mb_each, where_file, then_return=False):
    """Write n_files files of mb_each MiB into the working directory, saying where first."""
    with open(where_file, "w") as handle:  # outside the working directory: the test reads it
        handle.write(os.getcwd())
    chunk = b"\xa5" * (1 << 20)
    for index in range(n_files):
        with open(f"fill-{index}.bin", "wb") as handle:
            for _ in range(mb_each):
                handle.write(chunk)
    return "wrote everything"


def sparse_file(apparent_mb):
    """A file that claims apparent_mb MiB but has almost no blocks allocated."""
    with open("sparse.bin", "wb") as handle:
        handle.seek(apparent_mb * (1 << 20))
        handle.write(b"end")
    return os.stat("sparse.bin").st_size


def hard_links(mb, links):
    """One file of mb MiB under several names."""
    with open("data.bin", "wb") as handle:
        handle.write(b"\x5a" * (mb << 20))
    for index in range(links):
        os.link("data.bin", f"link-{index}.bin")
    return links


def hide_in_unreadable_dir(mb):
    """Write mb MiB inside a directory it then makes unreadable, and keep running."""
    os.makedirs("hidden/deeper")
    with open("hidden/deeper/data.bin", "wb") as handle:
        handle.write(b"\x5a" * (mb << 20))
    os.chmod("hidden", 0)
    time.sleep(30)


def spawn_sleeper_and_wait(marker, pid_file, seconds=60):
    """Start a sleeping child, write 'own_pid child_pid' to pid_file, then sleep: a slow call
    with a process tree, for cancelling."""
    proc = subprocess.Popen(_sleeper_argv(marker, seconds))
    with open(pid_file + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()} {proc.pid}")
    os.rename(pid_file + ".tmp", pid_file)  # whole, or not there
    time.sleep(seconds)
    return "not cancelled"
