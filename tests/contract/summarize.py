#!/usr/bin/env python3
"""One line per distinct problem in Schemathesis NDJSON reports.

    summarize.py REPORT.ndjson...

Prints each failed check once (operation, check, code, response status, the first line of its
reason and the invalid part of the request when Schemathesis names one), then each error
(the document could not be used for an operation, or the tool failed). For run.sh, after a
failed run; the full detail is in Schemathesis's own output next to the report.
"""

import base64
import json
import sys


def problem_detail(response: dict) -> str:
    """The `detail` of an application/problem+json answer, if it is one."""
    content = response.get("content")
    if isinstance(content, dict) and "$base64" in content:
        try:
            body = json.loads(base64.b64decode(content["$base64"]))
        except ValueError:
            return ""
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            return body["detail"][:160]
    return ""


def main() -> int:
    failures: dict[tuple, int] = {}
    errors: dict[tuple, int] = {}
    for path in sys.argv[1:]:
        with open(path) as report:
            for line in report:
                event = json.loads(line)
                if "NonFatalError" in event:
                    value = event["NonFatalError"]
                    detail = value.get("value", {})
                    message = " ".join(str(detail.get("message", "")).split())[:220]
                    key = (value.get("label", "?"), detail.get("type", "error"), message)
                    errors[key] = errors.get(key, 0) + 1
                if "ScenarioFinished" not in event:
                    continue
                recorder = event["ScenarioFinished"].get("recorder", {})
                interactions = recorder.get("interactions", {})
                for case_id, checks in recorder.get("checks", {}).items():
                    for check in checks:
                        if check.get("status") != "failure":
                            continue
                        failure = check.get("failure_info", {}).get("failure", {})
                        response = (interactions.get(case_id) or {}).get("response", {}) or {}
                        status = response.get("status_code", "-")
                        lines = [l.strip() for l in str(failure.get("message", "")).splitlines() if l.strip()]
                        reason = lines[0] if lines else failure.get("title", "")
                        extra = [l for l in lines[1:] if l.startswith(("Invalid component", "Missing", "Undocumented", "Schema at", "Value:", "Received", "Documented", "Allowed"))]
                        if extra:
                            reason += " | " + " | ".join(extra)
                        detail = problem_detail(response)
                        if detail:
                            reason += f" | server: {detail}"
                        key = (
                            failure.get("operation") or recorder.get("label", "?"),
                            check.get("name", "?"),
                            failure.get("code", ""),
                            str(status),
                            reason[:300],
                        )
                        failures[key] = failures.get(key, 0) + 1
    for (operation, name, code, status, reason), count in sorted(failures.items()):
        print(f"FAIL  {operation}  [{name} {code}]  status {status}  {reason}" + (f"  (x{count})" if count > 1 else ""))
    for (label, kind, message), count in sorted(errors.items()):
        print(f"ERROR {label}  [{kind}]  {message}")
    print(f"{len(failures)} distinct failures, {len(errors)} distinct errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
