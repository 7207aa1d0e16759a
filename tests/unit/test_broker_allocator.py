"""When `secondline serve` starts itself again on the system allocator (broker/allocator.py)."""

from __future__ import annotations

from broker.allocator import system_malloc_argv


def test_serve_restarts_with_the_same_command_line_and_malloc() -> None:
    """Without an allocator chosen, the same command line runs again with PYTHONMALLOC=malloc
    and one glibc arena (unless that was chosen), the rest of the environment unchanged."""
    argv = ["/usr/bin/python3", "-m", "broker.cli.main", "serve"]
    env = {"HOME": "/h", "PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "1"}
    assert system_malloc_argv({"HOME": "/h"}, argv) == (argv, env)
    given = {"MALLOC_ARENA_MAX": "4"}
    assert system_malloc_argv(given, argv) == (argv, {**given, "PYTHONMALLOC": "malloc"})


def test_a_chosen_allocator_or_an_unknown_command_line_is_left_alone() -> None:
    """Whoever set PYTHONMALLOC (even to pymalloc) is obeyed, and the restart that set it
    does not restart again; without a command line there is nothing to repeat."""
    assert system_malloc_argv({"PYTHONMALLOC": "pymalloc"}, ["python3", "x"]) is None
    assert system_malloc_argv({"PYTHONMALLOC": "malloc"}, ["python3", "x"]) is None
    assert system_malloc_argv({}, []) is None
