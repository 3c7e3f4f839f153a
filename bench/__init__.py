"""The benchmark harness behind `make bench` (run through scripts/bench.sh as `python -m bench`).

Brings up the prod stack under its own compose project, seeds a fixed dataset, and measures
with wrk (in a container on the stack's own network, its own CPU recorded) each scenario for
the set-ups of the web service on the same app, data and machine: (A) `manage.py runserver`,
(B) gunicorn with bare defaults and CONN_MAX_AGE=0, (O) ours, (M) ours with the app's metrics
off (S3 only); a stock nginx beside the stack's (baseline N of the static file), and the
tail-latency variants of ours on S3. Set-ups alternate and repeat (rounds; the median is
reported), each from fresh web and nginx containers after TIME_WAIT sockets have drained.
Also measures image sizes, idle RAM, time to healthy, worker throughput and build times. Writes
the run to <out>/{latest.json,latest.md,rps.png,p99.png} (overwritten: the history of the
committed bench/results/ is git's) and prints a table.

Modules, one job each:
    config      settings from the environment (BENCH_*)
    console     progress lines, errors, running commands
    stack       the bench stack: the one docker compose invocation, its env file, readiness
    scenarios   the set-ups (A, B, O, M) and scenarios (N, S1-S7), and running them round by round
    variants    the tail-latency variants of ours (gunicorn workers/threads, recycling, GC)
    load        wrk runs (and wrk's CPU) and the TIME_WAIT drain between them
    data        the seeded dataset, the cursor of the deep page
    resources   image sizes, idle RAM, the machine
    worker      export throughput and the worker's peak RSS
    builds      cold build and one-line rebuild times
    report      medians, targets met or missed, the markdown report, charts, the quick check
    __main__    the run, start to end

Configuration (environment): BENCH_QUICK=1 (seconds per scenario, small dataset: checks the
harness works), BENCH_DURATION, BENCH_ROUNDS, BENCH_POSTS, BENCH_USERS, BENCH_SETUPS (e.g. "O"),
BENCH_SCENARIOS (e.g. "S3,S7"), BENCH_VARIANTS (e.g. "W2x2"; empty: none), BENCH_CONNECTIONS
("32,64"), BENCH_SMALL_EXPORTS, BENCH_BUILD (1/0: cold build and rebuild timing), BENCH_OUT
(results folder), BENCH_PROJECT (drs-bench).
"""
