"""hade.utils.outdir: an output folder is new, the command's own, or refused unless --force."""
from __future__ import annotations

import pytest

from hade.errors import InputError
from hade.utils.outdir import Claim, OutputKind, claim_output_dir, has_any

KIND = OutputKind("thing", has_any("thing.json"), scratch=(".lock",))
REPLACED = OutputKind("whole thing", has_any("thing.json"), replaces=True, contents=("thing.json", "parts"))


def test_new_empty_and_scratch_only_folders_are_taken(tmp_path):
    assert claim_output_dir(tmp_path / "missing", KIND) is Claim.NEW
    (tmp_path / "empty").mkdir()
    assert claim_output_dir(tmp_path / "empty", KIND) is Claim.NEW
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".lock").write_text("")
    assert claim_output_dir(tmp_path / "locked", KIND) is Claim.NEW


def test_someone_elses_folder_is_refused_unless_forced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"--out .*mine: exists and is not a thing \(it holds notes.txt\); give a new "
                                         r"or empty folder, or --force to write into it"):
        claim_output_dir(tmp_path / "mine", KIND)
    assert claim_output_dir(tmp_path / "mine", KIND, force=True) is Claim.FORCED
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="a file, not a folder"):
        claim_output_dir(tmp_path / "file", KIND, force=True)


def test_own_kind_is_taken_again_and_a_replaced_one_must_hold_nothing_else(tmp_path):
    out = tmp_path / "out"
    (out / "parts").mkdir(parents=True)
    (out / "thing.json").write_text("{}")
    assert claim_output_dir(out, KIND) is Claim.OWN
    assert claim_output_dir(out, REPLACED) is Claim.OWN
    (out / "notes.txt").write_text("keep me")
    assert claim_output_dir(out, KIND) is Claim.OWN  # written into, not replaced: the notes stay
    with pytest.raises(InputError, match="also holds notes.txt, which writing a new whole thing there would delete"):
        claim_output_dir(out, REPLACED, flag="OUT")
    assert claim_output_dir(out, REPLACED, force=True) is Claim.FORCED
