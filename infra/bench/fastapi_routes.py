"""The cold-start peer of Lambent's real routes (infra/bench/coldstart.py): FastAPI + uvicorn, as the
seeds serve, doing the same work against the same emulator with boto3.

- POST /login: the signing key from Secrets Manager, a rate-limit counter, the account's item,
  argon2id at Lambent's cost (19 MiB, 2 passes, 1 lane), a session item, an RS256 access token;
- POST /jobs: the admission transaction (the job, and the account's running count and credits
  under a condition) and the queue message;
- GET /jobs/{id}: the job's item;
- POST /run: one upscale job: the upload from S3, decoded, the ONNX model loaded into onnxruntime
  and run, the PNG encoded and stored, the job's item updated.

Configuration (environment): PEER_TABLE, PEER_SECRET_ID, PEER_QUEUE_URL, PEER_BUCKET, PEER_MODEL,
and the AWS_* variables that point boto3 at the emulator.
"""

import io
import json
import os
import time
import uuid

import boto3
import jwt
from argon2 import PasswordHasher
from fastapi import FastAPI, HTTPException

TABLE = os.environ["PEER_TABLE"]
dynamodb = boto3.client("dynamodb")
secrets = boto3.client("secretsmanager")
sqs = boto3.client("sqs")
s3 = boto3.client("s3")
hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
app = FastAPI()
_key = None


def signing_key():
    global _key
    if _key is None:
        _key = json.loads(secrets.get_secret_value(SecretId=os.environ["PEER_SECRET_ID"])["SecretString"])
    return _key


@app.post("/login")
def login(body: dict):
    key = signing_key()
    window = int(time.time() // 60)
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"PEER#RATE#{body['email']}"}, "sk": {"S": str(window)}},
        UpdateExpression="ADD hits :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    item = dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": f"PEER#USER#{body['email']}"}, "sk": {"S": "PROFILE"}}
    ).get("Item")
    if item is None:
        raise HTTPException(401, "invalid credentials")
    hasher.verify(item["hash"]["S"], body["password"])
    session = uuid.uuid4().hex
    dynamodb.put_item(
        TableName=TABLE,
        Item={"pk": {"S": f"PEER#SESSION#{session}"}, "sk": {"S": "SESSION"}, "user": item["id"]},
    )
    now = int(time.time())
    token = jwt.encode(
        {"sub": item["id"]["S"], "aud": "lambent", "iat": now, "exp": now + 900},
        key["private_pem"],
        algorithm="RS256",
        headers={"kid": key["kid"]},
    )
    return {"access_token": token, "refresh_token": session, "token_type": "Bearer"}


@app.post("/jobs", status_code=202)
def create_job(body: dict):
    email = body["email"]
    job = str(uuid.uuid4())
    dynamodb.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": TABLE,
                    "Item": {
                        "pk": {"S": f"PEER#JOB#{job}"},
                        "sk": {"S": "JOB"},
                        "status": {"S": "IN_QUEUE"},
                        "kind": {"S": body["kind"]},
                        "input": {"S": json.dumps(body.get("input", {}))},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": f"PEER#USER#{email}"}, "sk": {"S": "PROFILE"}},
                    "UpdateExpression": "SET active = active + :one, credits = credits - :one",
                    "ConditionExpression": "active < :cap AND credits >= :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":cap": {"N": "4"}},
                }
            },
        ]
    )
    sqs.send_message(QueueUrl=os.environ["PEER_QUEUE_URL"], MessageBody=json.dumps({"job_id": job}))
    return {"id": job, "status": "IN_QUEUE"}


@app.get("/jobs/{job_id}")
def get_job(job_id: str):
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"PEER#JOB#{job_id}"}, "sk": {"S": "JOB"}}).get("Item")
    if item is None:
        raise HTTPException(404, "no such job")
    return {"id": job_id, "status": item["status"]["S"], "kind": item["kind"]["S"]}


@app.post("/run")
def run(body: dict):
    import numpy as np
    import onnxruntime
    from PIL import Image

    bucket = os.environ["PEER_BUCKET"]
    data = s3.get_object(Bucket=bucket, Key=body["key"])["Body"].read()
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
    session = onnxruntime.InferenceSession(os.environ["PEER_MODEL"], providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: image.transpose(2, 0, 1)[None]})[0][0]
    pixels = (output.transpose(1, 2, 0).clip(0, 1) * 255).round().astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    s3.put_object(Bucket=bucket, Key=f"peer/{uuid.uuid4()}.png", Body=encoded.getvalue(), ContentType="image/png")
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "PEER#JOB#run"}, "sk": {"S": "JOB"}},
        UpdateExpression="SET #s = :done",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":done": {"S": "COMPLETED"}},
    )
    return {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
