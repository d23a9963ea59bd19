"""`python -m trainer slurm [train flags] --nodes N --gpus-per-node G ...`: an sbatch script for a DDP run.

One resumable output directory: the script passes `--resume` when DIR/last.pt exists, so a requeued job
continues where it stopped. SLURM sends the batch shell SIGUSR1 90 s before the time limit; the trap
forwards it through srun to torchrun, which hands it to every training process (--signals-to-handle);
they save last.pt at the next batch boundary and exit 0, and the job requeues itself. Torch-free.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PORT = 29500
WARNING_SECONDS = 90
_TIME = re.compile(r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$")
_OWN_FLAGS = ("--resume", "--output-dir")  # the script sets them


@dataclass(frozen=True)
class SlurmJob:
    """The allocation and the train flags of one sbatch script."""

    train_args: tuple[str, ...]
    output_dir: str
    nodes: int
    gpus_per_node: int
    time: str
    partition: str
    cpus_per_task: int
    account: str | None = None
    job_name: str = "trainer"
    port: int = PORT

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not _TIME.match(self.time):
            raise ValueError(f"--time must be HH:MM:SS or D-HH:MM:SS, got {self.time!r}")
        own = [arg for arg in self.train_args if arg.split("=")[0] in _OWN_FLAGS]
        if own:
            raise ValueError(f"{', '.join(own)}: the script sets the output dir and --resume itself")


def render(job: SlurmJob) -> str:
    """The sbatch script for `job`."""
    output_dir = shlex.quote(job.output_dir)
    directives = [
        f"--job-name={job.job_name}",
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",  # one torchrun per node; it starts one training process per GPU
        f"--gpus-per-node={job.gpus_per_node}",
        f"--cpus-per-task={job.cpus_per_task}",
        f"--time={job.time}",
        f"--partition={job.partition}",
        *([f"--account={job.account}"] if job.account else []),
        f"--output={job.output_dir}/slurm-%j.out",
        f"--signal=B:SIGUSR1@{WARNING_SECONDS}",  # B: to this batch shell, whose trap forwards it
        "--requeue",
    ]
    train = shlex.join(["-m", "trainer", "train", *job.train_args, "--output-dir", job.output_dir])
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {directive}" for directive in directives),
        "# Written by `python -m trainer slurm`; --batch-size is per GPU. The output dir must exist before sbatch.",
        "set -uo pipefail",
        f"OUTPUT_DIR={output_dir}",
        'mkdir -p "$OUTPUT_DIR"',
        "RESUME=()",
        'if [ -f "$OUTPUT_DIR/last.pt" ]; then RESUME=(--resume); fi  # a requeued job continues the run',
        'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export TORCH_ELASTIC_SHUTDOWN_TIMEOUT={WARNING_SECONDS - 10}  # seconds to save before torchrun kills",
        "STOPPING=0",
        'forward() { STOPPING=1; kill -USR1 "$SRUN_PID" 2>/dev/null; }  # srun forwards it to its tasks',
        "trap forward USR1",
        f'srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node {job.gpus_per_node} \\',
        "    --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \\",  # torchrun hands them to its workers
        f'    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD_NODE:{job.port}" \\',
        f'    {train} "${{RESUME[@]}}" &',
        "SRUN_PID=$!",
        'wait "$SRUN_PID"; STATUS=$?',
        'while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID"; STATUS=$?; done  # the trap interrupts wait',
        'if [ "$STOPPING" = 1 ] && [ -f "$OUTPUT_DIR/last.pt" ]; then',
        '    echo "stopped before the time limit; last.pt saved: requeueing $SLURM_JOB_ID"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$STATUS"',
    ]
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer slurm",
        allow_abbrev=False,  # an abbreviation must never swallow a train flag
        description="Write an sbatch script for a DDP run; every flag not listed here is passed to `trainer train`.",
    )
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, required=True, help="training processes per node")
    parser.add_argument("--time", required=True, help="the job's time limit, HH:MM:SS or D-HH:MM:SS")
    parser.add_argument("--partition", required=True)
    parser.add_argument("--output-dir", required=True, help="the run's one resumable output dir (shared storage)")
    parser.add_argument("--account")
    parser.add_argument("--cpus-per-task", type=int, help="CPUs for each node's task (default 8 per GPU)")
    parser.add_argument("--job-name", default="trainer")
    parser.add_argument("--port", type=int, default=PORT, help="the rendezvous port on the first node")
    parser.add_argument("--write", metavar="FILE", help="write the script here (default: print it)")
    return parser


def main(argv: Sequence[str]) -> int:
    args, train_args = get_args_parser().parse_known_args(argv)
    from trainer.cli import get_args_parser as train_parser  # torch-free; catches a misspelt train flag here

    try:
        train_parser().parse_args(["train", *train_args])
        job = SlurmJob(
            train_args=tuple(train_args),
            output_dir=args.output_dir,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            time=args.time,
            partition=args.partition,
            cpus_per_task=args.cpus_per_task or 8 * args.gpus_per_node,
            account=args.account,
            job_name=args.job_name,
            port=args.port,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    script = render(job)
    if args.write is None:
        sys.stdout.write(script)
    else:
        Path(args.write).write_text(script)
        print(f"wrote {args.write}: mkdir -p {job.output_dir} (SLURM writes its log there), then sbatch {args.write}",
              file=sys.stderr)  # fmt: skip
    return 0
