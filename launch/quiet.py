"""FFmpeg inside OpenCV prints only fatal errors, unless ``--verbosity`` / ``-v`` is given.

Import this module before anything that imports OpenCV (``OPENCV_FFMPEG_LOGLEVEL=8`` is read
when OpenCV is imported): an unreadable video is reported once by our own message naming the
file, not by FFmpeg's ``[mov,mp4,...] moov atom not found`` lines. A value the user set is kept.
The rest of a launcher's process set-up (terminal logging, compilation cache, allocator) is
``pwes_jax.runtime.set_up_process``.
"""

import os
import sys


def _verbosity_given(argv) -> bool:
  return any(a in ("-v", "--v") or a.startswith(("--verbosity", "-v=", "--v="))
             for a in argv[1:])


if not _verbosity_given(sys.argv):
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
