"""Evaluation metrics. Submodules are imported where needed so that this package stays light:
``metrics.instance_metrics`` (Dice, AJI, AJI+, PQ, mDice) needs only numpy and scipy.
"""
