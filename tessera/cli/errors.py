"""How the command line answers what is neither a user's typo nor a bug: a state of the machine.

A read-only or full disk, a used-up quota or a folder this user may not write is refused like a
mistake (one line naming the path and what to do, exit 2); a reader that hung up on stdout
(`tessera ... | head`) ends the command quietly. Any other OSError is left to surface: it is a
bug to see, not a state to explain.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

from tessera.core.errors import StorageError
from tessera.core.fs import MIB, free_bytes

# errno: (what the path is, what to do, where else the home could go)
_STATES = {
    errno.EROFS: ("is on a read-only file system", "remount it read-write", "a writable folder"),
    errno.ENOSPC: ("is on a full disk", "free some space on it", "a disk with room"),
    errno.EDQUOT: ("is over this user's disk quota", "free some of the quota", "a disk with room"),
    errno.EACCES: ("is not open to this user (permission denied)", "give this user access to it",
                   "a folder this user can write"),
    errno.EPERM: ("is not open to this user (operation not permitted)",
                  "give this user access to it", "a folder this user can write"),
}


def storage_error(exc: OSError, command: str, home: Path | None) -> StorageError | None:
    """The refusal for an OSError that is the machine's state, or None for any other."""
    state = _STATES.get(exc.errno or 0)
    if state is None:
        return None
    what, fix, elsewhere = state
    # A write to an open file that finds the disk full names no file: the home is where we write.
    named = isinstance(exc.filename, str | bytes | os.PathLike)
    path = Path(os.fsdecode(exc.filename)) if named else home
    where = str(path) if path is not None else "a disk it writes to"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and path is not None:
        what += f" ({_free_mib(path)} MiB free)"
    message = f"`tessera {command}` cannot go on: {where} {what}; {fix}"
    if home is not None and path is not None and path.is_relative_to(home):
        message += (f", or point TESSERA_HOME (or `home` in tessera.toml) at {elsewhere} "
                    f"(the home is {home})")
    return StorageError(message, str(path) if path is not None else None)


def _free_mib(path: Path) -> int:
    try:
        return free_bytes(path) // MIB
    except OSError:
        return 0


def reader_hung_up() -> int:
    """Stdout's reader closed the pipe: exit quietly with 141 (128 + SIGPIPE).

    141 is what a shell reports for `git log | head` or `gh ... | head` (both die of SIGPIPE): a
    pipeline under `set -o pipefail` still learns the output was cut short, and 2 would blame
    the user for a reader that simply had enough.
    """
    # Python's recipe (the signal module's note on SIGPIPE): stdout onto /dev/null, so the flush
    # at exit does not fail a second time and print "Exception ignored".
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE
