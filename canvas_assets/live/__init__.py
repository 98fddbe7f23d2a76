"""Canvas Live Events into the warehouse: receive (SQS or HTTPS), store in the inbox, apply to Layer 1.

    events.py   the live-event format: parsing, local ids, the event key
    mapping.py  which Layer-1 columns each event sets
    inbox.py    the durable inbox (`canvas_live_events`)
    apply.py    applying pending events: idempotent, order-proof, one transaction per batch
    reconcile.py  after a REST sync: where the live path and REST disagree
    consumer.py the SQS consumer (`canvas-assets live`)
    https.py    the HTTPS receiver with JWT signature checks (`canvas-assets live --https`)
    sqs_server.py  an SQS-compatible server on loopback (moto) for tests, the demo and the benchmark

Nothing here imports Dagster: the command line reports to Dagster through a callback.
"""
