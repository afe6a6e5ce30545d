"""Imported only by the fork server of driving.envpool.worker_context (its preload list), never by
a command's own process: the server dies with the command, so its workers (whose parent-death
signal is tied to the server) die with it at once, as spawned workers do with their parent."""
from driving.envpool import die_with_parent

die_with_parent()
