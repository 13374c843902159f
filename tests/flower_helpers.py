"""Real Flower messages and contexts for tests that call the apps directly (no SuperLink)."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from common.config import RunConfig


def identity() -> None:
    """Flower refuses to build a Message outside a run unless a task identity is set."""
    from flwr.supercore.task_identity import TaskIdentity  # internal API, see Flower's own tests

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def train_message(arrays: dict[str, np.ndarray], server_round: int = 1, node: int = 7) -> Message:
    identity()
    content = RecordDict({"arrays": array_record(arrays), "config": ConfigRecord({"server-round": server_round})})
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


def evaluate_message(arrays: dict[str, np.ndarray], server_round: int = 1, node: int = 7) -> Message:
    identity()
    content = RecordDict({"arrays": array_record(arrays), "config": ConfigRecord({"server-round": server_round})})
    return Message(content, dst_node_id=node, message_type=MessageType.EVALUATE)


def context(
    cfg: RunConfig, *, partition: int = 0, partitions: int = 3, state: RecordDict | None = None, **node
) -> Context:
    node_config = {"partition-id": partition, "num-partitions": partitions, **node}
    return Context(
        run_id=1,
        node_id=7 + partition,
        node_config=node_config,
        state=state if state is not None else RecordDict(),
        run_config=cfg.to_flower(),
    )


def reply(instruction: Message, arrays: dict[str, np.ndarray] | None, metrics: dict) -> Message:
    content = {"metrics": MetricRecord(metrics)}
    if arrays is not None:
        content["arrays"] = array_record(arrays)
    return Message(RecordDict(content), reply_to=instruction)
