#!/usr/bin/env python3
"""Pages a commit writes, by b-tree: reads WAL snapshots (copies of a live database and its -wal
file) and names the table or index owning each frame's page (SQLite's dbstat).

usage: wal-frames.py WRITES_PER_COMMIT DB1 [DB2 ...]   (each DBn has DBn-wal beside it)

Prints frames per commit and, divided by the run's writes per commit, frames per clock event,
in total and per b-tree. Only frames of the WAL's current generation (its header's salts) count.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile


def frames_of(wal_path):
    data = open(wal_path, "rb").read()
    page_size, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    frames, commits, off = [], 0, 32
    while off + 24 + page_size <= len(data) and data[off + 8:off + 16] == salts:
        page, size_after = struct.unpack(">II", data[off:off + 8])
        frames.append(page)
        commits += size_after != 0
        off += 24 + page_size
    return frames, commits


def owners(db_path, wal_path):
    """Page number -> b-tree name, read from a copy (opening it checkpoints the copy, never the live file)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "copy.db")
        shutil.copy(db_path, copy)
        shutil.copy(wal_path, copy + "-wal")
        conn = sqlite3.connect(copy)
        found = dict((p, n) for n, p in conn.execute("SELECT name, pageno FROM dbstat"))
        conn.close()
        return found


def main():
    writes_per_commit = float(sys.argv[1])
    by_tree, frames_total, commits_total = collections.Counter(), 0, 0
    for db in sys.argv[2:]:
        frames, commits = frames_of(db + "-wal")
        names = owners(db, db + "-wal")
        by_tree.update(names.get(p, "(freed)") for p in frames)
        frames_total += len(frames)
        commits_total += commits
    per_event = commits_total * writes_per_commit
    print(f"{commits_total} commits, {frames_total} frames: {frames_total / commits_total:.1f} per commit, "
          f"{frames_total / per_event:.2f} per clock event")
    for name, n in by_tree.most_common():
        print(f"{n / per_event:6.2f}  {name}")


if __name__ == "__main__":
    main()
