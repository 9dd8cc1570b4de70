"""S3 -> file: parallel ranged GETs, in-order sinks, retries, a resume journal. Knows nothing about models.

One module per concern: `objects` (what is copied, per-part checks), `config` (sizes and the memory
budget), `engine` (workers and the in-order feeder), `retry`, `journal` (the file seam is `bigpickle.osutils`),
`progress`.
"""

from bigpickle.osutils import OSUtils
from bigpickle.transfer.config import READ_SIZE, TransferConfig
from bigpickle.transfer.engine import DownloadResult, HoldingSink, download
from bigpickle.transfer.objects import ObjectInfo, head_object
from bigpickle.transfer.progress import Progress, ProgressCallback
from bigpickle.transfer.retry import RetryPolicy

__all__ = [
    "READ_SIZE",
    "DownloadResult",
    "HoldingSink",
    "OSUtils",
    "ObjectInfo",
    "Progress",
    "ProgressCallback",
    "RetryPolicy",
    "TransferConfig",
    "download",
    "head_object",
]
