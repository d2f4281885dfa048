"""Defenses as systems an attack can target: preprocessing, detectors and decision rules."""
