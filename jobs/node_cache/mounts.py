"""Read-only bind mounts through mount(2), and the mount table as the kernel reports it.

System calls rather than the ``mount`` binary: the plugin's image need not
ship util-linux, and errors arrive as errno values that map to gRPC codes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def bind_readonly(source: Path, target: Path) -> None:
    """Bind ``source`` at ``target``, then make that mount read-only, nosuid, nodev, noexec.

    A bind mount ignores MS_RDONLY on creation; the remount applies it to this
    mount only, never to the cache the source lives in. If the remount fails the
    writable bind is undone, so a target is either read-only or not mounted.
    """
    src, dst = os.fsencode(source), os.fsencode(target)
    _check(_libc.mount(src, dst, None, MS_BIND, None), f"bind mount {source} at {target}")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        _check(_libc.mount(None, dst, None, flags, None), f"remount {target} read-only")
    except OSError:
        unmount(target)
        raise


def unmount(target: Path) -> None:
    """Unmount ``target``; a path that is not a mount point is not an error.

    Lazy (MNT_DETACH) when the mount is busy, so a process that still holds a
    file open cannot keep the kubelet from removing the pod's volume directory.
    """
    dst = os.fsencode(target)
    if _libc.umount2(dst, 0) == 0:
        return
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOENT):  # not a mount point, or gone
        return
    if e == errno.EBUSY:
        _check(_libc.umount2(dst, MNT_DETACH), f"unmount {target}")
        return
    raise OSError(e, f"unmount {target}: {os.strerror(e)}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace (``/proc/self/mountinfo``)."""
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                points.add(_unescape(fields[4]))
    return points


def is_mount_point(path: Path) -> bool:
    return os.path.realpath(path) in mount_points()
