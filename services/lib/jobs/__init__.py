"""The job framework: what every long job (tuning, compression, weight validation) shares.

``executor``: the interface for "run this job's work somewhere and stream back its logs, progress
and checkpoints"; ``local_process``: the executor that runs it in a child process on this machine.
``runner`` and ``watchdog``: the worker side (claim, lease, heartbeat, logs, end, recovery).
``resources`` and ``api``: the API side, one resource layer for every kind (list, detail, delete,
stop, continue, logs), described by the kind's ``JobResource``.
"""
