"""Imported only by the fork server of driving.envpool.worker_context, first in its preload list,
never by a command's own process: the server dies with the command that started it, so its workers
(whose parent-death signal is tied to the server) die with it at once, as spawned workers do with
their parent. The workers it forks learn its pid from its environment."""
import os
import signal

# Ctrl-C reaches the whole process group: the server would print a KeyboardInterrupt traceback from the
# imports it preloads (multiprocessing ignores SIGINT in it only after them). The command stops it.
signal.signal(signal.SIGINT, signal.SIG_IGN)

from driving.parent_death import CLIENT_ENV, SERVER_ENV, die_with_parent, expected_parent  # noqa: E402

die_with_parent(expected_parent(CLIENT_ENV))
os.environ[SERVER_ENV] = str(os.getpid())
