"""The one-command demo: send events with the ``posthog`` module API to a local dev server.

    python3 dev.py demo

Starts the embedded dev server on a free loopback port, points the module-level
client at it, captures a few kinds of events, flushes, and prints what the server
stored. Nothing leaves this machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import posthog
from posthog_integrations.devserver import DevServer


def send_events() -> dict[str, str | None]:
    """Everything a backend typically sends; returns the uuid each call gave back."""
    sent: dict[str, str | None] = {}
    sent["capture"] = posthog.capture(
        "order completed",
        distinct_id="user-42",
        properties={"order_id": 1001, "total": 59.9, "currency": "EUR"},
        groups={"company": "acme"},
    )
    sent["set"] = posthog.set(distinct_id="user-42", properties={"plan": "pro"})
    sent["set_once"] = posthog.set_once(
        distinct_id="user-42", properties={"first_seen_via": "demo"}
    )
    sent["alias"] = posthog.alias("anonymous-7f3a", "user-42")
    sent["group_identify"] = posthog.group_identify(
        "company", "acme", {"name": "Acme Inc.", "employees": 120}
    )
    sent["personless"] = posthog.capture("health check", properties={"ok": True})

    # A context scope: identity, session and tags for every event captured inside it
    # (this is what the framework middlewares open for each request).
    with posthog.new_context():
        posthog.identify_context("user-42")
        posthog.set_context_session("01932c5e-demo-session")
        posthog.tag("checkout_step", "payment")
        sent["in_context"] = posthog.capture("payment form shown")
        try:
            charge_card(amount=59.9)
        except ValueError as exc:
            sent["exception"] = posthog.capture_exception(exc)
    return sent


def use_flags() -> dict[str, str | None]:
    """Flags from example_projects/flags.json, evaluated locally (a secret key is set)."""
    flags = posthog.evaluate_flags("user-42", person_properties={"plan": "pro"})
    checkout = flags.is_enabled("new-checkout")  # sends $feature_flag_called
    copy = flags.get_flag("checkout-copy")  # sends $feature_flag_called
    print(f"flags for user-42: new-checkout={checkout} "
          f"(payload {flags.get_flag_payload('new-checkout')}), checkout-copy={copy!r}")
    return {"flagged": posthog.capture("checkout opened", distinct_id="user-42", flags=flags)}


def charge_card(amount: float) -> None:
    raise ValueError(f"card declined for amount {amount}")


def describe(event: dict[str, Any]) -> str:
    """The interesting part of an event in one line."""
    props = event.get("properties", {})
    if event["event"] in ("$set", "$set_once"):
        return json.dumps(event.get(event["event"], {}))
    if event["event"] == "$groupidentify":
        return f"{props['$group_type']}={props['$group_key']} {json.dumps(props['$group_set'])}"
    if event["event"] == "$create_alias":
        return f"alias={props['alias']!r} for distinct_id={props['distinct_id']!r}"
    if event["event"] == "$feature_flag_called":
        local = "locally" if props.get("locally_evaluated") else "by the server"
        return f"{props['$feature_flag']} = {props['$feature_flag_response']!r} ({local})"
    if event["event"] == "$exception":
        first = props["$exception_list"][0]
        frame = first.get("stacktrace", {}).get("frames", [{}])[-1]
        where = f"{frame.get('filename')}:{frame.get('lineno')} in {frame.get('function')}"
        return f"{first['type']}: {first['value']} at {where} session={props.get('$session_id')}"
    own = {k: v for k, v in props.items() if not k.startswith("$")}
    extras = []
    flagged = {k[len("$feature/"):]: v for k, v in props.items() if k.startswith("$feature/")}
    if flagged:
        extras.append(f"flags={json.dumps(flagged)}")
    if "$groups" in props:
        extras.append(f"groups={json.dumps(props['$groups'])}")
    if props.get("$process_person_profile") is False:
        extras.append("personless")
    if "$session_id" in props:
        extras.append(f"session={props['$session_id']}")
    return " ".join([json.dumps(own), *extras])


def print_table(events: list[dict[str, Any]]) -> None:
    rows = [
        (str(e["timestamp"])[11:23], e["event"], str(e["distinct_id"])[:36], describe(e))
        for e in events
    ]
    headers = ("time (UTC)", "event", "distinct_id", "details")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:3])]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, [*widths, 0], strict=True))
    print(line)
    print("-" * min(110, len(line) + 40))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=True)))


def main() -> int:
    with DevServer(flags_path=Path(__file__).with_name("flags.json")) as server:
        print(f"dev server listening on {server.url}\n")
        posthog.api_key = "phc_demo_project_key"
        posthog.secret_key = "phs_demo_secret_key"  # enables local flag evaluation
        posthog.host = server.url
        sent = send_events()
        sent.update(use_flags())
        posthog.flush()
        events = server.events()
        posthog.shutdown()

        print_table(events)
        sdk = events[0]["properties"] if events else {}
        print(
            f"\n{len(events)} events stored; every event also carries "
            f"$lib={sdk.get('$lib')!r} $lib_version={sdk.get('$lib_version')!r} "
            f"$os={sdk.get('$os')!r} $python_version={sdk.get('$python_version')!r}"
        )
        stored = {e["uuid"] for e in events}
        fetched = [r for r in server.requests if r["path"].startswith("/flags/definitions")]
        asked = [r for r in server.requests if r["path"].rstrip("/") == "/flags"]
        note = " (every flag was evaluated locally)" if not asked else ""
        print(f"flag definitions fetched {len(fetched)} time(s); "
              f"/flags requests: {len(asked)}{note}")
        missing = [name for name, uuid in sent.items() if uuid not in stored]
        if missing:
            print(f"NOT stored: {', '.join(missing)}", file=sys.stderr)
            return 1
        print("each uuid returned by the SDK was found in the dev server.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
