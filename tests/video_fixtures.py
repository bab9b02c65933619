"""A small moving-digits set, built once per test session, for any test module to import:

    pytest_plugins = ["video_fixtures"]  # in the test module: its fixtures become available by name

`folder` holds the H.264 files and their manifest: pass it as --data-dir (or `LoadRequest.data_dir`) and
moving-digits loads these 48 clips, keeping the manifest's sizes, instead of generating the full 1,000. Do not
write into it: it is shared by every test of the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from dstbench.data.sources import FileSplits
from dstbench.report import PlainReporter
from dstbench_plugins.video_datasets import MOVING_DIGITS, ensure_moving_digits

SMALL_MOVING_DIGITS_SIZES = {"train": 32, "test": 16}  # four (train) and two (test) clips of each of the 8 classes


class SmallMovingDigits(NamedTuple):
    folder: Path
    files: FileSplits


@pytest.fixture(scope="session")
def small_moving_digits(tmp_path_factory: pytest.TempPathFactory) -> SmallMovingDigits:
    folder = tmp_path_factory.mktemp("small-moving-digits") / MOVING_DIGITS
    files = ensure_moving_digits(folder, PlainReporter(quiet=True), SMALL_MOVING_DIGITS_SIZES)
    return SmallMovingDigits(folder, files)
