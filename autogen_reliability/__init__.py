"""Reliability for existing AutoGen agents."""
