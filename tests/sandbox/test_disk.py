"""Measuring a call's working directory (sandbox/zygote/disk.py): bounded steps, allocated sizes."""

import os
from pathlib import Path

from sandbox.zygote.disk import DiskScan, tree_size


def make_tree(root: Path, dirs: int, files_per_dir: int) -> None:
    for d in range(dirs):
        sub = root / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        for f in range(files_per_dir):
            (sub / f"f{f}").write_bytes(b"x" * 5000)


class TestDiskScan:
    def test_steps__walk_a_big_tree_a_bounded_number_of_entries_at_a_time(self, tmp_path):
        """A tree of 2,540 entries takes several 1,000-entry steps and totals the whole tree."""
        make_tree(tmp_path, dirs=20, files_per_dir=125)
        scan = DiskScan(str(tmp_path))
        steps = 1
        while not scan.step(1000):
            steps += 1
        assert steps == 3
        assert scan.total == tree_size(str(tmp_path)) > 2500 * 4096

    def test_restart__measures_again_from_scratch(self, tmp_path):
        """After restart a walk sees what was added or removed since the last one."""
        (tmp_path / "a").write_bytes(b"x" * 100_000)
        scan = DiskScan(str(tmp_path))
        assert scan.step(10)
        first = scan.total
        os.remove(tmp_path / "a")
        scan.restart()
        assert scan.step(10)
        assert (first > 0, scan.total) == (True, 0)

    def test_empty_or_vanished_directory__measures_zero(self, tmp_path):
        """An empty directory is 0 bytes; one removed under the walk is 0, not an error."""
        assert tree_size(str(tmp_path)) == 0
        assert tree_size(str(tmp_path / "gone")) == 0
