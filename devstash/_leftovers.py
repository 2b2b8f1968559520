"""What an interrupted `devstash compact` leaves in the cache folder: a
folder named .compact-* holding a whole copy of the store. The compact that
made it holds an flock on the file OWNER in it for its life (not on the
folder itself: opening the copy to check it flocks the folder); a folder
nobody holds (and not brand new: the flock is taken just after the folder
is made) is a leftover, removed by the next compact, doctor or open of the
cache."""
import fcntl
import os
import stat
import time

PREFIX = ".compact-"
OWNER = "owner.lock"
GRACE_SECONDS = 10.0


def make_owned(folder: str):
    """A new work folder for compact in folder, and the descriptor whose
    flock marks it as in use: close it when done."""
    import tempfile

    work = tempfile.mkdtemp(prefix=PREFIX, dir=folder)
    fd = os.open(os.path.join(work, OWNER), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return work, fd


def remove(folder: str) -> tuple:
    """Removes the leftovers in folder: (how many, bytes freed). Only folders
    of ours, never through a link; a failure leaves a folder for next time."""
    import shutil

    removed = freed = 0
    try:
        names = [n for n in os.listdir(folder) if n.startswith(PREFIX)]
    except OSError:
        return 0, 0
    for name in names:
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
            if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                    or time.time() - st.st_mtime < GRACE_SECONDS):
                continue
            fd = open_owner(path)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a live compact holds it
            size = sum(os.lstat(os.path.join(path, n)).st_size for n in os.listdir(path))
            shutil.rmtree(path)
        except OSError:
            continue
        finally:
            os.close(fd)
        removed += 1
        freed += size
    return removed, freed


def open_owner(path: str) -> int:
    """The descriptor a live compact holds the flock of: its OWNER file, or
    the folder itself when it was killed before making one."""
    try:
        return os.open(os.path.join(path, OWNER), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def present(folder: str) -> bool:
    """Whether folder holds any .compact-* entry (one listdir)."""
    try:
        return any(n.startswith(PREFIX) for n in os.listdir(folder))
    except OSError:
        return False
