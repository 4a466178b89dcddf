"""shadow-history's Python peer for `make bench` (never shipped): the same job in Python 3 + boto3.

Run under the official runtime interface client, from this folder:
    AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 HISTORY_TABLE=... python -m awslambdaric history_handler.handler

The event is a shadow update/accepted message as the IoT Rule delivers it
(`SELECT *, topic() AS topic, timestamp() AS receivedAt`), or an SQS batch of them.
"""

import json
import logging
import os
from decimal import Decimal

import boto3

logger = logging.getLogger()

# Created once per execution environment, outside the handler.
TABLE = boto3.resource("dynamodb").Table(os.environ["HISTORY_TABLE"])
CONDITIONAL_CHECK_FAILED = TABLE.meta.client.exceptions.ConditionalCheckFailedException
RETENTION_DAYS = int(os.environ["HISTORY_RETENTION_DAYS"]) if os.environ.get("HISTORY_RETENTION_DAYS") else None


def parse_topic(topic):
    """`$aws/things/T/shadow/update/accepted` -> (T, ''); `$aws/things/T/shadow/name/S/update/accepted` -> (T, S)."""
    parts = topic.split("/") if isinstance(topic, str) else []
    if parts[:2] == ["$aws", "things"] and parts[3:4] == ["shadow"] and parts[-2:] == ["update", "accepted"] and parts[2]:
        if len(parts) == 6:
            return parts[2], ""
        if len(parts) == 8 and parts[4] == "name" and parts[5]:
            return parts[2], parts[5]
    raise ValueError(f"not a shadow update/accepted topic: {topic!r}")


def build_item(event):
    """The history item of one event; raises ValueError when the event is malformed."""
    if not isinstance(event, dict):
        raise ValueError("a shadow event must be a JSON object")
    thing, shadow = parse_topic(event.get("topic"))
    version, timestamp = event.get("version"), event.get("timestamp")
    for name, value in (("version", version), ("timestamp", timestamp)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer, found {value!r}")
    if "state" not in event:
        raise ValueError("`state` is missing")
    item = {
        "pk": f"{thing}#{shadow}",
        "sk": f"{timestamp:010d}#{version:020d}#1-update",
        "thingName": thing,
        "shadowName": shadow,
        "version": version,
        "timestamp": timestamp,
        "kind": "update",
        "state": event["state"],
    }
    for name in ("clientToken", "receivedAt"):
        if event.get(name) is not None:
            item[name] = event[name]
    if RETENTION_DAYS:
        item["expiresAt"] = timestamp + RETENTION_DAYS * 86400
    return item


def store(item):
    """One conditional put, so a redelivered event never adds or changes an item."""
    try:
        TABLE.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        return "written"
    except CONDITIONAL_CHECK_FAILED:
        return "duplicate"


def handler(event, context):
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        failures = []
        for record in event["Records"]:
            try:
                store(build_item(json.loads(record["body"], parse_float=Decimal)))
            except Exception:
                logger.exception("shadow event %s not recorded", record.get("messageId"))
                failures.append({"itemIdentifier": record.get("messageId", "")})
        return {"batchItemFailures": failures}

    # boto3 stores numbers as Decimal, never float: re-read the event's JSON with Decimal for fractions.
    item = build_item(json.loads(json.dumps(event), parse_float=Decimal))
    outcome = store(item)
    return {"thingName": item["thingName"], "shadowName": item["shadowName"], "version": item["version"],
            "kind": "update", "outcome": outcome}
