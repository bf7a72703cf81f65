"""What native code (TensorFlow's, XLA's and Gloo's C++) prints straight to the process's stdout or
stderr file descriptors, past Python's logging: captured while a block runs, to be filtered or
sent to the log file instead of the console."""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def captured(fds: tuple[int, ...] = (1, 2)) -> Iterator[list[str]]:
  """Redirects file descriptors `fds` to a temporary file while the block runs.

  Yields a list that holds the captured lines (stdout's first) once the block has ended, also
  when it raised.
  """
  lines: list[str] = []
  with contextlib.ExitStack() as stack:
    tmps = [stack.enter_context(tempfile.TemporaryFile(mode="w+")) for _ in fds]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    for fd, tmp in zip(fds, tmps):
      os.dup2(tmp.fileno(), fd)
    try:
      yield lines
    finally:
      for fd, old in zip(fds, saved):
        os.dup2(old, fd)
        os.close(old)
      for tmp in tmps:
        tmp.seek(0)
        lines.extend(tmp)
