"""Jobsprint executor service."""
