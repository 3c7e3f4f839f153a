"""Fault 7: two beat instances cannot both send periodic tasks. Beat takes a Redis lock before
sending (config/beat.py): a second one stands by, and takes over when the first dies."""

import subprocess
import time

from faultlib import record, wait_for


def lock_holder(stack) -> str:
    out = stack.compose(
        "exec", "-T", "redis", "sh", "-c",
        'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning GET drs:beat:lock',
    )  # fmt: skip
    return out.strip().split(":", 1)[0]


def logs(container: str) -> str:
    done = subprocess.run(
        ["docker", "logs", container], check=False, capture_output=True, text=True
    )
    return done.stdout + done.stderr


def test_a_second_beat_stands_by_and_takes_over(stack):
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "beat=2", "beat")
    try:
        beats = {stack.inspect(c)["Config"]["Hostname"]: c for c in stack.container_ids("beat")}
        assert len(beats) == 2

        def roles():
            holder = lock_holder(stack)
            standby = [c for h, c in beats.items() if h != holder]
            if holder in beats and "standing by" in logs(standby[0]):
                return beats[holder], standby[0]
            return None

        active, standby = wait_for(roles, 60, "not one beat active and one standing by")
        active_sends = logs(active).count("Sending due task")
        time.sleep(25)  # a few sweep intervals (10 s): the active one sends, the standby never
        assert logs(active).count("Sending due task") > active_sends
        assert logs(standby).count("Sending due task") == 0

        # The active beat dies: the standby takes over within the lock's TTL (30 s).
        subprocess.run(["docker", "kill", "-s", "KILL", active], check=True, capture_output=True)
        wait_for(
            lambda: "holding the beat lock" in logs(standby), 90, "the standby did not take over"
        )
        wait_for(lambda: "Sending due task" in logs(standby), 60, "the new active beat is idle")
    finally:
        stack.compose("up", "-d", "--no-deps", "--scale", "beat=1", "beat")
    stack.wait_healthy("beat")
    record("two beats", periodic_sends_by_standby=0, takeover="within lock TTL")
