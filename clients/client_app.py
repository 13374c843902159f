"""The hospital: a Flower ClientApp that trains DP-LoRA on its own reports and sends only adapters.

train: check the request against the site's policy (node config) → this site's model and data →
validate the incoming adapter → charge the lifetime ledger → train under DP → reply with the adapter
arrays and the ledger's numbers. evaluate: plain metrics of the final adapter, once per run, only
where the site's policy allows it. Anything else leaves as a reason code (common.records.Reason).
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.handlers import Reply, answer, evaluate_request, train_request
from clients.secure import secure_aggregation_mod
from common import records as R
from common.runtime import configure_threads

app = ClientApp()


def _message(reply: Reply, msg: Message) -> Message:
    content = {R.METRICS: MetricRecord(reply.metrics)}
    if reply.arrays is not None:
        content[R.ARRAYS] = ArrayRecord({k: Array(v) for k, v in reply.arrays.items()})
    return Message(RecordDict(content), reply_to=msg)


@app.train(mods=[secure_aggregation_mod])  # SecAgg+ messages (distributed DP) go through Flower's secaggplus_mod
def train(msg: Message, context: Context) -> Message:
    configure_threads()
    return _message(answer(context.node_config, context.run_config, context.run_id, msg.content, train_request), msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    configure_threads()
    return _message(answer(context.node_config, context.run_config, context.run_id, msg.content, evaluate_request), msg)
