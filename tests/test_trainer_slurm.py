"""`trainer slurm`: the sbatch script's directives and resume logic, and the script itself run end to end with
stand-ins for srun and scontrol (no SLURM here): SIGUSR1 to the batch shell reaches the training process through
torchrun, last.pt is saved, the job asks to be requeued, and the rerun resumes to an uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_trainer_resume import _assert_equal, _states
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS

from trainer.cli import main
from trainer.slurm import SlurmJob, render

REPO = Path(__file__).resolve().parents[1]
ALLOCATION = ["--nodes", "2", "--gpus-per-node", "4", "--time", "04:00:00", "--partition", "gpu"]


def _script(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    flags = ["--data-kind", "medmnist", "--data-path", "/data/a b.npz", "--epochs", "10", "--batch-size", "64"]
    assert main(["slurm", *flags, *ALLOCATION, "--output-dir", str(tmp_path / "run"), *extra]) == 0
    return capsys.readouterr().out


def test_script_directives_launch_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path, capsys, "--account", "proj1")
    directives = [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "--job-name=trainer", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=32",
        "--time=04:00:00", "--partition=gpu", "--account=proj1", f"--output={tmp_path}/run/slurm-%j.out",
        "--signal=B:SIGUSR1@90", "--requeue",
    ]  # fmt: skip
    assert 'srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node 4' in script
    assert '--rdzv-backend c10d --rdzv-endpoint "$HEAD_NODE:29500"' in script
    assert "-m trainer train --data-kind medmnist --data-path '/data/a b.npz'" in script  # quoted as given
    assert f'--output-dir {tmp_path}/run "${{RESUME[@]}}" &' in script
    assert 'if [ -f "$OUTPUT_DIR/last.pt" ]; then RESUME=(--resume); fi' in script
    assert "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in script  # torchrun passes SIGUSR1 on
    assert "trap forward USR1" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)  # syntax

    written = tmp_path / "written.sh"
    assert main(["slurm", *ALLOCATION, "--output-dir", str(tmp_path / "run"), "--write", str(written)]) == 0
    assert "--account" not in written.read_text() and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "the script sets the output dir and --resume itself"),
        (["--time", "4h"], "--time must be HH:MM:SS or D-HH:MM:SS, got '4h'"),
        (["--nodes", "0"], "--nodes must be at least 1, got 0"),
    ],
)
def test_refuses_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["slurm", *ALLOCATION, "--output-dir", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_misspelt_train_flag_is_caught_before_the_job(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["slurm", *ALLOCATION, "--output-dir", str(tmp_path), "--epochz", "3"])
    assert exit_info.value.code == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_slurm(bin_dir: Path, requeued: Path) -> None:
    """srun runs its command here; scontrol names this host and records a requeue."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(
        f'#!/bin/bash\nif [ "$1" = show ]; then echo 127.0.0.1; else echo "$@" >> {requeued}; fi\n'
    )
    for name in ("srun", "scontrol"):
        (bin_dir / name).chmod(0o755)


@pytest.mark.slow
def test_sigusr1_saves_requeues_and_the_rerun_resumes_exactly(tmp_path: Path) -> None:
    """One node, one process, on the CPU: the job script as sbatch would run it, signalled after epoch 1."""
    flags = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "64", *QUICK_FLAGS,
             "--batch-size", "8", "--epochs", "3", "--workers", "0", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "trainer", "train", *flags, "--output-dir", str(straight)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)  # fmt: skip

    job_dir, requeued = tmp_path / "job", tmp_path / "requeued"
    job = SlurmJob(tuple(flags), str(job_dir), nodes=1, gpus_per_node=1, time="00:10:00", partition="debug",
                   cpus_per_task=1, port=_free_port())  # fmt: skip
    script = tmp_path / "job.sh"
    script.write_text(render(job))
    _fake_slurm(tmp_path / "bin", requeued)
    env |= {"PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}", "SLURM_JOB_ID": "42",
            "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "node1"}  # fmt: skip

    first = subprocess.Popen(["bash", str(script)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (job_dir / "last.pt").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGUSR1)  # what `--signal=B:SIGUSR1@90` does before the time limit
    output, _ = first.communicate(timeout=240)
    assert "stopped: stopped by SIGUSR1 in epoch" in output, output[-3000:]
    assert requeued.read_text() == "requeue 42\n"
    assert not (job_dir / "metrics.json").exists()

    rerun = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stderr and (job_dir / "metrics.json").is_file()
    assert requeued.read_text() == "requeue 42\n"  # a finished run is not requeued
    _assert_equal(_states(straight / "last.pt"), _states(job_dir / "last.pt"))
