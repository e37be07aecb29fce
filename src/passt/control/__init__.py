r"""The control socket (-c/--conf-path) and its client, pesto.

A running passt or pasta answers questions and takes forwarding changes on
a UNIX stream socket, one JSON object per line each way (docs/control.md):

    pesto / any client --request line--> server.ControlServer (loop-driven, nonblocking)
                                           -> protocol.parse_request (sans-IO)
                                           -> commands.Commands (flows, stats, forward, config)
                                                -> flows.* adapters (one per protocol)
                                                -> forward.* (the CLI's spec grammar, Forwarder.apply)
                       <--answer line---   protocol.encode_answer

Nothing here runs unless -c is given, and nothing here is on the data path:
the server only reads what the flow handlers already keep.
"""
