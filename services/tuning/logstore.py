"""Job logs: lines in MongoDB (searchable, downloadable) and, when asked, a permanent copy in the
user's bucket (guide: 永久保存日志); the mechanics are services.common.jobs.JobLogs."""
from __future__ import annotations

from services.common.jobs import JobLogs
from services.tuning.models import JOBS, LOGS

_LOGS = JobLogs(jobs=JOBS, logs=LOGS)
append_lines = _LOGS.append
render = _LOGS.render
permanent_log_path = _LOGS.permanent_path
upload_permanent_log = _LOGS.upload_permanent
