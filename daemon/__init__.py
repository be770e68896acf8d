"""memori_daemon: the long-running augmentation process (installed from ``daemon/``).

This release ships its pidfile handling, which ``memori doctor`` uses to report whether a
daemon is running; the worker loop arrives with the augmentation pipeline.
"""

from .pidfile import DaemonStatus, pidfile_path, status

__all__ = ["DaemonStatus", "pidfile_path", "status"]
