"""The commands that change the cache: clear, compact and prune."""
import os
import time

from . import _core, _leftovers
from ._cli_common import (CORRUPT_CODES, CliError, FolderLock, cache_folder, describe, format_size,
                          has_store, iter_entries, matches, open_store, store_problem)


def cmd_clear(ns) -> int:
    selectors = [ns.pattern is not None, ns.site is not None, ns.expired, ns.older_than is not None]
    if not ns.all and not any(selectors):
        ns.parser.error("say what to remove: --all for everything, or --pattern, --site, "
                        "--expired, --older-than")
    if ns.all and any(selectors):
        ns.parser.error("--all removes everything: it takes no other selector")
    folder = cache_folder()
    if not has_store(folder):
        print(f"no cache at {folder}: nothing to clear")
        return 0
    if ns.all:
        try:
            store = _core.Store(folder)
        except (OSError, _core.StoreError) as exc:
            return clear_damaged(folder, exc)
    else:
        store = open_store(folder, readonly=False)
    with store:
        now = time.time()
        chosen = [e for e in iter_entries(store) if ns.all or matches(e, ns, now)]
        if ns.all:
            store.clear()
        else:
            chosen = [e for e in chosen if store.delete(e.key)]
    print(f"removed {len(chosen)} {'entry' if len(chosen) == 1 else 'entries'} "
          f"({format_size(sum(e.size for e in chosen))}) from {folder}")
    return 0


def clear_damaged(folder: str, exc) -> int:
    """clear --all of a store LMDB cannot open because its file is damaged:
    remove the files (under the folder lock every opener takes)."""
    message = describe(exc)
    if not isinstance(exc, _core.DamagedError) and not any(code in message for code in CORRUPT_CODES):
        raise CliError(store_problem(folder, exc))
    with FolderLock(folder):
        for name in ("data.mdb", "lock.mdb"):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass
    print(f"the store in {folder} was damaged ({message}); removed its files")
    return 0


def cmd_compact(ns) -> int:
    """Compacting copy, checked, then renamed over data.mdb with a fresh lock
    file, under the folder lock. A process that has the store open keeps the
    old files (its open descriptors) and keeps working; what it writes after
    the swap is lost, which for a cache means recomputed later."""
    import shutil

    folder = cache_folder()
    if not has_store(folder):
        print(f"no cache at {folder}: nothing to compact")
        return 0
    store = open_store(folder, readonly=False)
    removed, freed = _leftovers.remove(folder)
    if removed:
        print(f"removed {removed} leftover cop{'ies' if removed != 1 else 'y'} of an interrupted "
              f"compact ({format_size(freed)})")
    work, owned = _leftovers.make_owned(folder)
    try:
        with store:
            before = store.info()["used"]
            after = store.compact_to(os.path.join(work, "data.mdb"))
        try:
            with _core.Store(work, readonly=True) as copy:
                count = copy.count()
                copy.entries()
        except (OSError, _core.StoreError) as exc:
            raise CliError(f"the compacted copy does not read back ({describe(exc)}); "
                           "the store was left as it was") from None
        with FolderLock(folder):
            os.rename(os.path.join(work, "data.mdb"), os.path.join(folder, "data.mdb"))
            try:
                os.unlink(os.path.join(folder, "lock.mdb"))
            except FileNotFoundError:
                pass
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(owned)
    print(f"compacted {folder}: {format_size(before)} -> {format_size(after)} "
          f"({count} {'entry' if count == 1 else 'entries'})")
    return 0


def cmd_prune(ns) -> int:
    folder = cache_folder()
    if not has_store(folder):
        print(f"no cache at {folder}: nothing to prune")
        return 0
    with open_store(folder, readonly=False) as store:
        # Least recently hit first; among entries never hit (or hit at the
        # same time), the oldest (store_scan.c).
        removed, removed_size, left, left_size = store.prune(ns.max_size)
    if not removed:
        print(f"nothing to prune: {format_size(left_size)} fits in {format_size(ns.max_size)}")
        return 0
    print(f"removed {removed} {'entry' if removed == 1 else 'entries'} "
          f"({format_size(removed_size)}); {format_size(left_size)} left in {left}")
    return 0
