"""Jobsprint metrics service."""
