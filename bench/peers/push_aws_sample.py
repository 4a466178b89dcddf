"""Push peer for `make bench` (never shipped): the pattern of the AWS sample
aws-samples/iot-jobs-for-rapid-large-scale-device-updates, in Python + boto3.

The sample's loop, per page of things: send every update of the page at once, together with a one-second timer,
and wait for all of it (`Promise.all([wait(1000), ...updates])`), then take the next page. A page therefore takes
max(1 s, its slowest update), the last page included. The sample wraps the whole run in a try/catch that only logs,
so failed updates go unnoticed; here they are counted. With --stop-on-error the run also ends after the first page
with a failure, as the sample's Promise.all rejection does (the things after it are then neither updated nor failed).

    python push_aws_sample.py --things 10000 --prefix bench-abc- --page 500 [--shadow NAME] [--stop-on-error]

Prints exactly one JSON line on stdout:
    {"peer":"aws-sample-page-per-second","things":N,"seconds":S,"updated":U,"failed":F,"throttled":T,
     "things_per_second":X}
"""

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import boto3
from botocore.config import Config

PEER = "aws-sample-page-per-second"
DOCUMENT = {
    "state": {"desired": {"settings": {"mode": 1, "temp": 20}, "firmware_url": "https://s3.com/firmware.bin"}},
    "clientToken": "bench-boto3",
}
THROTTLE_CODES = {"ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded"}
PAGE_PERIOD = 1.0


class ThrottleCounter:
    """A `needs-retry` handler: botocore emits it after every attempt, so it also sees the 429s it retries.

    It returns None, which leaves the retry decision to botocore's own handler.
    """

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, response=None, **_):
        if response is None:  # no HTTP response (connection error)
            return None
        http, parsed = response
        if http.status_code == 429 or parsed.get("Error", {}).get("Code") in THROTTLE_CODES:
            with self._lock:
                self.count += 1
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--things", type=int, required=True, help="how many things: PREFIX000000 .. PREFIX{N-1:06d}")
    parser.add_argument("--prefix", required=True, help="thing name prefix")
    parser.add_argument("--page", type=int, default=500, help="things updated at once, once a second")
    parser.add_argument("--shadow", help="named shadow (default: the classic shadow)")
    parser.add_argument("--stop-on-error", action="store_true", help="end after the first page with a failure")
    args = parser.parse_args()

    # As many connections and threads as updates in flight: the whole page at once.
    client = boto3.client("iot-data", config=Config(max_pool_connections=args.page))
    throttles = ThrottleCounter()
    client.meta.events.register("needs-retry.iot-data-plane.UpdateThingShadow", throttles)
    payload = json.dumps(DOCUMENT)
    shadow = {"shadowName": args.shadow} if args.shadow else {}

    def push(thing):
        client.update_thing_shadow(thingName=thing, payload=payload, **shadow)

    names = [f"{args.prefix}{i:06d}" for i in range(args.things)]
    updated = failed = 0
    errors = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.page) as pool:
        for first in range(0, len(names), args.page):
            timer = time.perf_counter()
            futures = [pool.submit(push, name) for name in names[first:first + args.page]]
            wait(futures)
            page_failed = 0
            for future in futures:
                error = future.exception()
                if error is None:
                    updated += 1
                else:
                    page_failed += 1
                    errors.setdefault(type(error).__name__, str(error))
            failed += page_failed
            if page_failed and args.stop_on_error:
                break  # Promise.all rejects at once, without waiting for the timer
            time.sleep(max(0.0, PAGE_PERIOD - (time.perf_counter() - timer)))
    seconds = time.perf_counter() - start

    for name, message in errors.items():
        print(f"{PEER}: first {name}: {message}", file=sys.stderr)
    print(json.dumps({
        "peer": PEER,
        "things": args.things,
        "seconds": round(seconds, 3),
        "updated": updated,
        "failed": failed,
        "throttled": throttles.count,
        "things_per_second": round(updated / seconds, 1) if seconds > 0 else 0.0,
    }, separators=(",", ":")))


if __name__ == "__main__":
    main()
