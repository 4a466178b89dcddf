"""The peer of `shadow-fleet history`: what a user would otherwise run, one boto3 Query of a shadow's history
partition, first page (Limit), as `aws dynamodb query` does. Prints one JSON line: items read and the Query's own
time (the process's wall time is measured by fleet-bench)."""

import argparse
import json
import time

import boto3
from boto3.dynamodb.conditions import Key


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", required=True)
    parser.add_argument("--pk", required=True)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    started = time.perf_counter()
    table = boto3.resource("dynamodb").Table(args.table)
    page = table.query(KeyConditionExpression=Key("pk").eq(args.pk), Limit=args.limit)
    items = page["Items"]
    for item in items:
        print(json.dumps(item, default=str))
    print(json.dumps({"items": len(items), "query_seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
