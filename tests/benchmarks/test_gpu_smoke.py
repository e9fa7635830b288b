"""benchmarks/gpu.py --cpu-smoke: every step of the GPU readiness script runs on CPU with tiny shapes and
writes its summary; the steps that need CUDA or two GPUs say why they were skipped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)  # about 45 s on a busy 2-core machine; the script is meant to stay under a minute
def test_gpu_script_cpu_smoke(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--cpu-smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["cpu_smoke"] is True and summary["device"] == "cpu"
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["cuda-tests", "encoder", "encoder-passt", "encoder-beats", "pack", "train-dp",
                           "train-tha+dcr", "ddp-nccl"]
    assert steps["cuda-tests"]["status"] == "skip" and steps["ddp-nccl"]["status"] == "skip"
    assert "needs 2 GPUs" in steps["ddp-nccl"]["detail"]
    assert steps["encoder"]["status"] in ("ok", "skip")  # skip only without the LAION-CLAP reference
    for encoder, preset in (("passt", "passt-test"), ("beats", "beats-test")):  # skip only without the reference
        step = steps[f"encoder-{encoder}"]
        assert step["status"] == "skip" and "reference unavailable" in step["detail"] or step["status"] == "ok"
        if step["status"] == "ok":
            data = step["data"]
            assert data["encoder"] == preset and data["device"] == "cpu" and len(data["max_diff"]["levels"]) == 3
            assert max(data["max_diff"]["levels"] + [data["max_diff"]["pooled"]]) <= 1e-4
            assert all(row["hade_clips_s"] > 0 and row["reference_clips_s"] > 0 for row in data["rows"])
    for head in ("dp", "tha+dcr"):
        data = steps[f"train-{head}"]["data"]
        assert steps[f"train-{head}"]["status"] == "ok"
        assert data["head"] == head and data["batch"] == 4 and data["clips_per_s"] > 0
        assert 0.0 <= data["data_wait_share"] < 1.0 and data["loss"] > 0
    assert "hade GPU readiness (CPU smoke)" in proc.stdout  # the one-screen summary
    assert all(name in proc.stdout for name in steps)
