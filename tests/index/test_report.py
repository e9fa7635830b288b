"""`build_index` returns a `BuildReport`; its JSON form (`hade index --json`) keeps the keys of the statistics
dict it replaced, which users parse."""
from __future__ import annotations

import json

from hade.apps.index import _print_report
from hade.cli import main
from hade.index import BuildReport, FileProblem, build_index
from hade.index.ann import AnnParams

# the keys, in order, that `hade index --json` printed while build_index returned a dict
JSON_KEYS = ["files_seen", "unchanged_files", "hashed_files", "touched_files", "reused_files", "encoded_files",
             "encoded_windows", "encoder_calls", "removed_files", "commits", "captioned_files", "recaptioned_files",
             "errors", "new_errors", "notes", "skipped", "repaired", "ann", "files", "windows", "seconds"]
ANN_KEYS = {"kind", "count", "dim", "nlist", "nprobe", "trained_on", "generation", "file", "code", "precomputed_table"}


def test_a_build_reports_typed_fields_and_the_json_keys_of_before(dp_ckpt, fresh_data, tmp_path, capsys):
    (fresh_data / "broken.wav").write_bytes(b"RIFF\x00\x00 this is not audio" * 10)
    out = tmp_path / "idx"
    report = build_index(fresh_data, out, dp_ckpt, progress=False)
    assert isinstance(report, BuildReport) and isinstance(report.ann, AnnParams) and report.ann.kind == "flat"
    assert len(report.errors) == 1 and isinstance(report.errors[0], FileProblem) and report.errors[0].reason
    assert report.errors == report.new_errors and report.errors[0].path == "broken.wav"
    assert (report.encoded_files, report.files, report.windows) == (24, 24, 24)
    as_json = report.to_dict()
    assert list(as_json) == JSON_KEYS and set(as_json["ann"]) == ANN_KEYS and as_json["ann"]["kind"] == "flat"
    assert as_json["errors"] == [{"path": "broken.wav", "reason": report.errors[0].reason}]
    exchanged = BuildReport.from_dict(json.loads(json.dumps(as_json)))  # what rank 0 of a parallel run reads
    assert exchanged == report
    _print_report(out, exchanged)
    printed = capsys.readouterr()
    assert "24 files, 24 windows (flat ANN); this run: 24 encoded" in printed.out
    assert "skipped broken.wav: " in printed.err

    assert main(["index", str(fresh_data), "--out", str(out), "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == JSON_KEYS and set(printed["ann"]) == ANN_KEYS
    assert (printed["unchanged_files"], printed["encoded_files"], printed["files"]) == (25, 0, 24)
    assert printed["errors"] == as_json["errors"] and printed["new_errors"] == printed["skipped"] == []
