"""Jobsprint API gateway service."""
