"""Imported only by the fork server of driving.envpool.worker_context, first in its preload list,
never by a command's own process: the server dies with the command that started it, so its workers
(whose parent-death signal is tied to the server) die with it at once, as spawned workers do with
their parent. The workers it forks learn its pid from its environment."""
import os
import signal
import sys

# Ctrl-C reaches the whole process group: the server would print a KeyboardInterrupt traceback from the
# imports it preloads (multiprocessing ignores SIGINT in it only after them). The command starts the
# server with SIGINT blocked (envpool._start_fork_server) so that interpreter start-up is covered too;
# ignored from here on, it can be unblocked (a pending Ctrl-C is discarded). The command stops it.
signal.signal(signal.SIGINT, signal.SIG_IGN)
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

from driving.parent_death import CLIENT_ENV, SERVER_ENV, die_with_parent, expected_parent  # noqa: E402

die_with_parent(expected_parent(CLIENT_ENV))
os.environ[SERVER_ENV] = str(os.getpid())
_SERVER = os.getpid()

# A process the server forks reads its job from the command before it runs it. When the command is
# stopping (Ctrl-C), the pipe is closed or the job's semaphores are already unlinked, and the fork
# server prints the child's traceback through sys.excepthook: a page of multiprocessing internals
# after the command's one line. Only those errors are silenced (a semaphore that cannot be opened
# again, a pipe that ended); any other, such as a script that moved, still prints.
_PIPE_GONE = (EOFError, ConnectionError)


def _command_gone(kind, tb) -> bool:
    if issubclass(kind, _PIPE_GONE):
        return True
    if not issubclass(kind, FileNotFoundError):
        return False
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(os.path.join("multiprocessing", "synchronize.py"))


def _quiet_when_command_gone(kind, value, tb):
    if os.getpid() != _SERVER and _command_gone(kind, tb):
        return
    sys.__excepthook__(kind, value, tb)


sys.excepthook = _quiet_when_command_gone
