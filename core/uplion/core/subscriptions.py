"""Making durable subscriptions exist before anything is published, so nothing is lost to a
consumer that has not started yet (Pulsar keeps messages only for existing subscriptions)."""

from __future__ import annotations

import pulsar
import pulsar.asyncio as pa

BILLING_SUBSCRIPTION = "billing"
# billing's Shared subscription on the workers' recovery records (Shared: their delayed delivery)
RECOVERY_SUBSCRIPTION = "billing-recovery"


async def ensure_subscription(
    client: pa.Client, topic: str, subscription: str, consumer_type: pulsar.ConsumerType
) -> None:
    consumer = await client.subscribe(
        topic,
        subscription,
        consumer_type=consumer_type,
        receiver_queue_size=0,  # takes nothing: it only makes the subscription exist
        initial_position=pulsar.InitialPosition.Earliest,
    )
    await consumer.close()
