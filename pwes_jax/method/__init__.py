"""The method of the paper: the model, its losses, MPLG pseudo labels, the DFCL memory bank and
contrastive loss, and the objective that composes them. Pure functions of arrays; nothing here
knows about folds, files or devices.
"""
