"""``sieve tune`` refuses what it cannot tune on, in one line, before any indexing."""

import pytest
from click.testing import CliRunner

from api.cli import main

pytestmark = pytest.mark.unit


def test_tune_refuses_a_test_split_and_a_missing_folder(tmp_path):
    runner = CliRunner()
    got = runner.invoke(
        main, ["--data-dir", str(tmp_path), "tune", str(tmp_path), "--split", "test"]
    )
    assert got.exit_code == 2 and "'test' is not one of 'train', 'dev'" in got.output
    missing = tmp_path / "nowhere"
    got = runner.invoke(main, ["--data-dir", str(tmp_path), "tune", str(missing)])
    assert got.exit_code != 0 and str(missing) in got.output
    assert len(got.output.strip().splitlines()) == 1
