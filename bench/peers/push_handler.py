"""A minimal shadow-push in Python 3 + boto3, for `make bench`'s cold-start and memory comparison (never shipped).

Run under the official runtime interface client, from this folder:
    AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 python -m awslambdaric push_handler.handler

Event: {"desired": {...}, "targets": {"things": [...]}, "shadowName": optional, "pushId": optional}.
"""

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

logger = logging.getLogger()

MAX_WORKERS = 16

# Created once per execution environment, outside the handler; one connection per worker thread.
IOT_DATA = boto3.client("iot-data", config=Config(max_pool_connections=MAX_WORKERS))


def handler(event, context):
    desired = event.get("desired")
    things = (event.get("targets") or {}).get("things", [])
    if not isinstance(desired, dict) or not desired:
        raise ValueError("`desired` must be a non-empty object")
    if not isinstance(things, list) or not all(isinstance(thing, str) for thing in things):
        raise ValueError("`targets.things` must be a list of thing names")
    push_id = event.get("pushId") or str(uuid.uuid4())
    shadow_name = event.get("shadowName")
    payload = json.dumps({"state": {"desired": desired}, "clientToken": push_id})

    def update(thing):
        kwargs = {"thingName": thing, "payload": payload}
        if shadow_name:
            kwargs["shadowName"] = shadow_name
        IOT_DATA.update_thing_shadow(**kwargs)

    updated, failures = 0, []
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
        for thing, future in [(thing, pool.submit(update, thing)) for thing in dict.fromkeys(things)]:
            try:
                future.result()
                updated += 1
            except Exception as error:
                logger.warning("shadow of %s not updated: %s", thing, error)
                failures.append({"thingName": thing, "error": str(error)})

    return {
        "pushId": push_id,
        "shadowName": shadow_name or "",
        "targeted": updated + len(failures),
        "updated": updated,
        "failed": len(failures),
        "failures": failures[:100],
    }
