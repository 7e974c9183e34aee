"""The social layer on the local stack (make bench): likes on one post, the following feed's reads,
and a post's fan-out to 10,000 followers, each beside the emulator's own rate for the same
DynamoDB work in the same run (the ceiling on this machine: every figure here is bounded by the
emulator, one Python process, not by Lambent; in AWS each call is a few milliseconds).

- Likes: LIKERS (200) accounts like one post, LIKE_CONCURRENCY (50) at once, each twice (a double
  tap); the count must be exactly LIKERS. Beside it: the emulator's TransactWriteItems of the same
  shape (the like's item + a counter shard) sent straight to it by as many threads.
- Feed: a follower of 5 accounts with 10 posts each reads the first page of 20, FEED_READS (300)
  times; p50 / p95, and the DynamoDB requests one read costs (the emulator's counts).
- Fan-out: FANS (10,000) followers seeded straight into the table (a follow each: the follow's
  item and the follower's entry, as the follow route writes them; signing 10,000 accounts up
  through the API would take the emulator a quarter of an hour), then one post through the API:
  the time until the last follower's timeline has it (10 messages of 1,000 followers, each
  queueing the next). Beside it: the emulator's BatchWriteItem rate for the same items.
"""

import json
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

import jobs

LIKERS = int(os.environ.get("LIKERS", "200"))
LIKE_CONCURRENCY = int(os.environ.get("LIKE_CONCURRENCY", "50"))
FEED_READS = int(os.environ.get("FEED_READS", "300"))
FANS = int(os.environ.get("FANS", "10000"))


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def dynamo(stack):
    client = boto3.client("dynamodb", endpoint_url=stack.emulator, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local",
                          config=Config(max_pool_connections=64, retries={"max_attempts": 10}))
    table = next(t for t in client.list_tables()["TableNames"] if t.endswith("Table") or "Table" in t)
    return client, table


def ddb_counts(stack):
    return {k.split(".")[-1]: v for k, v in stack.stats().items() if k.startswith("DynamoDB")}


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def upload(stack, token):
    png = (jobs.ROOT / "tests" / "fixtures" / "images" / "scene.png").read_bytes()
    status, upload = jobs.call("POST", f"{stack.base}/v1/uploads", {"content_type": "image/png", "size": len(png)}, token)
    assert status == 201, upload
    request = jobs.urllib.request.Request(upload["url"], data=png, method="PUT",
                                          headers={"content-type": "image/png"})
    jobs.urllib.request.urlopen(request, timeout=30).read()
    return upload["key"]


def publish(stack, token, key, caption, visibility="public"):
    status, post = jobs.call("POST", f"{stack.base}/v1/posts",
                             {"caption": caption, "visibility": visibility, "upload_keys": [key]}, token)
    assert status == 201, post
    return post["id"]


def photo_post(stack, token, caption, visibility="public"):
    return publish(stack, token, upload(stack, token), caption, visibility)


def me(stack, token):
    return jobs.call("GET", f"{stack.base}/v1/auth/me", token=token)[1]["id"]


def likes(stack, client, table):
    author = stack.user("author")
    post = photo_post(stack, author, "one post, many likes")
    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda i: stack.user(f"liker{i}"), range(LIKERS)))
    before = ddb_counts(stack)
    started = time.perf_counter()
    with ThreadPoolExecutor(LIKE_CONCURRENCY) as pool:
        statuses = list(pool.map(lambda t: jobs.call("POST", f"{stack.base}/v1/posts/{post}/like", token=t)[0],
                                 tokens + tokens))
    ours = 2 * LIKERS / (time.perf_counter() - started)
    per_like = delta(before, ddb_counts(stack))
    status, view = jobs.call("GET", f"{stack.base}/v1/posts/{post}", token=author)
    count = view["counts"]["likes"]
    assert count == LIKERS, (count, statuses)

    # The ceiling: the same transaction shape sent straight to the emulator.
    shard_pk = f"BENCH#{uuid.uuid4()}"
    client.put_item(TableName=table, Item={"pk": {"S": shard_pk}, "sk": {"S": "STAT"}})

    def raw(i):
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": f"BENCHLIKE#{shard_pk}#{i}"}, "sk": {"S": "LIKE"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": table, "Key": {"pk": {"S": shard_pk}, "sk": {"S": "STAT"}},
                        "UpdateExpression": "ADD likes :one", "ExpressionAttributeValues": {":one": {"N": "1"}},
                        "ConditionExpression": "attribute_exists(pk)"}},
        ])

    started = time.perf_counter()
    with ThreadPoolExecutor(LIKE_CONCURRENCY) as pool:
        list(pool.map(raw, range(2 * LIKERS)))
    ceiling = 2 * LIKERS / (time.perf_counter() - started)
    return ours, ceiling, count, statuses.count(201), statuses.count(200), per_like


def feed(stack, client, table):
    reader = stack.user("reader")
    authors = [stack.user(f"poster{i}") for i in range(5)]
    for token in authors:
        status, _ = jobs.call("POST", f"{stack.base}/v1/users/{me(stack, token)}/follow", token=reader)
        assert status in (200, 201)
    for n in range(10):
        for i, token in enumerate(authors):
            photo_post(stack, token, f"post {n} of poster {i}")
    deadline = time.time() + 120
    while True:
        status, page = jobs.call("GET", f"{stack.base}/v1/feeds/following?limit=20", token=reader)
        if status == 200 and len(page["items"]) == 20:
            break
        assert time.time() < deadline, page
        time.sleep(0.2)
    times = []
    before = ddb_counts(stack)
    for _ in range(FEED_READS):
        started = time.perf_counter()
        status, page = jobs.call("GET", f"{stack.base}/v1/feeds/following?limit=20", token=reader)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200 and len(page["items"]) == 20
    per_read = {k: v / FEED_READS for k, v in delta(before, ddb_counts(stack)).items()}
    # The ceiling: one Query of a timeline partition of the same size, straight to the emulator.
    reader_id = me(stack, reader)
    raw = []
    for _ in range(FEED_READS):
        started = time.perf_counter()
        client.query(TableName=table, KeyConditionExpression="pk = :pk",
                     ExpressionAttributeValues={":pk": {"S": f"FEED#{reader_id}"}}, Limit=20, ScanIndexForward=False)
        raw.append((time.perf_counter() - started) * 1000)
    return times, raw, per_read


def fan_out(stack, client, table):
    star = stack.user("star")
    star_id = me(stack, star)
    fans = [str(uuid.uuid4()) for _ in range(FANS)]
    now = int(time.time() * 1000)
    items = []
    for i, fan in enumerate(fans):
        at = now - FANS + i
        items.append({"pk": {"S": f"USER#{star_id}"}, "sk": {"S": f"FOLLOWER#{at:013d}#{fan}"},
                      "user_id": {"S": fan}, "at": {"N": str(at)}})
        items.append({"pk": {"S": f"FOLLOW#{fan}#{star_id}"}, "sk": {"S": "EDGE"},
                      "follower": {"S": fan}, "followee": {"S": star_id}, "at": {"N": str(at)}})
    batches = [items[i:i + 25] for i in range(0, len(items), 25)]

    def write(batch):
        request = {table: [{"PutRequest": {"Item": item}} for item in batch]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or None

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, batches))
    seed_rate = len(items) / (time.perf_counter() - started)
    client.update_item(TableName=table, Key={"pk": {"S": f"USER#{star_id}"}, "sk": {"S": "PROFILE"}},
                       UpdateExpression="SET followers_count = :n", ExpressionAttributeValues={":n": {"N": str(FANS)}})
    key = upload(stack, star)
    started = time.perf_counter()
    post = {"id": publish(stack, star, key, "to every follower", "followers")}
    last = fans[-1]
    deadline = time.time() + 1800
    while True:
        out = client.query(TableName=table, KeyConditionExpression="pk = :pk",
                           ExpressionAttributeValues={":pk": {"S": f"FEED#{last}"}})
        if any(i.get("post_id", {}).get("S") == post["id"] for i in out["Items"]):
            break
        assert time.time() < deadline, "the fan-out did not reach the last follower"
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    # Every follower's timeline has it (a sample of 100 and the first and last).
    for fan in fans[::100] + [fans[0], last]:
        out = client.query(TableName=table, KeyConditionExpression="pk = :pk",
                           ExpressionAttributeValues={":pk": {"S": f"FEED#{fan}"}})
        assert any(i.get("post_id", {}).get("S") == post["id"] for i in out["Items"]), fan
    return seconds, seed_rate


def main():
    stack = jobs.Stack()
    try:
        client, table = dynamo(stack)
        ours, ceiling, count, first, again, per_like = likes(stack, client, table)
        feed_ms, raw_ms, per_read = feed(stack, client, table)
        fan_s, seed_rate = fan_out(stack, client, table)
    finally:
        stack.close()
    print("The social layer on the local stack (release build; the emulator's own rate for the same "
          "DynamoDB work, sent straight to it in the same run, is the ceiling):")
    print()
    print("| figure | Lambent | the emulator alone, same work | Lambent / emulator |")
    print("|---|---:|---:|---:|")
    print(f"| likes on one post, {LIKERS} accounts x 2 taps, {LIKE_CONCURRENCY} at once: per second | {ours:.0f} | "
          f"{ceiling:.0f} transactions | {ours / ceiling:.2f} |")
    print(f"| following feed, first page of 20 (5 authors x 10 posts): p50 ms | {statistics.median(feed_ms):.1f} | "
          f"{statistics.median(raw_ms):.1f} (the timeline's Query) | {statistics.median(feed_ms) / statistics.median(raw_ms):.1f}x |")
    print(f"| following feed: p95 ms | {pct(feed_ms, 0.95):.1f} | {pct(raw_ms, 0.95):.1f} | "
          f"{pct(feed_ms, 0.95) / pct(raw_ms, 0.95):.1f}x |")
    writes = FANS + 1
    print(f"| fan-out of one post to {FANS:,} followers (pages of 1,000 from the queue): s | {fan_s:.1f} "
          f"({writes / fan_s:.0f} timelines/s) | {writes / seed_rate:.1f} s ({seed_rate:.0f} items/s BatchWriteItem) | "
          f"{(writes / fan_s) / seed_rate:.2f} |")
    print()
    print(f"Likes: count {count} after {2 * LIKERS} taps ({first} answered 201, {again} answered 200: a double tap is one like); "
          f"DynamoDB requests for all of them: {', '.join(f'{k} {v}' for k, v in sorted(per_like.items()))}. "
          f"A feed read costs {', '.join(f'{k} {v:.1f}' for k, v in sorted(per_read.items()))} DynamoDB requests.")
    print()


if __name__ == "__main__":
    main()
