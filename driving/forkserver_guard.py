"""Imported only by the fork server of driving.envpool.worker_context, first in its preload list,
never by a command's own process: the server dies with the command that started it, so its workers
(whose parent-death signal is tied to the server) die with it at once, as spawned workers do with
their parent. The workers it forks learn its pid from its environment."""
import os

from driving.parent_death import CLIENT_ENV, SERVER_ENV, die_with_parent, expected_parent

die_with_parent(expected_parent(CLIENT_ENV))
os.environ[SERVER_ENV] = str(os.getpid())
