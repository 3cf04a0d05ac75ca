"""Run organize_data.py's command line and SIGKILL the process after N steps that change the disk, to test
that a killed run resumes. Test-side only: the library has no kill hook.

    python tests/organize_killer.py N [organize_data.py arguments...]
    killed = run_killed(2500, "--source", str(source), "--set", f"data_path={data}")   # from a test

A step is a file placed (an image into its class folder, or a label into yolo_labels/: every call of
placing.Transfer) or a folder removed by the tidy-up (placing.remove_if_empty returning True). The kill
comes right after the step, before the run records it, as a real kill would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_killed(steps: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run organize_data.py with args, killed after `steps` steps (returncode -9 when it got that far)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, __file__, str(steps), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def kill_after(steps: int) -> None:
    """Wrap the library's disk-changing calls so that the process dies after `steps` of them."""
    from emotion.data import placing
    done = [0]

    def step() -> None:
        done[0] += 1
        if done[0] >= steps:
            os.kill(os.getpid(), signal.SIGKILL)

    transfer = placing.Transfer.__call__
    remove = placing.remove_if_empty

    def counted_transfer(self, src: str, dst: str) -> None:
        transfer(self, src, dst)
        step()

    def counted_remove(folder: str) -> bool | None:
        removed = remove(folder)
        if removed:
            step()
        return removed

    placing.Transfer.__call__ = counted_transfer
    placing.remove_if_empty = counted_remove


if __name__ == "__main__":
    import organize_data
    from emotion.common import cli

    kill_after(int(sys.argv[1]))
    cli.run(organize_data.main, sys.argv[2:])
