"""moto server as the local stack needs it: DynamoDB requests serialized, transactions that copy only what
they touch, DynamoDB's key-size limits on reads, and a fault-injection switch for tests.

- Atomicity. Plain moto is not atomic under concurrency: conditional writes racing on one item can both
  pass, which real DynamoDB never allows. Holding one lock per DynamoDB request makes every conditional
  write and transaction atomic, as in AWS. S3 and SQS stay unlocked so SQS long polls do not stall the rest.
- Transactions. moto's TransactWriteItems deep-copies every table it names, once per action, to roll back
  (inside that lock): its cost and its garbage grow with the table. `transact_write_items` below is moto's
  own logic with a rollback from copies of the items the transaction names, so a transaction costs the same
  on a table of ten items or of a million.
- Index queries. moto answers a Query on a secondary index by sorting every item of the table and
  testing each, inside that lock: every listing and every reaper pass cost more as the table grew.
  `GsiHashes` keeps, per index partition key value, the items that hold it (refreshed after every
  write of an item, rollbacks included), and a Query on an index tests only those; a Query on the
  table tests only its partition's items. (Each was a sort of the whole table before.)
- Memory. moto keeps every model object it ever made in a list on its class (`instances_tracked`, for
  its dashboard and reset): every item written, every copy of an item a Query or GetItem answered with,
  every SQS message, for the life of the process. That list, not the data, was the emulator's memory
  (the attack run's 17.8 GB at 2,497 items). Here the lists hold weak references: an object lives as long
  as moto itself uses it, and the dashboard and reset still see every live one.
- TTL. moto records a table's TTL setting and never deletes: rate-limit windows, idempotency records,
  expired sessions and old deliveries stayed for ever. A sweep every LAMBENT_TTL_SWEEP_SECONDS (60)
  deletes what DynamoDB's TTL would (a number of epoch seconds in the past, but not more than five
  years), under the same lock as every request; POST /_lambent/ttl-sweep {"table": name} sweeps one
  table now (for tests). GET /_lambent/items counts each table's items. GET /_lambent/ses/messages
  lists every message SES sent ({id, source, destinations, subject, body}), for tests to read.
- Key sizes. moto checks them on writes but not on GetItem, DeleteItem, Query or TransactGetItems; DynamoDB
  answers those with a ValidationException (2,048 bytes for a partition key, 1,024 for a sort key), and so
  does this server, so a test sees the 500 an unbounded key would cause in AWS.
- Idempotent transactions. moto ignores TransactWriteItems' ClientRequestToken, which the AWS SDKs fill
  in and keep across their retries. DynamoDB carries out a token's transaction once: for 10 minutes after
  it succeeded, the same token and request answer success without doing it again, and the same token
  with another request is an IdempotentParameterMismatchException. Without this, an SDK retry after an
  attempt timeout met its own committed first attempt and was cancelled (a job admitted, its client
  told 500).
- Connections. Served by waitress with keep-alive, not by werkzeug's development server, which closed
  every connection after its answer (a TCP connect and a new thread per AWS call; under load its
  accept queue overflowed and connects waited a second for TCP's retry, past the SDK's timeout).
- Speed. moto writes every DynamoDB AttributeValue of an answer member by member through its shape
  model (most of a GetItem's time, more with every item a Query returns): here they are written
  directly, the same JSON (LAMBENT_MOTO_CHECK_WIRE=1 writes both and fails a request whose two
  differ). A condition parsed once is not parsed again for the same expression, names and values
  (moto parses a transaction's conditions three times each), and a handler's list of methods is
  made once, not on every request.
- Busy time. An SDK client that names an app id (AWS_SDK_UA_APP_ID, sent as `app/NAME` in its user
  agent) has its requests counted and the time spent serving them summed: GET /_lambent/busy gives
  {app: {"requests": N, "ms": T}} (make bench's cold starts subtract it from theirs).
- Faults. POST /_lambent/faults with a JSON object {"target": "DynamoDB_20120810.TransactWriteItems",
  "contains": "<text in the request body>" (or a list of texts, all in it), "times": N,
  "error": "TransactionConflict" | "<exception>", "delay_ms": M, "answer_delay_ms": A, "drop": false}
  arms a fault: the next N matching requests wait M ms, then fail with that error (a transaction's
  TransactionConflict comes as DynamoDB sends it: a TransactionCanceledException whose first reason is
  TransactionConflict), or, with "drop", answer as an empty success without doing anything (an SQS
  SendMessage lost after its sender's commit), or, with neither, go through after the wait; with
  "answer_delay_ms", the request is carried out and its answer held A ms more (a commit whose answer
  comes after the caller's timeout). GET /_lambent/faults lists the armed faults with how often each
  fired, and how many matching requests were answered ("answered": a fault's request and the
  caller's retries of it, so a test can wait until a retry has been carried out).

Usage: python moto_server.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
With --port 0 a free port is chosen and written to --port-file once the server listens.
"""

import argparse
import collections
import copy
import functools
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from enum import Enum

import moto.core.responses as moto_responses
from moto.core.common_models import BaseModel
from moto.core.serialize import BaseJSONSerializer
from moto.dynamodb.comparisons import ConditionExpressionParser, get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.server import DomainDispatcherApplication, create_backend_app
from waitress.server import create_server

HASH_KEY_MAX_BYTES = 2048
RANGE_KEY_MAX_BYTES = 1024


def _slot(table, key):
    """The (hash, range) of `key` in `table`."""
    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr is not None else None
    return hash_value, range_value


def _restore(table, hash_value, range_value, original):
    """Puts an item back as it was (or removes it if it did not exist)."""
    if original is None:
        table.delete_item(hash_value, range_value)
        if range_value is not None and hash_value in table.items and not table.items[hash_value]:
            del table.items[hash_value]
    elif range_value is not None:
        table.items[hash_value][range_value] = original
    else:
        table.items[hash_value] = original
    GSI_HASHES.refresh(table, hash_value, range_value)


def _sort_key(item):
    """moto's own order of `Table.all_items`."""
    return (item.hash_key, item.range_key) if item.range_key else item.hash_key


class GsiHashes:
    """Per table and index partition key attribute: each value's items, by (hash, range)."""

    def __init__(self):
        self.by_value = {}  # (table name, attribute) -> {value: {slot}}
        self.of_slot = {}  # (table name, slot) -> {attribute: value}

    @staticmethod
    def attributes(table):
        return {k["AttributeName"] for index in table.all_indexes() for k in index.schema if k["KeyType"] == "HASH"}

    @staticmethod
    def value(dynamo):
        return (dynamo.type, json.dumps(dynamo.value, sort_keys=True, default=str))

    def refresh(self, table, hash_value, range_value):
        slot = (hash_value, range_value)
        for attribute, value in self.of_slot.pop((table.name, slot), {}).items():
            self.by_value.get((table.name, attribute), {}).get(value, set()).discard(slot)
        try:
            item = table.get_item(hash_value, range_value)
        except Exception:  # noqa: BLE001 - a malformed key names no item
            item = None
        if item is None:
            return
        held = {}
        for attribute in self.attributes(table):
            dynamo = item.attrs.get(attribute)
            if dynamo is not None:
                value = self.value(dynamo)
                self.by_value.setdefault((table.name, attribute), {}).setdefault(value, set()).add(slot)
                held[attribute] = value
        if held:
            self.of_slot[(table.name, slot)] = held

    def items(self, table, attribute, dynamo):
        slots = self.by_value.get((table.name, attribute), {}).get(self.value(dynamo), set())
        found = [table.get_item(h, r) for h, r in slots]
        return sorted((item for item in found if item is not None), key=_sort_key)

    def forget(self, table_name):
        self.by_value = {k: v for k, v in self.by_value.items() if k[0] != table_name}
        self.of_slot = {k: v for k, v in self.of_slot.items() if k[0] != table_name}


GSI_HASHES = GsiHashes()


def _tracked(method, keyword):
    """A backend write that refreshes the index hashes of the item it touched, whatever happened."""

    def write(self, table_name, *args, **kwargs):
        try:
            return method(self, table_name, *args, **kwargs)
        finally:
            try:
                table = self.get_table(table_name)
                attrs = args[0] if args else kwargs[keyword]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
                GSI_HASHES.refresh(table, *_slot(table, key))
            except Exception:  # noqa: BLE001 - no table or no key: nothing was written
                pass

    return write


def _table_lifecycle(method):
    def change(self, name, *args, **kwargs):
        GSI_HASHES.forget(name)
        return method(self, name, *args, **kwargs)

    return change


_MOTO_QUERY = Table.query


def _in_range(items, comparison, objs):
    """The items whose string sort key can meet `begins_with` or `BETWEEN` (moto then checks
    each again its own way): a partition's thousands of items are not each compared in moto's
    expression code for a query that wants a few of them. Python orders `str` by code point, as
    DynamoDB orders UTF-8 bytes."""
    raw = [getattr(o, "value", None) for o in objs]
    if not raw or not all(isinstance(r, str) for r in raw):
        return items
    def key(item):
        value = getattr(item.range_key, "value", None)
        return value if isinstance(value, str) else None
    comparison = (comparison or "").upper()
    if comparison == "BEGINS_WITH" and len(raw) == 1:
        return [i for i in items if (k := key(i)) is not None and k.startswith(raw[0])]
    if comparison == "BETWEEN" and len(raw) == 2:
        return [i for i in items if (k := key(i)) is not None and raw[0] <= k <= raw[1]]
    return items


def query(self, *args, **kwargs):
    """moto's Query over the items of the one partition it names (an index's, through
    `GsiHashes`, or the table's own), instead of over every item of the table."""
    index_name = kwargs.get("index_name", args[7] if len(args) > 7 else None)
    conditions = kwargs.get("hash_key_conditions") or []
    candidates = None
    if index_name and len(conditions) == 1 and conditions[0][0] in GsiHashes.attributes(self):
        attribute, dynamo = conditions[0]
        candidates = GSI_HASHES.items(self, attribute, dynamo)
    elif not index_name and args and args[0] is not None and self.range_key_attr is not None:
        partition = self.items.get(args[0], {})
        comparison = kwargs.get("range_comparison", args[1] if len(args) > 1 else None)
        objs = kwargs.get("range_objs", args[2] if len(args) > 2 else None) or []
        candidates = sorted(_in_range(partition.values(), comparison, objs), key=_sort_key)
    if candidates is None:
        return _MOTO_QUERY(self, *args, **kwargs)
    self.all_items = lambda: candidates
    try:
        return _MOTO_QUERY(self, *args, **kwargs)
    finally:
        del self.all_items


def transact_write_items(self, transact_items):
    """moto 5.2's TransactWriteItems, rolled back from copies of the touched items, not of the tables."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    snapshots = []  # (table, hash, range, the item as it was or None), in order
    target_items = set()
    errors = []  # (code, message, item) per action

    def rollback():
        for table, hash_value, range_value, original in reversed(snapshots):
            _restore(table, hash_value, range_value, original)

    for item in transact_items:
        original_item = None
        if len(list(item.keys())) > 1:
            rollback()
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                table = self.get_table(table_name)
                key = op["Key"]
            unique = (str(table_name), str(dict(sorted(key.items()))))
            if unique in target_items:
                raise MultipleTransactionsException()
            target_items.add(unique)

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition = get_filter_expression(condition_expression, names, values)
                if not condition.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                hash_value, range_value = _slot(table, key)
                snapshots.append((table, hash_value, range_value, copy.deepcopy(current)))
            if op_type == "Put":
                self.put_item(
                    table_name,
                    op["Item"],
                    condition_expression=condition_expression,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=condition_expression,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Update":
                self.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    condition_expression=condition_expression,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            rollback()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))
        except Exception as e:  # noqa: BLE001 - moto reports any other failure as that action's reason
            errors.append((type(e).__name__, str(e), original_item))
    if any(code is not None for code, _, _ in errors):
        rollback()
        raise TransactionCanceledException(errors)


if not os.environ.get("MOTO_PLAIN"):
    DynamoDBBackend.transact_write_items = transact_write_items
    DynamoDBBackend.put_item = _tracked(DynamoDBBackend.put_item, "item_attrs")
    DynamoDBBackend.update_item = _tracked(DynamoDBBackend.update_item, "key")
    DynamoDBBackend.delete_item = _tracked(DynamoDBBackend.delete_item, "key")
    DynamoDBBackend.create_table = _table_lifecycle(DynamoDBBackend.create_table)
    DynamoDBBackend.delete_table = _table_lifecycle(DynamoDBBackend.delete_table)
    Table.query = query


_MOTO_JSON_STRUCTURE = BaseJSONSerializer._serialize_type_structure
# AttributeValue's members in the order of its shape.
_ATTRIBUTE_MEMBERS = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")
_ATTRIBUTE_MEMBER_SET = frozenset(_ATTRIBUTE_MEMBERS)
_CHECK_WIRE = os.environ.get("LAMBENT_MOTO_CHECK_WIRE") == "1"


def _wire_string(value):
    """moto's JSON serializer's string: an Enum's value, else `str`, but None, {} and [] as they are."""
    if isinstance(value, Enum):
        value = value.value
    return str(value) if value not in [None, {}, []] else value


def _wire_attribute(serializer, value):
    """A DynamoDB AttributeValue in its JSON wire form, as moto's shape-driven serializer writes it:
    the members the shape names, in its order, None ones left out; blobs in base64 by its own
    `_base64`."""
    out = {}
    for member in _ATTRIBUTE_MEMBERS:
        if member not in value:
            continue
        v = value[member]
        if v is None:
            continue
        if member == "S" or member == "N":
            out[member] = _wire_string(v)
        elif member == "B":
            out[member] = serializer._base64(v)
        elif member == "SS" or member == "NS":
            out[member] = [_wire_string(x) for x in v]
        elif member == "BS":
            out[member] = [serializer._base64(x) for x in v]
        elif member == "M":
            out[member] = {k: _wire_attribute(serializer, x) for k, x in v.items() if x is not None}
        elif member == "L":
            out[member] = [None if x is None else _wire_attribute(serializer, x) for x in v]
        else:  # NULL, BOOL
            out[member] = v
    return out


def _serialize_structure(self, serialized, value, shape, key):
    """moto's JSON serializer, with DynamoDB's AttributeValue written directly: moto walks each one
    member by member through its shape model (ten lookups, each trying several aliases), which was
    most of a GetItem's time (about 2.5 of 4.5 ms for a job's item on a 2-core EPYC) and grew with
    every item a Query returned. LAMBENT_MOTO_CHECK_WIRE=1 serializes both ways and fails the request
    when they differ (the test suite ran so once)."""
    if (
        shape.name != "AttributeValue"
        or not key
        or not isinstance(value, dict)
        or not _ATTRIBUTE_MEMBER_SET.issuperset(value)
    ):
        return _MOTO_JSON_STRUCTURE(self, serialized, value, shape, key)
    wire = _wire_attribute(self, value)
    if _CHECK_WIRE:
        expected = {}
        _MOTO_JSON_STRUCTURE(self, expected, value, shape, key)
        got = {}
        self._default_serialize(got, wire, shape, key)
        if json.dumps(got) != json.dumps(expected):
            message = f"AttributeValue written as {got!r}, moto writes {expected!r}"
            print(message, file=sys.stderr, flush=True)
            raise AssertionError(message)
    self._default_serialize(serialized, wire, shape, key)


if not os.environ.get("MOTO_PLAIN"):
    BaseJSONSerializer._serialize_type_structure = _serialize_structure
    # moto lists a handler class's methods (inspect.getmembers) on every request to find the
    # action's; a class's methods do not change while the server runs.
    moto_responses.method_names_from_class = functools.lru_cache(maxsize=None)(
        moto_responses.method_names_from_class
    )


_MOTO_CONDITION_PARSE = ConditionExpressionParser.parse
# Parsed conditions by (expression, names, values); a transaction's few are parsed three times each.
_PARSED_CONDITIONS = collections.OrderedDict()
MAX_PARSED_CONDITIONS = 256


def _parse_condition(self):
    """moto's condition-expression parser, remembering its last few answers. moto parses each
    condition of a TransactWriteItems three times (the request's validation, the transaction's
    check, then the write it calls with the same condition): lexing and parsing conditions were
    a third of an admission's time in the emulator. The tree is the same for the same expression,
    names and values, and its evaluation changes nothing in it. (Update expressions, parsed twice,
    are left alone: moto's validator rewrites their tree.)"""
    try:
        key = (
            self.condition_expression,
            json.dumps(self.expression_attribute_names, sort_keys=True),
            json.dumps(self.expression_attribute_values, sort_keys=True),
        )
    except (TypeError, ValueError):  # values moto holds as bytes (binary attributes)
        return _MOTO_CONDITION_PARSE(self)
    found = _PARSED_CONDITIONS.get(key)
    if found is None:
        op = _MOTO_CONDITION_PARSE(self)
        _PARSED_CONDITIONS[key] = (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
        if len(_PARSED_CONDITIONS) > MAX_PARSED_CONDITIONS:
            _PARSED_CONDITIONS.popitem(last=False)
        return op
    _PARSED_CONDITIONS.move_to_end(key)
    op, names, values = found
    # Fresh lists, as a parse leaves them: moto's callers extend them in place.
    self.expr_attr_names_found.extend(names)
    self.expr_attr_values_found.extend(values)
    return op


if not os.environ.get("MOTO_PLAIN"):
    ConditionExpressionParser.parse = _parse_condition


class WeakInstances:
    """moto's `instances_tracked` list, holding its objects weakly."""

    def __init__(self, objects=()):
        self.refs = [weakref.ref(o) for o in objects]
        self.prune_at = 1024

    def append(self, obj):
        self.refs.append(weakref.ref(obj))
        if len(self.refs) >= self.prune_at:
            self.refs = [r for r in self.refs if r() is not None]
            self.prune_at = max(1024, 2 * len(self.refs))

    def __iter__(self):
        return (o for o in (r() for r in list(self.refs)) if o is not None)

    def __len__(self):
        return sum(1 for _ in self)


def _new_model(cls, *args, **kwargs):
    instance = object.__new__(cls)
    tracked = cls.__dict__.get("instances_tracked")
    if not isinstance(tracked, WeakInstances):
        # First object since the class was made or moto's reset put a fresh list there.
        tracked = WeakInstances(tracked or ())
        cls.instances_tracked = tracked
    tracked.append(instance)
    return instance


if not os.environ.get("MOTO_PLAIN"):
    BaseModel.__new__ = staticmethod(_new_model)


def _tables():
    """Every emulated table, in every account and region."""
    from moto.dynamodb.models import dynamodb_backends

    for regions in list(dynamodb_backends.values()):
        for backend in list(regions.values()):
            yield from list(backend.tables.values())


def sent_messages():
    """Every message SES (v1 or v2) sent, in every account and region, oldest first."""
    from moto.ses.models import ses_backends

    messages = []
    for regions in list(ses_backends.values()):
        for backend in list(regions.values()):
            for message in list(backend.sent_messages):
                messages.append({
                    "id": message.id,
                    "source": getattr(message, "source", None),
                    "destinations": getattr(message, "destinations", None),
                    "subject": getattr(message, "subject", None),
                    "body": getattr(message, "body", None),
                })
    return messages


def _find_table(name):
    """The emulated table called `name`, in whichever account and region holds it."""
    return next((table for table in _tables() if table.name == name), None)


def _slots(table):
    """(hash, range, item) of every item of `table`."""
    for hash_value, held in list(table.items.items()):
        if table.range_key_attr is None:
            yield hash_value, None, held
        else:
            for range_value, item in list(held.items()):
                yield hash_value, range_value, item


def item_counts():
    return {table.name: sum(1 for _ in _slots(table)) for table in _tables()}


# DynamoDB leaves alone a TTL value more than five years in the past (it takes it for a mistake).
TTL_IGNORED_BEFORE_SECONDS = 5 * 365 * 86_400


def sweep_expired(now, only=None):
    """Deletes what DynamoDB's TTL would: items whose TTL attribute is a number of epoch seconds in
    the past (moto records the setting but never deletes), in every table or the one named `only`.
    Returns how many were deleted."""
    deleted = 0
    for table in _tables():
        if only is not None and table.name != only:
            continue
        if table.ttl.get("TimeToLiveStatus") != "ENABLED" or not table.ttl.get("AttributeName"):
            continue
        attribute = table.ttl["AttributeName"]
        expired = []
        for hash_value, range_value, item in _slots(table):
            value = item.attrs.get(attribute)
            if value is None or value.type != "N":
                continue
            try:
                at = float(value.value)
            except ValueError:
                continue
            if now - TTL_IGNORED_BEFORE_SECONDS < at < now:
                expired.append((hash_value, range_value))
        for hash_value, range_value in expired:
            _restore(table, hash_value, range_value, None)
        deleted += len(expired)
    return deleted


def ttl_sweeper(lock, period):
    """DynamoDB deletes expired items in the background, typically within days; here every `period` s."""
    while True:
        time.sleep(period)
        try:
            with lock:
                sweep_expired(time.time())
        except Exception:  # noqa: BLE001 - a table changing under a sweep is swept next time
            pass


def _too_long(value, limit, kind):
    if isinstance(value, dict) and DynamoType(value).size() > limit:
        return (
            f"One or more parameter values were invalid: Size of {kind} has exceeded the maximum size "
            f"limit of {limit} bytes"
        )
    return None


def _key_violation(table_name, key):
    table = _find_table(table_name) if table_name else None
    if table is None or not isinstance(key, dict):
        return None
    return _too_long(key.get(table.hash_key_attr), HASH_KEY_MAX_BYTES, "hashkey") or (
        table.range_key_attr and _too_long(key.get(table.range_key_attr), RANGE_KEY_MAX_BYTES, "rangekey")
    )


def _query_violation(request):
    table = _find_table(request.get("TableName"))
    if table is None:
        return None
    schema = None
    index = request.get("IndexName")
    for candidate in list(table.global_indexes) + list(table.indexes):
        if index and candidate.name == index:
            schema = candidate.schema
    if schema is None:
        schema = table.schema
    hash_attr = next((k["AttributeName"] for k in schema if k["KeyType"] == "HASH"), None)
    names = request.get("ExpressionAttributeNames", {})
    values = request.get("ExpressionAttributeValues", {})
    condition = request.get("KeyConditionExpression", "")
    pairs = re.findall(r"([#\w]+)\s*(?:=|<=|>=|<|>|BETWEEN)\s*(:\w+)", condition)
    pairs += re.findall(r"begins_with\s*\(\s*([#\w]+)\s*,\s*(:\w+)", condition)
    pairs += [("", v) for v in re.findall(r"\bAND\s+(:\w+)", condition)]
    for attr, placeholder in pairs:
        attr = names.get(attr, attr)
        if attr == hash_attr:
            message = _too_long(values.get(placeholder), HASH_KEY_MAX_BYTES, "hashkey")
        else:
            message = _too_long(values.get(placeholder), RANGE_KEY_MAX_BYTES, "rangekey")
        if message:
            return message
    return None


def read_key_violation(target, request):
    """Key-size checks DynamoDB makes and moto does not (reads, deletes, condition checks)."""
    op = target.split(".", 1)[-1]
    keys = []  # (table name, key)
    if op in ("GetItem", "DeleteItem"):
        keys.append((request.get("TableName"), request.get("Key")))
    elif op == "TransactGetItems":
        for action in request.get("TransactItems", []):
            get = action.get("Get", {})
            keys.append((get.get("TableName"), get.get("Key")))
    elif op == "BatchGetItem":
        for table_name, spec in request.get("RequestItems", {}).items():
            keys.extend((table_name, key) for key in spec.get("Keys", []))
    elif op == "TransactWriteItems":
        for action in request.get("TransactItems", []):
            for kind in ("Delete", "ConditionCheck"):
                if kind in action:
                    keys.append((action[kind].get("TableName"), action[kind].get("Key")))
    elif op == "Query":
        return _query_violation(request)
    for table_name, key in keys:
        message = _key_violation(table_name, key)
        if message:
            return message
    return None


class Faults:
    """Armed faults, matched by target and body text, each for a number of requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.armed = []

    def arm(self, fault):
        fault = {
            "target": str(fault["target"]),
            # A text, or a list of texts that must all be in the body.
            "contains": fault.get("contains", ""),
            "times": int(fault.get("times", 1)),
            "error": fault.get("error"),
            "delay_ms": int(fault.get("delay_ms", 0)),
            "answer_delay_ms": int(fault.get("answer_delay_ms", 0)),
            "drop": bool(fault.get("drop", False)),
            "fired": 0,
            # Every matching request answered, fired or not, the fault's own retries among them.
            "answered": 0,
        }
        with self.lock:
            self.armed.append(fault)

    def take(self, target, body):
        """The fault this request gets (or None), and every armed fault it matches."""
        fired, matched = None, []
        with self.lock:
            for fault in self.armed:
                wanted = fault["contains"] if isinstance(fault["contains"], list) else [fault["contains"]]
                if fault["target"] == target and all(str(w) in body for w in wanted):
                    matched.append(fault)
                    if fault["times"] > 0 and fired is None:
                        fault["times"] -= 1
                        fault["fired"] += 1
                        fired = dict(fault)
        return fired, matched

    def answered(self, matched):
        with self.lock:
            for fault in matched:
                fault["answered"] += 1

    def listing(self):
        with self.lock:
            return json.dumps(self.armed).encode()


def _answer(start_response, status, body, content_type="application/x-amz-json-1.0"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def fault_response(fault, target, request, start_response):
    """What a fault answers instead of the emulator."""
    if fault["drop"]:
        if target.endswith(".SendMessage"):
            digest = hashlib.md5(str(request.get("MessageBody", "")).encode()).hexdigest()
            body = {"MessageId": "00000000-0000-0000-0000-000000000000", "MD5OfMessageBody": digest}
        else:
            body = {}
        return _answer(start_response, "200 OK", json.dumps(body).encode())
    error = fault["error"]
    if target.endswith(".TransactWriteItems") and error == "TransactionConflict":
        body = {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
            "[TransactionConflict]",
            "CancellationReasons": [
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            ],
        }
    else:
        prefix = "com.amazonaws.dynamodb.v20120810#" if target.startswith("DynamoDB") else ""
        body = {"__type": prefix + error, "message": f"injected {error}"}
    return _answer(start_response, "400 Bad Request", json.dumps(body).encode())


class TransactionTokens:
    """TransactWriteItems' ClientRequestToken, as DynamoDB keeps it: a token whose transaction
    succeeded is answered again, without carrying it out, for WINDOW seconds; the same token with
    another request is a mismatch. Used under the DynamoDB lock."""

    WINDOW = 600.0

    def __init__(self):
        self.done = {}  # token -> (digest of the request without its token, when it completed)

    @staticmethod
    def digest(request):
        rest = {k: v for k, v in request.items() if k != "ClientRequestToken"}
        return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()

    def forget_old(self, now):
        # Insertion order is completion order: the oldest are first.
        while self.done:
            token, (_, at) = next(iter(self.done.items()))
            if now - at < self.WINDOW:
                break
            del self.done[token]

    def seen(self, token, request, now):
        """None for a new token; otherwise whether the request is the one it carried out."""
        self.forget_old(now)
        if token not in self.done:
            return None
        return self.done[token][0] == self.digest(request)

    def record(self, token, request, now):
        self.done[token] = (self.digest(request), now)


class LocalAws:
    """The WSGI app: moto, with DynamoDB serialized, the read checks, faults and request counts
    (served at GET /_lambent/stats for make bench)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.counts = {}
        self.counts_lock = threading.Lock()
        self.busy = {}  # app id -> [requests, seconds], for the SDK clients that name one
        self.faults = Faults()
        self.tokens = None if os.environ.get("MOTO_PLAIN") else TransactionTokens()

    def control(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/_lambent/stats":
            with self.counts_lock:
                body = json.dumps(self.counts).encode()
            return _answer(start_response, "200 OK", body, "application/json")
        if path == "/_lambent/busy":
            with self.counts_lock:
                body = json.dumps({app: {"requests": n, "ms": seconds * 1000} for app, (n, seconds) in self.busy.items()})
            return _answer(start_response, "200 OK", body.encode(), "application/json")
        if path == "/_lambent/items":
            with self.lock:
                body = json.dumps(item_counts()).encode()
            return _answer(start_response, "200 OK", body, "application/json")
        if path == "/_lambent/ttl-sweep" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                table = json.loads(environ["wsgi.input"].read(length) or b"{}").get("table")
            except (ValueError, AttributeError) as err:
                return _answer(start_response, "400 Bad Request", str(err).encode(), "text/plain")
            with self.lock:
                body = json.dumps({"deleted": sweep_expired(time.time(), table)}).encode()
            return _answer(start_response, "200 OK", body, "application/json")
        if path == "/_lambent/ses/messages":
            with self.lock:
                body = json.dumps(sent_messages()).encode()
            return _answer(start_response, "200 OK", body, "application/json")
        if path == "/_lambent/memory":
            if environ.get("REQUEST_METHOD") == "POST":
                import tracemalloc

                tracemalloc.start(8)
                return _answer(start_response, "204 No Content", b"", "text/plain")
            return _answer(start_response, "200 OK", memory_report().encode(), "text/plain")
        if environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                self.faults.arm(json.loads(environ["wsgi.input"].read(length)))
            except (KeyError, ValueError, TypeError) as err:
                return _answer(start_response, "400 Bad Request", str(err).encode(), "text/plain")
            return _answer(start_response, "204 No Content", b"", "text/plain")
        return _answer(start_response, "200 OK", self.faults.listing(), "application/json")

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_lambent/"):
            return self.control(environ, start_response)
        app = _app_id(environ)
        if app is None:
            return self.handle(environ, start_response)
        started = time.perf_counter()
        try:
            return self.handle(environ, start_response)
        finally:
            self.count_busy(app, time.perf_counter() - started)

    def count_busy(self, app, seconds):
        """The requests of SDK clients that name an app id, and the time spent serving them (the
        wait for the lock included; an S3 object's body may still be on its way): make bench's cold
        starts tell the emulator's share of theirs apart with it."""
        with self.counts_lock:
            entry = self.busy.get(app)
            if entry is None:
                if len(self.busy) >= MAX_APPS:
                    return
                entry = self.busy[app] = [0, 0.0]
            entry[0] += 1
            entry[1] += seconds

    def handle(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target:
            return self.app(environ, start_response)
        with self.counts_lock:
            self.counts[target] = self.counts.get(target, 0) + 1
        # Read the body once so the checks can see it; moto reads it again from a fresh stream.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = _Replay(raw)
        text = raw.decode("utf-8", "replace")
        fault, matched = self.faults.take(target, text)
        try:
            return self.serve(environ, start_response, target, raw, fault)
        finally:
            if matched:
                self.faults.answered(matched)

    def serve(self, environ, start_response, target, raw, fault):
        """A request to the emulator, with the fault it gets (or None)."""
        if fault:
            if fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000)
            if fault["drop"] or fault["error"]:
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = {}
                return fault_response(fault, target, request, start_response)
        if not target.startswith("DynamoDB"):
            if fault and fault["answer_delay_ms"]:
                body = b"".join(self.app(environ, start_response))
                time.sleep(fault["answer_delay_ms"] / 1000)
                return [body]
            return self.app(environ, start_response)
        try:
            request = json.loads(raw or b"{}")
            violation = read_key_violation(target, request)
        except (ValueError, AttributeError, TypeError):
            request, violation = {}, None
        if violation:
            body = {"__type": "com.amazon.coral.validate#ValidationException", "message": violation}
            return _answer(start_response, "400 Bad Request", json.dumps(body).encode())
        token = None
        if self.tokens is not None and target.endswith(".TransactWriteItems") and isinstance(request, dict):
            token = request.get("ClientRequestToken")
        answered = []

        def capture(status, headers, exc_info=None):
            answered.append(status)
            return start_response(status, headers, exc_info)

        with self.lock:
            if token:
                same = self.tokens.seen(token, request, time.time())
                if same is True:
                    body = b"{}"
                    return _answer(start_response, "200 OK", body)
                if same is False:
                    body = {"__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                            "message": "The request uses the same client token as a previous, "
                                       "but non-identical request."}
                    return _answer(start_response, "400 Bad Request", json.dumps(body).encode())
            # Consume the whole response inside the lock: moto may build it lazily.
            body = b"".join(self.app(environ, capture))
            if token and answered and answered[0].startswith("200"):
                self.tokens.record(token, request, time.time())
        if fault and fault["answer_delay_ms"]:
            time.sleep(fault["answer_delay_ms"] / 1000)
        return [body]


def memory_report(top=30):
    """Where the emulator's memory is: its garbage collector's figures and, once a POST to
    /_lambent/memory has started tracing, the biggest allocation sites since."""
    import gc
    import tracemalloc

    lines = [f"gc counts {gc.get_count()} thresholds {gc.get_threshold()} frozen {gc.get_freeze_count()} "
             f"objects {len(gc.get_objects())}"]
    if tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("traceback")
        lines.append(f"traced {sum(s.size for s in stats) / 1e6:.1f} MB in {len(stats)} sites")
        for stat in stats[:top]:
            lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:9d} blocks")
            lines.extend(f"    {line}" for line in stat.traceback.format()[-6:])
    return "\n".join(lines) + "\n"


# The app ids whose busy time is kept (GET /_lambent/busy); a client chooses its own.
MAX_APPS = 64
_APP_ID = re.compile(r"(?:^|\s)app/([A-Za-z0-9!#$%&'*+.^_`|~-]{1,50})")


def _app_id(environ):
    """The app id an AWS SDK sends in its user agent (`app/NAME`, from AWS_SDK_UA_APP_ID), or None."""
    for header in ("HTTP_X_AMZ_USER_AGENT", "HTTP_USER_AGENT"):
        found = _APP_ID.search(environ.get(header, ""))
        if found:
            return found.group(1)
    return None


class _Replay:
    """A request body stream read from bytes already read."""

    def __init__(self, data):
        self.data = data
        self.offset = 0

    def read(self, size=-1):
        end = len(self.data) if size is None or size < 0 else min(len(self.data), self.offset + size)
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def readline(self, size=-1):
        end = self.data.find(b"\n", self.offset)
        end = len(self.data) if end < 0 else end + 1
        if size is not None and size >= 0:
            end = min(end, self.offset + size)
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves each host. moto finds it anew for every
    request, under the lock that every request takes: it lists moto's package directory, `stat`s
    each of its 150-odd entries (the host might name one) and then tries each service's URL
    patterns in turn, about 1 ms a request on a 2-core EPYC. The answer depends on the host alone:
    the service and region of the request's signature."""

    # A client chooses the region it signs with; the hosts kept are bounded all the same.
    MAX_HOSTS = 1024

    def __init__(self, create_app):
        super().__init__(create_app)
        self.backends = {}

    def get_backend_for_host(self, host):
        try:
            return self.backends[host]
        except KeyError:
            backend = super().get_backend_for_host(host)
            if len(self.backends) < self.MAX_HOSTS:
                self.backends[host] = backend
            return backend


def raise_open_files_limit():
    """The soft limit on open descriptors (often 1024) up to the hard one, as servers do."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass


def exit_with_parent():
    """Stop when the process that started us is gone (tests keep the emulator in a static)."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--exit-with-parent", action="store_true")
    args = parser.parse_args()
    if args.exit_with_parent:
        threading.Thread(target=exit_with_parent, daemon=True).start()

    # MOTO_PLAIN (the bench's peer) keeps moto's own dispatcher too.
    dispatcher = DomainDispatcherApplication if os.environ.get("MOTO_PLAIN") else Dispatcher
    app = LocalAws(dispatcher(create_backend_app))
    if not os.environ.get("MOTO_PLAIN"):
        period = float(os.environ.get("LAMBENT_TTL_SWEEP_SECONDS", "60"))
        threading.Thread(target=ttl_sweeper, args=(app.lock, period), daemon=True).start()
    # waitress, not werkzeug's development server: that one closes the connection after every
    # answer, so each AWS call paid a TCP connect and a new thread, and under load its accept
    # queue (128) overflowed: connects dropped, retried by TCP after 1 s, past the SDK's connect
    # timeout. waitress keeps connections alive, runs requests on a fixed pool of threads (a long
    # poll holds one for up to 20 s: 256 leave room for every stack's pollers) and queues the rest.
    # MOTO_PLAIN (the bench's peer) keeps moto's own server.
    if os.environ.get("MOTO_PLAIN"):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):
                pass

        server = make_server(args.host, args.port, app, threaded=True, request_handler=QuietHandler)
        port, run = server.socket.getsockname()[1], server.serve_forever
    else:
        logging.getLogger("waitress").setLevel(logging.ERROR)
        # poll(), not select(): under overload the SDK's timed-out attempts leave connections
        # open here until their turn comes, and select() cannot watch a descriptor past 1023:
        # waitress's loop died of it ("filedescriptor out of range in select()"), and with it the
        # emulator, mid-way through a load run of 200 clients on 2 cores. The descriptors it may
        # hold are raised to the hard limit for the same reason.
        raise_open_files_limit()
        server = create_server(app, host=args.host, port=args.port, threads=256, connection_limit=4000,
                               backlog=1024, channel_timeout=300, ident="moto", asyncore_use_poll=True)
        port, run = server.effective_port, server.run
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"moto listening on http://{args.host}:{port}", flush=True)
    run()


if __name__ == "__main__":
    main()
