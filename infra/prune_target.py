#!/usr/bin/env python3
"""Keeps a long-lived cargo target directory at about one build's size.

Every change to a crate links its binaries and libraries under a new hash
and leaves the old ones: a target directory reused across CI runs grows
without bound (tens of GB after a few weeks). This removes the build
artifacts no build has read or written for a few days. The disk is mounted
`relatime`, so a file read by a build has an access time under a day older
than that read: anything a current build uses stays.
"""

import os
import sys
import time

UNUSED_DAYS = 3


def main():
    target = sys.argv[1]
    cutoff = time.time() - UNUSED_DAYS * 24 * 3600
    freed = 0
    for folder, subfolders, files in os.walk(target):
        if os.path.basename(folder) != "deps":
            continue
        subfolders.clear()
        for name in files:
            path = os.path.join(folder, name)
            info = os.stat(path)
            if max(info.st_atime, info.st_mtime) < cutoff:
                freed += info.st_size
                os.remove(path)
    print(f"{target}: {freed / 2**30:.1f} GiB of build artifacts unused for {UNUSED_DAYS} days removed")


if __name__ == "__main__":
    main()
