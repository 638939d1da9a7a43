"""The LOSO training loop: the run context, fold drivers and threads, the jitted steps and their
state, device meshes, config checks, the metrics log and progress lines.
"""
