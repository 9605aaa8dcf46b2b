"""Sends events to The Eye through a real Segment or RudderStack Python SDK.

    python_send.py segment|rudder HOST KEY N SESSION

Sends N messages in session SESSION (as the anonymous id), taking turns:
track, page, identify, through the SDK's own batching; then flushes and
exits 1 if the SDK reported any error. cli/tests/sdks.rs runs it against a
real `eye serve` and counts what was stored.
"""

import sys


def client(sdk, host, key, errors):
    def on_error(error, items):
        errors.append(f"{error} ({len(items)} messages)")

    if sdk == "segment":
        from segment.analytics import Client
    elif sdk == "rudder":
        from rudderstack.analytics.client import Client
    else:
        raise SystemExit(f"unknown SDK {sdk!r}: segment or rudder")
    return Client(key, host=host, on_error=on_error, upload_size=25, max_retries=3)


def main():
    sdk, host, key, n, session = sys.argv[1:6]
    errors = []
    c = client(sdk, host, key, errors)
    for i in range(int(n)):
        user = f"user-{i % 3}"
        if i % 3 == 0:
            c.track(
                user_id=user,
                anonymous_id=session,
                event="Item Viewed",
                properties={"sku": f"sku-{i}", "index": i, "sdk": sdk},
            )
        elif i % 3 == 1:
            c.page(
                user_id=user,
                anonymous_id=session,
                category="Docs",
                name="Getting Started",
                properties={"path": f"/docs/{i}", "index": i, "sdk": sdk},
            )
        else:
            c.identify(
                user_id=user,
                anonymous_id=session,
                traits={"plan": "pro", "index": i, "sdk": sdk},
            )
    c.flush()
    c.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(f"sent {n} through {sdk}")


if __name__ == "__main__":
    main()
