"""From a trained model's outputs to scores: inference, proposals, the field's evaluation protocols,
scoring, operating points and prediction files.
"""
