"""HTTP routes: health, workflows, executions, webhooks."""
