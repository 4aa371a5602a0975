"""The ``model`` mode: a simpy queueing model of a session-server deployment, calibrated from live runs.

Live runs measure one machine; users plan for 10^5 sessions on 64 processes.
This package predicts the ``chat_done`` timing buckets for such deployments
from a small set of CPU costs fitted on a live run (:func:`calibrate`), the
fake SGLang's own latency models and fault rules, and the agents' behaviour
(:func:`run_model`). ``harness model`` is the command (docs/model.md).
"""

from __future__ import annotations

from ._calibrate import Calibration, Fit, calibrate, load_calibration
from ._params import Costs, Deployment, ModelParams, ParamsError, Tokens, Workload, from_scenario, load_params
from ._sim import BUCKETS, ModelResult, run_model

__all__ = [
    "BUCKETS",
    "Calibration",
    "Costs",
    "Deployment",
    "Fit",
    "ModelParams",
    "ModelResult",
    "ParamsError",
    "Tokens",
    "Workload",
    "calibrate",
    "from_scenario",
    "load_calibration",
    "load_params",
    "run_model",
]
