"""Experiment plumbing: the workbench that provides trained models, and the attack runner."""
