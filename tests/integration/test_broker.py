"""The two broker transports the workbench supports carry a JSON message: SQLite (embedded) and Redis."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue

from conftest import REDIS_URL


def _round_trip(url: str) -> dict:
    name = f"wbtest-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="direct")
    queue = Queue(name, exchange, routing_key=name)
    with Connection(url, connect_timeout=5) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish({"job_id": 7, "kind": "train"}, exchange=exchange, routing_key=name, declare=[queue])
        with conn.SimpleQueue(queue) as q:
            msg = q.get(timeout=10)
            msg.ack()
            assert msg.content_type == "application/json"
            return msg.payload


@pytest.mark.redis
def test_redis_broker_round_trip() -> None:
    assert _round_trip(REDIS_URL) == {"job_id": 7, "kind": "train"}


def test_embedded_sqlite_broker_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _round_trip(f"sqla+sqlite:///{tmp_path / 'broker.db'}") == {"job_id": 7, "kind": "train"}
