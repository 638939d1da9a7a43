"""The run directory on disk: its files, the workdir lock, Orbax checkpoints, the guard on output
paths and atomic file writes.
"""
