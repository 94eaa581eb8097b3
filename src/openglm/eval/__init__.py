"""Evaluation: tasks, scorers and reports (the agent eval of the nano model first)."""
