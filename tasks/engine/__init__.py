"""The sync engine: plain Python under the Prefect flows, testable without a Prefect server.

    plan (tasks/engine/plan.py)       what this run looks at: new documents, earlier failures, named ones
    prepare (tasks/engine/prepare.py) read, check and map one document into a package
    send (tasks/engine/send.py)       deliver packages: in chunks, in parallel, pipelined, with backoff
    record (tasks/engine/record.py)   the confirmed results into the ledger; later confirmations
    run (tasks/engine/run.py)         one run of one integration, start to end

Every status a document takes is decided by one state machine (tasks/engine/states.py); the
ledger stores what it decides. This package's __init__ imports nothing: the ledger imports the
state machine, and the engine imports the ledger.
"""
