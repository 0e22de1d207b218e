"""The headless data factory: sandboxes, sessions, scenarios, rollouts, training and eval.

Nothing in this package imports textual; tests/test_layering.py proves it.
"""
