"""Training: the Learner, its callbacks, schedules, the LR finder, checkpoints, torchrun."""

from reslab.training.callback import (
    EVENTS,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    TrainingDiverged,
)
from reslab.training.checkpoint import SaveCheckpoint, get_rng_state, set_rng_state
from reslab.training.distributed import DistributedCallback, dist_info, init_distributed
from reslab.training.learner import Learner
from reslab.training.loggers import (
    CSVLogger,
    EarlyStopping,
    ProgressCallback,
    Recorder,
    TensorBoardCallback,
    TerminateOnNaN,
)
from reslab.training.lr_find import LRFinder, LRFindResult, lr_find, suggest_lr
from reslab.training.metrics import (
    Accuracy,
    EvalResult,
    Metric,
    TopKAccuracy,
    evaluate,
    get_metric,
)
from reslab.training.optim import create_optimizer, param_groups
from reslab.training.runner import TrainConfig, run_training
from reslab.training.schedule import OneCycleSchedule, StepSchedule, one_cycle, step_lr
from reslab.training.tricks import (
    EMA,
    ChannelsLast,
    GradientAccumulation,
    GradientClip,
    MixedPrecision,
)

__all__ = [
    "EMA",
    "EVENTS",
    "Accuracy",
    "CSVLogger",
    "Callback",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "CancelStepException",
    "ChannelsLast",
    "DistributedCallback",
    "EarlyStopping",
    "EvalResult",
    "GradientAccumulation",
    "GradientClip",
    "LRFindResult",
    "LRFinder",
    "Learner",
    "Metric",
    "MixedPrecision",
    "OneCycleSchedule",
    "StepSchedule",
    "ProgressCallback",
    "Recorder",
    "SaveCheckpoint",
    "TensorBoardCallback",
    "TerminateOnNaN",
    "TopKAccuracy",
    "TrainConfig",
    "TrainingDiverged",
    "create_optimizer",
    "dist_info",
    "evaluate",
    "get_metric",
    "get_rng_state",
    "init_distributed",
    "lr_find",
    "one_cycle",
    "step_lr",
    "param_groups",
    "run_training",
    "set_rng_state",
    "suggest_lr",
]
