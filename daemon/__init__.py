"""memori_daemon: the long-running augmentation process (installed from ``daemon/``).

One daemon per store, guarded by a locked pidfile; it drains the store's job queue and waits
for the next commit. ``memori daemon start|stop|status|run|logs|install`` drive it.
"""

from .pidfile import DaemonStatus, heartbeat_path, log_path, pidfile_path, status

__all__ = ["DaemonStatus", "heartbeat_path", "log_path", "pidfile_path", "status"]
