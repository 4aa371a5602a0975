"""Runners: take a validated scenario, run it, leave a run folder behind.

``live`` (this package's ``run_scenario``) uses real processes and loopback
sockets; ``sim`` (harness.sim) will run the same agents, workload and nemesis
in one process on a virtual-time loop. Both write the same run folder
(harness.rundata), so checkers and reports never know which one ran.
"""

from harness.runner._drive import DriveResult, drive
from harness.runner._inproc import run_inprocess
from harness.runner._live import RunResult, read_server_logs, run_dir_name, run_scenario
from harness.runner._suite import expand, find_scenarios, run_suite

__all__ = [
    "DriveResult",
    "RunResult",
    "drive",
    "expand",
    "find_scenarios",
    "read_server_logs",
    "run_dir_name",
    "run_inprocess",
    "run_scenario",
    "run_suite",
]
