"""`hade index` under torchrun / Slurm: rank and world from the environment, shards merged by rank 0."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hade.cli import main
from hade.errors import InputError
from hade.index import Index
from hade.index.launch import shard_dirs
from hade.utils.launch import Launch, detect_launch, rank_device

SLURM_STEP = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
              "SLURM_JOB_ID": "77"}


@pytest.mark.parametrize("env, expected", [
    ({}, Launch()),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, Launch(1, 2, 1, "torchrun")),
    ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, Launch()),  # world size 1: nothing changes
    (SLURM_STEP, Launch(3, 4, 1, "slurm", "77.0")),
    ({**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "8"}, Launch(3, 8, 1, "slurm", "77.0")),  # the step's tasks win
    ({k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_ID"}, Launch()),  # an sbatch script, not srun
    ({**SLURM_STEP, "RANK": "2", "WORLD_SIZE": "6", "LOCAL_RANK": "0"}, Launch(2, 6, 0, "torchrun")),
])
def test_detect_launch(env, expected):
    assert detect_launch(env) == expected


@pytest.mark.parametrize("env, match", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 of world size 2"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x'"),
    ({**SLURM_STEP, "SLURM_NTASKS": "two"}, "SLURM_NTASKS"),
])
def test_detect_launch_refuses_bad_values(env, match):
    with pytest.raises(InputError, match=match):
        detect_launch(env)


def test_rank_device_and_shard_folders(tmp_path):
    launch = Launch(1, 2, 1, "torchrun")
    assert rank_device("cuda", launch, visible_gpus=2) == "cuda:1" and rank_device("cpu", launch) == "cpu"
    assert rank_device("cuda", launch, visible_gpus=1) == "cuda:0"  # srun --gpus-per-task 1: its one GPU
    assert rank_device("cuda:3", launch, visible_gpus=4) == "cuda:3" and rank_device("cuda", Launch()) == "cuda"
    assert launch.shard == "1/2"
    assert shard_dirs(tmp_path / "idx", 2) == [tmp_path / "idx.shards" / "0-of-2", tmp_path / "idx.shards" / "1-of-2"]


def test_parallel_run_refuses_shard_merge_and_check(dp_ckpt, synth_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["index", str(synth_dir), "--ckpt", str(dp_ckpt), "--out", str(tmp_path / "idx"), "--quiet"]
    assert main([*argv, "--shard", "0/2"]) == 2
    assert "--shard 0/2: this is rank 0 of 2 started by torchrun" in capsys.readouterr().err
    assert main(["index", "merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists() and not (tmp_path / "idx.shards").exists()


def _env() -> dict[str, str]:
    """The test's environment without any launcher variables of the shell that runs pytest."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")} | {
        "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["slurm", "env"])
def test_ranks_meet_through_the_store(tmp_path, launcher):
    """Plain srun (no MASTER_ADDR): a file store in the shards folder, removed by the last rank to leave;
    RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT without torchrun's agent: a TCP store hosted by rank 0."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        import gc
        from hade.index.launch import Meeting
        from hade.utils.launch import detect_launch
        launch = detect_launch()
        with Meeting(launch, Path({str(tmp_path / "meet")!r})) as meeting:
            print(meeting.gather({{"rank": launch.rank, "launcher": launch.launcher, "half": launch.rank / 2}}))
        gc.collect()
    """)
    port = _free_port()
    envs = [{"SLURM_PROCID": str(r), "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "4242"}
            if launcher == "slurm" else
            {"RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            for r in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env() | e) for e in envs]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    name = "slurm" if launcher == "slurm" else "torchrun"
    expected = str([{"rank": 0, "launcher": name, "half": 0.0}, {"rank": 1, "launcher": name, "half": 0.5}])
    assert [o.strip() for o, _ in outs] == [expected, expected]
    if launcher == "slurm":
        assert list((tmp_path / "meet").iterdir()) == []  # the rendezvous file goes with the last rank
    else:
        assert not (tmp_path / "meet").exists()  # a TCP store writes nothing


def _torchrun_index(folder, ckpt, out, *extra: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m hade.cli index FOLDER --ckpt CKPT --out OUT ...`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hade.cli",
           "index", str(folder), "--ckpt", str(ckpt), "--out", str(out), "--batch-size", "8", "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def test_two_rank_torchrun_index_equals_single_process(dp_ckpt, dp_index, synth_dir, tmp_path, windows_of):
    out = tmp_path / "idx"
    run = _torchrun_index(synth_dir, dp_ckpt, out, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)  # rank 0 alone prints
    assert report["parts"] == 2 and report["windows"] == 24 and report["files"] == 24
    assert sorted(s["encoded_files"] for s in report["shards"]) != [0, 24]  # both ranks did a share
    assert sum(s["encoded_files"] for s in report["shards"]) == 24
    assert all(d.is_dir() for d in shard_dirs(out, 2))

    single, parallel = windows_of(dp_index[0]), windows_of(out)
    assert parallel.keys() == single.keys()
    for key, (wid, arrays) in single.items():
        assert parallel[key][0] == wid
        np.testing.assert_allclose(parallel[key][1]["embed"], arrays["embed"], atol=1e-5)
    a, b = Index.open(dp_index[0]), Index.open(out)
    try:
        assert b.info().shard is None and b.info().fingerprint == a.info().fingerprint
        for query in ("a dog barks", "rain on a roof"):
            hits_a, hits_b = a.search(query, k=10), b.search(query, k=10)
            assert [(h.path, h.start) for h in hits_a] == [(h.path, h.start) for h in hits_b]
            np.testing.assert_allclose([h.score for h in hits_b], [h.score for h in hits_a], atol=1e-5)
    finally:
        a.close(), b.close()

    again = _torchrun_index(synth_dir, dp_ckpt, out, "--json")  # a re-run updates the kept shards, re-merges
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    assert [s["unchanged_files"] for s in report["shards"]] == [s["files"] for s in report["shards"]]
    assert sum(s["encoded_files"] for s in report["shards"]) == 0 and report["windows"] == 24
    assert windows_of(out).keys() == single.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "idx.shards"]  # no staging or old copy left


def test_a_failing_rank_stops_the_merge(dp_ckpt, synth_dir, tmp_path):
    out = tmp_path / "idx"
    blocked = shard_dirs(out, 2)[1]
    blocked.mkdir(parents=True)
    (blocked / "notes.txt").write_text("not an index")  # rank 1 refuses to build its shard here
    run = _torchrun_index(synth_dir, dp_ckpt, out)
    assert run.returncode != 0 and run.stdout == ""
    assert "1-of-2: exists and is not a hade index" in run.stderr
    assert "not merged, 1 of 2 ranks failed (rank 1: InputError:" in run.stderr
    assert not out.exists() and (shard_dirs(out, 2)[0] / "index.sqlite").is_file()  # rank 0's shard is kept


def test_each_torchrun_attempt_meets_under_its_own_keys(tmp_path, monkeypatch):
    """torchrun's agent store outlives a restart of its workers: a restarted attempt must not read the
    outcomes the ranks of the failed one left there."""
    from hade.index.launch import Meeting
    from torch.distributed import TCPStore

    port = _free_port()
    agent = TCPStore("127.0.0.1", port, 1, is_master=True, wait_for_workers=False)
    for name, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)),
                        ("TORCHELASTIC_USE_AGENT_STORE", "True")):
        monkeypatch.setenv(name, value)
    for attempt, value in (("1", {"attempt": 1}), ("2", {"attempt": 2})):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", attempt)
        with Meeting(Launch(0, 1, 0, "torchrun"), tmp_path / "meet") as meeting:
            assert meeting.gather(value) == [value]
        assert json.loads(agent.get(f"hade-index/outcome/{attempt}/0")) == value
    assert not (tmp_path / "meet").exists()


def test_a_rank_outcome_crosses_the_store_as_json_and_back():
    from hade.data.scan import FileProblem
    from hade.index.launch import RankOutcome
    from hade.index.report import BuildReport

    report = BuildReport(files=3, windows=5, errors=[FileProblem("x.wav", "unreadable")])
    wire = json.loads(json.dumps(RankOutcome(report).to_dict()))
    assert RankOutcome.from_dict(wire) == RankOutcome(report, None)
    failed = RankOutcome.from_dict(json.loads(json.dumps(RankOutcome(None, "InputError: no").to_dict())))
    assert failed.report is None and failed.error == "InputError: no"
