"""Jobsprint projector service."""
