"""Moving bytes between peers: the transport port (:mod:`p2pchat.transport.port`) and its
aioquic adapter (:mod:`p2pchat.transport.quic`)."""
