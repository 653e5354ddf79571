"""`make up`'s last step: a demo workspace and token, a two-step workflow, one execution
waited for, and its result printed with the calls to try next."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

GATEWAY = os.environ.get("JOBSPRINT_PUBLIC_URL", "http://127.0.0.1:8080")

WORKFLOW = {
    "name": "Greeting (demo)",
    "description": "Shapes the input, then builds a greeting from the first step's output",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "shape",
            "name": "Shape input",
            "type": "transform",
            "params": {"output": {"name": "{{ input.name }}", "count": "{{ input.count }}"}},
        },
        {
            "id": "greet",
            "name": "Build greeting",
            "type": "transform",
            "params": {
                "output": {
                    "greeting": "Hello, {{ steps.shape.output.name }}!",
                    "doubled": "{{ steps.shape.output.count * 2 }}",
                }
            },
        },
    ],
}


def main() -> None:
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsprint.gateway.cli",
            "admin",
            "token",
            "create",
            "--workspace",
            "demo",
            "--name",
            "make-up demo",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=GATEWAY, headers=headers, timeout=70) as client:
        created = client.post("/v1/workflows", json=WORKFLOW)
        created.raise_for_status()
        workflow_id = created.json()["data"]["id"]
        run = client.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={
                "inputData": {"name": "Ada", "count": 21},
                "options": {"waitForCompletion": True, "timeout": 60},
            },
        )
        run.raise_for_status()
        result = run.json()["data"]
    print("\n[demo] sample workflow run:")
    print(json.dumps(result, indent=2))
    print(f"""
[demo] gateway   {GATEWAY}
[demo] token     {token}
[demo] try:
  export TOKEN={token}
  curl -s -H "Authorization: Bearer $TOKEN" {GATEWAY}/v1/executions | python3 -m json.tool
  curl -s -H "Authorization: Bearer $TOKEN" {GATEWAY}/v1/executions/{result["executionId"]}
  curl -s -H "Authorization: Bearer $TOKEN" {GATEWAY}/v1/executions/metrics
  make down    # stops everything
""")
    if result.get("status") != "success":
        sys.exit(f"[demo] the sample execution ended {result.get('status')}")


if __name__ == "__main__":
    main()
