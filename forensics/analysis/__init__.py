"""Analyses that run uniformly on every detector through the Detector interface."""
