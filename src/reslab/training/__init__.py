"""Training: the engine — the Learner, its declared callback events, callbacks (one family
per file), schedules, the optimizer, metrics, the LR finder, distributed runs, resumable
checkpoints. The runs behind ``reslab train``/``finetune`` live in :mod:`reslab.recipes`."""

from reslab.training.callback import (
    EVENTS,
    LIFECYCLE_EVENTS,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    TrainingDiverged,
)
from reslab.training.channels_last import ChannelsLast
from reslab.training.checkpoint import (
    SaveCheckpoint,
    add_checkpoint_meta,
    get_rng_state,
    read_checkpoint_meta,
    set_rng_state,
)
from reslab.training.compile import Compile
from reslab.training.distributed import (
    DistContext,
    DistributedCallback,
    cleanup_distributed,
    convert_sync_batchnorm,
    dist_info,
    init_distributed,
)
from reslab.training.ema import EMA
from reslab.training.extra_eval import ExtraValidation
from reslab.training.gradients import GradientAccumulation, GradientClip
from reslab.training.host_memory import (
    HOST_MEMORY_ENV,
    host_memory_policy,
    keep_freed_host_memory,
)
from reslab.training.learner import Learner
from reslab.training.loggers import CSVLogger, TensorBoardCallback
from reslab.training.losses import NegativeSamplingCallback, NegativeSamplingLoss
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
from reslab.training.precision import MixedPrecision, bf16_is_fast
from reslab.training.progress import ProgressCallback
from reslab.training.recorder import Recorder
from reslab.training.schedule import OneCycleSchedule, StepSchedule, one_cycle, step_lr
from reslab.training.stopping import EarlyStopping, TerminateOnNaN

__all__ = [
    "EMA",
    "EVENTS",
    "LIFECYCLE_EVENTS",
    "Accuracy",
    "CSVLogger",
    "Callback",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "CancelStepException",
    "ChannelsLast",
    "Compile",
    "DistContext",
    "DistributedCallback",
    "EarlyStopping",
    "EvalResult",
    "ExtraValidation",
    "GradientAccumulation",
    "GradientClip",
    "HOST_MEMORY_ENV",
    "LRFindResult",
    "LRFinder",
    "Learner",
    "Metric",
    "MixedPrecision",
    "NegativeSamplingCallback",
    "NegativeSamplingLoss",
    "OneCycleSchedule",
    "ProgressCallback",
    "Recorder",
    "SaveCheckpoint",
    "add_checkpoint_meta",
    "StepSchedule",
    "TensorBoardCallback",
    "TerminateOnNaN",
    "TopKAccuracy",
    "TrainingDiverged",
    "bf16_is_fast",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "create_optimizer",
    "dist_info",
    "evaluate",
    "get_metric",
    "get_rng_state",
    "host_memory_policy",
    "init_distributed",
    "keep_freed_host_memory",
    "lr_find",
    "one_cycle",
    "param_groups",
    "read_checkpoint_meta",
    "set_rng_state",
    "step_lr",
    "suggest_lr",
]
