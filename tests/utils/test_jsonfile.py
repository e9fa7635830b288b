"""read_json: a missing file or bad JSON is an InputError naming the file, line and column."""
import pytest

from hade.errors import InputError
from hade.utils.jsonfile import read_json


def test_read_json_names_the_file_and_where_it_breaks(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text('{"a": 1,\n "b": }')
    with pytest.raises(InputError, match=r"bad\.json: invalid JSON at line 2, column 7"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(InputError, match=r"gone\.json: run result not found"):
        read_json(tmp_path / "gone.json", "run result")
