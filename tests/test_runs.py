"""Run folders: numbered by default, a taken name gets -2, -3 (never s3 -> s31)."""

from poser.runs import new_run_dir


def test_run_folders_are_numbered_and_names_never_run_together(tmp_path):
    assert [new_run_dir(tmp_path).name for _ in range(3)] == ["exp1", "exp2", "exp3"]
    assert [new_run_dir(tmp_path, "s3").name for _ in range(3)] == ["s3", "s3-2", "s3-3"]
    assert new_run_dir(tmp_path).name == "exp4"
