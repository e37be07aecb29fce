"""Built-in L2 services, sans-IO: a frame in, reply frames out, no sockets."""
