"""Push throughput peer for `make bench` (never shipped): what a Python user would write with boto3.

One shared boto3 `iot-data` client (thread-safe; default retry configuration, i.e. what a user gets), a
ThreadPoolExecutor of --threads workers, one UpdateThingShadow per thing. The endpoint comes from the environment
(AWS_ENDPOINT_URL_IOT_DATA_PLANE), as for any boto3 client.

    python push_threadpool.py --things 10000 --prefix bench-abc- --threads 64 [--shadow NAME]

Prints exactly one JSON line on stdout:
    {"peer":"boto3-threadpool","things":N,"seconds":S,"updated":U,"failed":F,"throttled":T,"things_per_second":X}
"""

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import boto3
from botocore.config import Config

PEER = "boto3-threadpool"
DOCUMENT = {
    "state": {"desired": {"settings": {"mode": 1, "temp": 20}, "firmware_url": "https://s3.com/firmware.bin"}},
    "clientToken": "bench-boto3",
}
THROTTLE_CODES = {"ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded"}


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
    parser.add_argument("--threads", type=int, default=64, help="worker threads (and HTTP connections)")
    parser.add_argument("--shadow", help="named shadow (default: the classic shadow)")
    args = parser.parse_args()

    client = boto3.client("iot-data", config=Config(max_pool_connections=args.threads))
    throttles = ThrottleCounter()
    client.meta.events.register("needs-retry.iot-data-plane.UpdateThingShadow", throttles)
    payload = json.dumps(DOCUMENT)
    shadow = {"shadowName": args.shadow} if args.shadow else {}

    def push(thing):
        client.update_thing_shadow(thingName=thing, payload=payload, **shadow)

    updated = failed = 0
    errors = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        futures = [pool.submit(push, f"{args.prefix}{i:06d}") for i in range(args.things)]
        for future in as_completed(futures):
            error = future.exception()
            if error is None:
                updated += 1
            else:
                failed += 1
                errors.setdefault(type(error).__name__, str(error))
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
