"""``zapflow demo``: the example zaps run against the bundled CINNOX sandbox, the Slack sandbox
and a folder of sheets. A package of its own, plugged into the command line by an entry point
(``zapflow.commands``), so the engine never names an app: it is the one place that knows which
sandboxes the example zaps need."""
