"""`Stopped`: a run ended on SIGTERM / SIGUSR1 after writing last.pt (torch-free, so the CLI can catch it cheaply)."""


class Stopped(Exception):
    """The run stopped on a signal after writing last.pt; `--resume` continues it exactly."""
